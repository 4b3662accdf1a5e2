//! Variant routing: a request names a variant exactly, or names only its task plus trade-off attributes
//! (width, resolution, precision) and the router picks among the task's variants. Unset attributes match
//! anything; ties go to the task's default, then to the cheapest in multiply-adds.
use std::{collections::HashMap, sync::Arc};

use crate::{
    error::{Error, Result},
    repository::{Task, VariantConfig},
};

/// What the client asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    pub model: Option<String>,
    pub width: Option<f32>,
    pub resolution: Option<u32>,
    pub precision: Option<String>,
}

impl Selector {
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
    }
}

fn cfg<M: AsRef<VariantConfig>>(model: &Arc<M>) -> &VariantConfig {
    (**model).as_ref()
}

/// The loaded variants (anything that exposes its config) and each task's default.
pub struct Router<M> {
    models: Vec<Arc<M>>,
    defaults: HashMap<Task, String>,
}

impl<M: AsRef<VariantConfig>> Router<M> {
    /// `defaults` may name variants that are not loaded (a `--models` subset): such a task falls back to its
    /// cheapest loaded variant.
    pub fn new(models: Vec<Arc<M>>, mut defaults: HashMap<Task, String>) -> Router<M> {
        defaults.retain(|task, name| {
            models
                .iter()
                .any(|m| cfg(m).name == *name && cfg(m).task == *task)
        });
        for task in [Task::Classification, Task::Detection, Task::Segmentation] {
            if defaults.contains_key(&task) {
                continue;
            }
            if let Some(cheapest) = models
                .iter()
                .map(cfg)
                .filter(|c| c.task == task)
                .min_by_key(|c| c.attributes.multiply_adds)
            {
                defaults.insert(task, cheapest.name.clone());
            }
        }
        Router { models, defaults }
    }

    pub fn models(&self) -> &[Arc<M>] {
        &self.models
    }

    pub fn is_default(&self, config: &VariantConfig) -> bool {
        self.defaults.get(&config.task) == Some(&config.name)
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
            .filter(|m| cfg(m).task == task && selector.matches(cfg(m)))
            .min_by_key(|m| {
                (
                    Some(&cfg(m).name) != default,
                    cfg(m).attributes.multiply_adds,
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
        }))
    }

    fn router() -> Router<M> {
        let models = vec![
            variant("c_224_f", Task::Classification, 1.0, 224, "float32", 300),
            variant("c_224_q", Task::Classification, 1.0, 224, "int8", 300),
            variant("c_96_05", Task::Classification, 0.5, 96, "float32", 20),
            variant("s_513", Task::Segmentation, 1.0, 513, "int8", 2000),
        ];
        Router::new(
            models,
            HashMap::from([(Task::Classification, "c_224_f".to_string())]),
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
    fn missing_default_falls_back_to_cheapest() {
        let r = router();
        let s = r.select(Task::Segmentation, &Selector::default()).unwrap();
        assert_eq!(s.0.name, "s_513");
        assert!(r.is_default(&s.0));
    }
}
