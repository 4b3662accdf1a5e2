//! Variant routing: a request names a variant exactly, or names only its task plus trade-off attributes
//! (width, resolution, precision, dataset) and the router picks among the task's variants. Unset attributes
//! match anything, except the dataset: without one, only the variants of the task default's dataset are
//! candidates, so that asking for `precision=int8` never gets an ImageNet client a bird classifier. Ties go
//! to the task's default, then to the cheapest in multiply-adds, then to the higher place in the `auto`
//! ladder (the better quality figure). With `model=auto` the router gives the task's ladder instead (best
//! quality first; of a long one, the steps `auto::ladder_steps` keeps), and the service picks from it by
//! latency (`auto`).
use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::{
    auto,
    error::{Error, Result},
    repository::{Task, VariantConfig},
};

/// The model name that asks the server to pick the variant by latency budget.
pub const AUTO: &str = "auto";

/// What the client asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    pub model: Option<String>,
    pub width: Option<f32>,
    pub resolution: Option<u32>,
    pub precision: Option<String>,
    /// The label set (`dataset` in config.json); unset means the task default's, when no model is named.
    pub dataset: Option<String>,
    /// With `model=auto`: the end-to-end time the answer should take (else the request's deadline).
    pub latency_budget: Option<Duration>,
}

impl Selector {
    pub fn is_auto(&self) -> bool {
        self.model.as_deref() == Some(AUTO)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(w) = self.width {
            parts.push(format!("width={w}"));
        }
        if let Some(r) = self.resolution {
            parts.push(format!("resolution={r}"));
        }
        if let Some(p) = &self.precision {
            parts.push(format!("precision={p}"));
        }
        if let Some(d) = &self.dataset {
            parts.push(format!("dataset={d}"));
        }
        parts.join(", ")
    }

    fn matches(&self, c: &VariantConfig) -> bool {
        self.width
            .is_none_or(|w| (w - c.attributes.width).abs() < 1e-3)
            && self.resolution.is_none_or(|r| r == c.attributes.resolution)
            && self
                .precision
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&c.attributes.precision))
            && self
                .dataset
                .as_deref()
                .is_none_or(|d| d.eq_ignore_ascii_case(&c.attributes.dataset))
    }
}

fn cfg<M: AsRef<VariantConfig>>(model: &Arc<M>) -> &VariantConfig {
    (**model).as_ref()
}

/// The loaded variants (anything that exposes its config), each task's default and `auto` ladder.
pub struct Router<M> {
    models: Vec<Arc<M>>,
    defaults: HashMap<Task, String>,
    ladders: HashMap<Task, Vec<String>>,
}

impl<M: AsRef<VariantConfig>> Router<M> {
    /// `defaults` may name variants that are not loaded (a `--models` subset): such a task falls back to its
    /// cheapest loaded variant of the `auto` ladder, which holds only the default's dataset, else to its
    /// cheapest loaded variant (so a subset without the ImageNet default still defaults to ImageNet when
    /// it can, not to a cheaper bird classifier).
    /// `ladders` may name variants that are not loaded: `auto` skips them.
    pub fn new(
        models: Vec<Arc<M>>,
        mut defaults: HashMap<Task, String>,
        mut ladders: HashMap<Task, Vec<String>>,
    ) -> Router<M> {
        for ladder in ladders.values_mut() {
            ladder.retain(|name| models.iter().any(|m| cfg(m).name == *name));
        }
        defaults.retain(|task, name| {
            models
                .iter()
                .any(|m| cfg(m).name == *name && cfg(m).task == *task)
        });
        for task in [Task::Classification, Task::Detection, Task::Segmentation] {
            if defaults.contains_key(&task) {
                continue;
            }
            let in_ladder = |c: &VariantConfig| {
                ladders
                    .get(&task)
                    .is_some_and(|ladder| ladder.contains(&c.name))
            };
            if let Some(cheapest) = models
                .iter()
                .map(cfg)
                .filter(|c| c.task == task)
                .min_by_key(|c| (!in_ladder(c), c.attributes.multiply_adds))
            {
                defaults.insert(task, cheapest.name.clone());
            }
        }
        Router {
            models,
            defaults,
            ladders,
        }
    }

