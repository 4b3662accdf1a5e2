//! Dynamic batching: a pure [`policy`] deciding when a batch closes and what to skip, and the [`queue`]
//! (bounded admission + the actor that forms batches and hands them to the model threads).
pub mod policy;
pub mod queue;

pub use queue::{Batch, Batcher, Job, JobOutput, ModelLoad, Payload};
