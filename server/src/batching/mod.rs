//! Dynamic batching: a pure [`policy`] deciding when a batch closes and what to skip, a pure [`latency`]
//! model of what batches cost (for admission by expected wait), and the [`queue`] (bounded admission + the
//! actor that forms batches and hands them to the model threads).
pub mod latency;
pub mod policy;
pub mod queue;

pub use queue::{Admission, Batch, Batcher, Job, JobOutput, ModelLoad, Payload, Refusal};
