//! What the API says about each loaded variant (`GET /v1/models`, gRPC `ListModels`), built in one place:
//! both front ends only convert it to their wire format.
use serde::Serialize;

use crate::{engine::Model, repository::Quality, routing::Router};

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
}

/// Every loaded variant, in the router's order.
pub fn list(router: &Router<Model>) -> Vec<ModelInfo> {
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
            }
        })
        .collect()
}