    pub fn models(&self) -> &[Arc<M>] {
        &self.models
    }

    pub fn is_default(&self, config: &VariantConfig) -> bool {
        self.defaults.get(&config.task) == Some(&config.name)
    }

    /// The variant's place in its task's `auto` ladder (0 is tried first), if `auto` may pick it.
    pub fn auto_rank(&self, config: &VariantConfig) -> Option<usize> {
        self.ladders
            .get(&config.task)?
            .iter()
            .position(|name| *name == config.name)
    }

    /// The dataset a request for `task` that names none stays within: the task default's.
    fn default_dataset(&self, task: Task) -> Option<&str> {
        let default = self.defaults.get(&task)?;
        let config = self.models.iter().map(cfg).find(|c| c.name == *default)?;
        Some(&config.attributes.dataset)
    }

    /// Whether `config` is one of `task`'s candidates for routing by attributes.
    fn candidate(&self, task: Task, selector: &Selector, config: &VariantConfig) -> bool {
        config.task == task
            && selector.matches(config)
            && (selector.dataset.is_some()
                || self
                    .default_dataset(task)
                    .is_none_or(|d| d == config.attributes.dataset))
    }

    /// For `model=auto`: the ladder's variants that match the selector's attributes, best first, at most
    /// [`auto::MAX_STEPS`] of them ([`auto::ladder_steps`]).
    pub fn auto_candidates(&self, task: Task, selector: &Selector) -> Result<Vec<Arc<M>>> {
        let matching: Vec<Arc<M>> = self
            .ladders
            .get(&task)
            .into_iter()
            .flatten()
            .filter_map(|name| self.models.iter().find(|m| cfg(m).name == *name))
            .filter(|m| self.candidate(task, selector, cfg(m)))
            .cloned()
            .collect();
        let candidates = auto::taken(matching, |m| cfg(m).attributes.multiply_adds);
        if candidates.is_empty() {
            return Err(Error::NoMatchingVariant {
                task: task.as_str(),
                wanted: format!(
                    "model=auto{}{} (auto picks among the variants with a quality figure)",
                    if selector.describe().is_empty() {
                        ""
                    } else {
                        " with "
                    },
                    selector.describe()
                ),
            });
        }
        Ok(candidates)
    }

