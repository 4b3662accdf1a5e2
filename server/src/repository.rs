//! The model repository on disk (`models/REPOSITORY.md`): `index.json` lists the variants and the per-task
//! defaults; each variant folder holds `config.json` (how to feed and decode the graph), `model.onnx` and
//! `labels.txt`. This module only parses and validates; loading sessions is the engine's job.
use std::{collections::HashMap, fmt, path::Path, path::PathBuf};

use serde::Deserialize;

/// The three tasks the service knows. The string forms are the ones used in `config.json` and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classification,
    Detection,
    Segmentation,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Detection => "detection",
            Task::Segmentation => "segmentation",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Deserialize)]
pub struct Index {
    pub format: u32,
    pub variants: Vec<String>,
    #[serde(default)]
    pub defaults: HashMap<Task, String>,
    /// Per task, the variants `model=auto` may pick, best first (`make models` ranks them by quality).
    #[serde(default)]
    pub auto: HashMap<Task, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VariantConfig {
    pub name: String,
    pub task: Task,
    #[serde(default)]
    pub description: String,
    pub model_file: String,
    pub labels_file: String,
    pub attributes: Attributes,
    pub input: InputSpec,
    pub output: OutputSpec,
    #[serde(default)]
    pub serving: ServingHints,
    #[serde(default)]
    pub quality: Option<Quality>,
}

/// How good the variant's answers are, and where the figure comes from: the accuracy published for the
/// checkpoint, or the agreement with the task's default that `make models` measured.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Quality {
    pub metric: String,
    pub value: f64,
    pub source: String,
}

/// How the model prefers to be served (`serving` in config.json), chosen per variant from `make bench` runs
/// on the manifest's side. Hints only: a global flag or a `--model-override` wins (`Config::knobs_for`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingHints {
    pub sessions: Option<SessionLayout>,
    pub max_batch_size: Option<usize>,
}

