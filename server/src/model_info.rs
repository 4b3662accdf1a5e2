//! What the API says about each loaded variant (`GET /v1/models`, gRPC `ListModels`), built in one place:
//! both front ends only convert it to their wire format.
use std::collections::HashMap;

use serde::Serialize;

use crate::{
    auto::MAX_STEPS,
    engine::Model,
    repository::{Quality, Task},
    routing::{Router, Selector},
};

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub task: &'static str,
    pub width: f32,
    pub resolution: u32,
    pub precision: String,
    /// The label set the answers are in.
    pub dataset: String,
    pub parameters: u64,
    pub multiply_adds: u64,
    pub is_default: bool,
    pub num_classes: u32,
    pub description: String,
    pub quality: Option<Quality>,
    /// The variant's place in its task's `model=auto` ladder, 0 first; `None` when auto never picks it.
    pub auto_rank: Option<usize>,
    /// Why `model=auto` without attributes passes over this variant of its ladder: it tries at most
    /// [`MAX_STEPS`] ([`crate::auto::ladder_steps`]). `None` when it is tried (or not in a ladder).
    pub auto_passed_over: Option<String>,
}

/// Every loaded variant, in the router's order.
pub fn list(router: &Router<Model>) -> Vec<ModelInfo> {
    let passed_over = passed_over(router);
    router
        .models()
        .iter()
        .map(|m| {
            let c = &m.variant.config;
            ModelInfo {
                name: c.name.clone(),
                task: c.task.as_str(),
                width: c.attributes.width,
                resolution: c.attributes.resolution,
                precision: c.attributes.precision.clone(),
                dataset: c.attributes.dataset.clone(),
                parameters: c.attributes.parameters,
                multiply_adds: c.attributes.multiply_adds,
                is_default: router.is_default(c),
                num_classes: m.num_classes(),
                description: c.description.clone(),
                quality: c.quality.clone(),
                auto_rank: router.auto_rank(c),
                auto_passed_over: passed_over.get(&c.name).cloned(),
            }
        })
        .collect()
}

/// The variants `model=auto` passes over when a request gives no attributes (in a ladder, but not among the
/// router's auto candidates), by name, with the reason.
fn passed_over(router: &Router<Model>) -> HashMap<String, String> {
    let mut reasons = HashMap::new();
    for task in [Task::Classification, Task::Detection, Task::Segmentation] {
        let Ok(tried) = router.auto_candidates(task, &Selector::default()) else {
            continue;
        };
        let names: Vec<&str> = tried
            .iter()
            .map(|m| m.variant.config.name.as_str())
            .collect();
        let ladder = router
            .models()
            .iter()
            .map(|m| &m.variant.config)
            .filter(|c| {
                c.task == task && router.auto_rank(c).is_some() && !names.contains(&c.name.as_str())
            });
        for config in ladder {
            reasons.insert(
                config.name.clone(),
                format!(
                    "model=auto tries at most {MAX_STEPS} variants of a ladder, spaced by multiply-adds: {} \
                     (ask for this one by name or by its attributes)",
                    names.join(", ")
                ),
            );
        }
    }
    reasons
}