    pub fn select(&self, task: Task, selector: &Selector) -> Result<Arc<M>> {
        if let Some(name) = selector.model.as_deref().filter(|n| !n.is_empty()) {
            let model = self
                .models
                .iter()
                .find(|m| cfg(m).name == name)
                .ok_or_else(|| Error::UnknownModel(name.to_string()))?;
            let config = cfg(model);
            if config.task != task {
                return Err(Error::WrongTask {
                    model: name.into(),
                    actual: config.task.as_str(),
                    expected: task.as_str(),
                });
            }
            if !selector.matches(config) {
                return Err(Error::NoMatchingVariant {
                    task: task.as_str(),
                    wanted: format!("{name} with {}", selector.describe()),
                });
            }
            return Ok(model.clone());
        }
        let default = self.defaults.get(&task);
        self.models
            .iter()
            .filter(|m| self.candidate(task, selector, cfg(m)))
            .min_by_key(|m| {
                (
                    Some(&cfg(m).name) != default,
                    cfg(m).attributes.multiply_adds,
                    self.auto_rank(cfg(m)).unwrap_or(usize::MAX),
                )
            })
            .cloned()
            .ok_or_else(|| Error::NoMatchingVariant {
                task: task.as_str(),
                wanted: if selector.describe().is_empty() {
                    "any attributes".into()
                } else {
                    selector.describe()
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::{Attributes, InputDtype, InputSpec, Layout, OutputSpec, ResizeMode};

    struct M(VariantConfig);
    impl AsRef<VariantConfig> for M {
        fn as_ref(&self) -> &VariantConfig {
            &self.0
        }
    }

    fn variant(
        name: &str,
        task: Task,
        width: f32,
        resolution: u32,
        precision: &str,
        macs: u64,
    ) -> Arc<M> {
        in_dataset(name, task, width, resolution, precision, macs, "imagenet")
    }

    fn in_dataset(
        name: &str,
        task: Task,
        width: f32,
        resolution: u32,
        precision: &str,
        macs: u64,
        dataset: &str,
    ) -> Arc<M> {
        Arc::new(M(VariantConfig {
            name: name.into(),
            task,
            description: String::new(),
            model_file: "model.onnx".into(),
            labels_file: "labels.txt".into(),
            attributes: Attributes {
                width,
                resolution,
                precision: precision.into(),
                dataset: dataset.into(),
                parameters: 0,
                multiply_adds: macs,
            },
            input: InputSpec {
                name: "x".into(),
                layout: Layout::Nhwc,
                dtype: InputDtype::Uint8,
                height: resolution,
                width: resolution,
                mean: [0.0; 3],
                std: [1.0; 3],
                resize: ResizeMode::Stretch,
            },
            output: OutputSpec::ClassMap { map: "m".into() },
            serving: Default::default(),
            quality: None,
        }))
    }

    fn router() -> Router<M> {
        let models = vec![
            variant("c_224_f", Task::Classification, 1.0, 224, "float32", 300),
            // The same cost as c_224_q and listed before it, but after it in the ladder.
            variant("c_224_q_pc", Task::Classification, 1.0, 224, "int8", 300),
            variant("c_224_q", Task::Classification, 1.0, 224, "int8", 300),
            variant("c_96_05", Task::Classification, 0.5, 96, "float32", 20),
            variant("s_513", Task::Segmentation, 1.0, 513, "int8", 2000),
            // Cheaper than everything above for int8 224: routing by attributes must still not reach it
            // without dataset=birds.
            in_dataset("birds", Task::Classification, 1.0, 224, "int8", 10, "birds"),
        ];
        Router::new(
            models,
            HashMap::from([(Task::Classification, "c_224_f".to_string())]),
            HashMap::from([(
                Task::Classification,
                vec![
                    "c_224_f".to_string(),
                    "c_unloaded".to_string(),
                    "c_224_q".to_string(),
                    "c_224_q_pc".to_string(),
                    "c_96_05".to_string(),
                ],
            )]),
        )
    }

    fn select(selector: Selector) -> Result<String> {
        router()
            .select(Task::Classification, &selector)
            .map(|m| m.0.name.clone())
    }

    #[test]
    fn default_when_nothing_is_asked() {
        assert_eq!(select(Selector::default()).unwrap(), "c_224_f");
    }

    #[test]
    fn by_name() {
        assert_eq!(
            select(Selector {
                model: Some("c_224_q".into()),
                ..Default::default()
            })
            .unwrap(),
            "c_224_q"
        );
    }

    #[test]
    fn attributes_pick_the_matching_variant() {
        let s = Selector {
            precision: Some("INT8".into()),
            ..Default::default()
        };
        assert_eq!(select(s).unwrap(), "c_224_q");
        let s = Selector {
            width: Some(0.5),
            ..Default::default()
        };
        assert_eq!(select(s).unwrap(), "c_96_05");
    }

    #[test]
    fn ties_without_default_go_to_the_cheapest() {
        let s = Selector {
            precision: Some("float32".into()),
            ..Default::default()
        };
        assert_eq!(select(s).unwrap(), "c_224_f"); // default wins over cheaper c_96_05
        let s = Selector {
            resolution: Some(96),
            ..Default::default()
        };
        assert_eq!(select(s).unwrap(), "c_96_05");
    }

    #[test]
    fn attributes_stay_within_the_default_dataset_unless_one_is_named() {
        let int8 = Selector {
            precision: Some("int8".into()),
            ..Default::default()
        };
        assert_eq!(select(int8.clone()).unwrap(), "c_224_q");
        let birds = Selector {
            dataset: Some("birds".into()),
            ..Default::default()
        };
        assert_eq!(select(birds.clone()).unwrap(), "birds");
        let birds_int8 = Selector {
            dataset: Some("BIRDS".into()),
            ..int8
        };
        assert_eq!(select(birds_int8).unwrap(), "birds");
        let birds_float = Selector {
            precision: Some("float32".into()),
            ..birds
        };
        assert!(matches!(
            select(birds_float),
            Err(Error::NoMatchingVariant { .. })
        ));
        let named = Selector {
            model: Some("birds".into()),
            ..Default::default()
        };
        assert_eq!(select(named).unwrap(), "birds", "a name needs no dataset");
        let named_elsewhere = Selector {
            model: Some("birds".into()),
            dataset: Some("imagenet".into()),
            ..Default::default()
        };
        assert!(select(named_elsewhere).is_err());
        let auto_birds = Selector {
            model: Some(AUTO.into()),
            dataset: Some("birds".into()),
            ..Default::default()
        };
        assert!(
            router()
                .auto_candidates(Task::Classification, &auto_birds)
                .is_err(),
            "auto picks only from the ladder, which holds the default's dataset"
        );
    }

    #[test]
    fn equal_cost_goes_to_the_higher_place_in_the_ladder() {
        let int8_224 = Selector {
            precision: Some("int8".into()),
            resolution: Some(224),
            ..Default::default()
        };
        assert_eq!(select(int8_224).unwrap(), "c_224_q");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            select(Selector {
                model: Some("nope".into()),
                ..Default::default()
            }),
            Err(Error::UnknownModel(_))
        ));
        assert!(matches!(
            select(Selector {
                model: Some("s_513".into()),
                ..Default::default()
            }),
            Err(Error::WrongTask { .. })
        ));
        assert!(matches!(
            select(Selector {
                resolution: Some(1),
                ..Default::default()
            }),
            Err(Error::NoMatchingVariant { .. })
        ));
    }

    #[test]
    fn missing_default_falls_back_to_the_ladder_first() {
        let models = vec![
            in_dataset("birds", Task::Classification, 1.0, 224, "int8", 10, "birds"),
            variant("c_224_q", Task::Classification, 1.0, 224, "int8", 300),
        ];
        let r = Router::new(
            models,
            HashMap::from([(Task::Classification, "c_224_f".to_string())]),
            HashMap::from([(
                Task::Classification,
                vec!["c_224_f".to_string(), "c_224_q".to_string()],
            )]),
        );
        let s = r
            .select(Task::Classification, &Selector::default())
            .unwrap();
        assert_eq!(s.0.name, "c_224_q", "not the cheaper bird classifier");
    }

    #[test]
    fn missing_default_falls_back_to_cheapest() {
        let r = router();
        let s = r.select(Task::Segmentation, &Selector::default()).unwrap();
        assert_eq!(s.0.name, "s_513");
        assert!(r.is_default(&s.0));
    }

    #[test]
    fn auto_ladder_keeps_order_skips_unloaded_and_filters_by_attributes() {
        let r = router();
        let names = |s: &Selector| -> Vec<String> {
            r.auto_candidates(Task::Classification, s)
                .unwrap()
                .iter()
                .map(|m| m.0.name.clone())
                .collect()
        };
        let auto = Selector {
            model: Some(AUTO.into()),
            ..Default::default()
        };
        assert_eq!(
            names(&auto),
            ["c_224_f", "c_224_q", "c_224_q_pc", "c_96_05"]
        );
        let float_only = Selector {
            precision: Some("float32".into()),
            ..auto.clone()
        };
        assert_eq!(names(&float_only), ["c_224_f", "c_96_05"]);
        assert_eq!(
            r.auto_rank(&r.models()[3].0),
            Some(3),
            "c_96_05 after the loaded three"
        );
        assert_eq!(
            r.auto_rank(&r.models()[4].0),
            None,
            "segmenter has no ladder"
        );
        assert!(matches!(
            r.auto_candidates(Task::Segmentation, &auto),
            Err(Error::NoMatchingVariant { .. })
        ));
        let none = Selector {
            resolution: Some(1),
            ..auto
        };
        assert!(r.auto_candidates(Task::Classification, &none).is_err());
    }
}