/// How a model's ONNX Runtime sessions share the CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionLayout {
    /// One session whose intra-op threads use every CPU: one copy of the activations, which matters for
    /// large inputs such as the 513 segmenter, where it served as much as `PerCpu`.
    Shared,
    /// One single-threaded session per CPU, side by side, plus a solo session on every CPU for lone
    /// requests: no operator waits for the slower half of an intra-op split, which served 14-60% more
    /// images/s for the classifiers and the detector (docs/performance.md).
    PerCpu,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attributes {
    pub width: f32,
    pub resolution: u32,
    pub precision: String,
    /// The label set the answers are in (`imagenet`, `inat_birds`, `coco`, `pascal_voc`, ...): routing by
    /// attributes never leaves the task default's dataset unless the request names another.
    #[serde(default)]
    pub dataset: String,
    #[serde(default)]
    pub parameters: u64,
    #[serde(default)]
    pub multiply_adds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Layout {
    #[serde(rename = "NHWC")]
    Nhwc,
    #[serde(rename = "NCHW")]
    Nchw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputDtype {
    Uint8,
    Float32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    Stretch,
    CenterCrop,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    pub dtype: InputDtype,
    pub height: u32,
    pub width: u32,
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    #[serde(default = "default_std")]
    pub std: [f32; 3],
    pub resize: ResizeMode,
}

impl InputSpec {
    /// Values in one image's batch row: height x width x 3 channels.
    pub fn elements(&self) -> usize {
        self.height as usize * self.width as usize * 3
    }

    /// One image's shape in the tensor's layout, after the batch dimension.
    pub fn row_shape(&self) -> [usize; 3] {
        let (h, w) = (self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nhwc => [h, w, 3],
            Layout::Nchw => [3, h, w],
        }
    }
}

fn default_mean() -> [f32; 3] {
    [0.0; 3]
}
fn default_std() -> [f32; 3] {
    [1.0; 3]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    None,
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxCoding {
    CornerOffset,
    CenterSize,
}

/// How to decode the graph outputs; one variant per `output.kind` in REPOSITORY.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputSpec {
    Classification {
        scores: String,
        activation: Activation,
        background_index: Option<usize>,
    },
    SsdAnchors {
        scores: String,
        score_activation: Activation,
        boxes: String,
        anchors: String,
        box_coding: BoxCoding,
        #[serde(default = "default_box_scales")]
        box_scales: [f32; 4],
        background_index: Option<usize>,
    },
    SsdPostprocessed {
        boxes: String,
        classes: String,
        scores: String,
        count: Option<String>,
    },
    ClassMap {
        map: String,
    },
    SegmentationLogits {
        logits: String,
        layout: Layout,
    },
}

fn default_box_scales() -> [f32; 4] {
    [10.0, 10.0, 5.0, 5.0]
}

impl OutputSpec {
    /// The task this decoding produces, to check it against the config's `task`.
    pub fn task(&self) -> Task {
        match self {
            OutputSpec::Classification { .. } => Task::Classification,
            OutputSpec::SsdAnchors { .. } | OutputSpec::SsdPostprocessed { .. } => Task::Detection,
            OutputSpec::ClassMap { .. } | OutputSpec::SegmentationLogits { .. } => {
                Task::Segmentation
            }
        }
    }

    /// Graph output names to fetch, in a fixed order the postprocessor relies on.
    pub fn output_names(&self) -> Vec<&str> {
        match self {
            OutputSpec::Classification { scores, .. } => vec![scores],
            OutputSpec::SsdAnchors {
                scores,
                boxes,
                anchors,
                ..
            } => vec![scores, boxes, anchors],
            OutputSpec::SsdPostprocessed {
                boxes,
                classes,
                scores,
                count,
            } => {
                let mut v = vec![boxes.as_str(), classes, scores];
                if let Some(c) = count {
                    v.push(c);
                }
                v
            }
            OutputSpec::ClassMap { map } => vec![map],
            OutputSpec::SegmentationLogits { logits, .. } => vec![logits],
        }
    }
}

/// One variant as found on disk, validated, with its labels read.
#[derive(Debug, Clone)]
pub struct Variant {
    pub config: VariantConfig,
    pub labels: Vec<String>,
    pub model_path: PathBuf,
    /// The model's own outputs as a request's rows have them (name with `raw_`, datatype, shape without the
    /// batch dimension), learned from the warm-up's first run: for the Open Inference Protocol's metadata.
    pub raw_outputs: std::sync::OnceLock<Vec<(String, &'static str, Vec<usize>)>>,
}

/// The parsed repository: variants in index order plus per-task defaults and `auto` ladders.
#[derive(Debug)]
pub struct Repository {
    pub variants: Vec<Variant>,
    pub defaults: HashMap<Task, String>,
    pub auto: HashMap<Task, Vec<String>>,
}

impl Repository {
    /// Reads `index.json` and every listed variant. `only`, when non-empty, restricts loading to those names
    /// (tests and small deployments); a name that the index does not list is an error, not a silent skip.
    pub fn load(root: &Path, only: &[String]) -> anyhow::Result<Repository> {
        use anyhow::Context;
        let index_path = root.join("index.json");
        let index: Index =
            serde_json::from_slice(&std::fs::read(&index_path).with_context(|| {
                format!("reading {} (has `make models` run?)", index_path.display())
            })?)
            .with_context(|| format!("parsing {}", index_path.display()))?;
        anyhow::ensure!(
            index.format == 1,
            "unsupported repository format {}",
            index.format
        );
        // `MODELS=` (set but empty) and stray commas give empty names: they select nothing.
        let only: Vec<&String> = only.iter().filter(|n| !n.trim().is_empty()).collect();
        for name in &only {
            anyhow::ensure!(
                index.variants.contains(*name),
                "variant {name} is not in {}",
                index_path.display()
            );
        }
        let mut variants = Vec::new();
        for name in &index.variants {
            if !only.is_empty() && !only.contains(&name) {
                continue;
            }
            variants.push(
                load_variant(&root.join(name))
                    .with_context(|| format!("loading variant {name}"))?,
            );
        }
        anyhow::ensure!(
            !variants.is_empty(),
            "no variants to serve in {}",
            root.display()
        );
        Ok(Repository {
            variants,
            defaults: index.defaults,
            auto: index.auto,
        })
    }
}

fn load_variant(dir: &Path) -> anyhow::Result<Variant> {
    let config: VariantConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    anyhow::ensure!(
        config.output.task() == config.task,
        "output kind decodes {} but task is {}",
        config.output.task(),
        config.task
    );
    let labels = std::fs::read_to_string(dir.join(&config.labels_file))?
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let model_path = dir.join(&config.model_file);
    anyhow::ensure!(model_path.is_file(), "missing {}", model_path.display());
    Ok(Variant {
        config,
        labels,
        model_path,
        raw_outputs: Default::default(),
    })
}
