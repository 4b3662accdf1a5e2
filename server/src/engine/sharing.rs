//! What the sessions of one model, and of all models, share in memory.
//!
//! A `per_cpu` model runs three sessions (two instances and the solo one), and each ONNX Runtime session
//! keeps its own copy of everything by default: the weights, the weights repacked for the CPU kernels, and a
//! BFC arena that holds on to the largest activations it ever needed. Sessions cannot share one `Run` here
//! (`ort`'s `Session::run` takes `&mut self`, and the solo session has a different thread pool), so what
//! they share is what ONNX Runtime lets sessions share:
//!
//! - [`ModelShare`]: one prepacked-weights container per model, so that the kernels' repacked weights
//!   (`QLinearConv`, `MatMul`, `Gemm`) are stored once for all its sessions. With these small models it made
//!   no difference measurable above the run-to-run spread, and it costs nothing;
//! - with `--ort-shared-arena`, the environment's CPU arena ([`register_env_allocator`]): one arena for every
//!   session in the process instead of one per session, so that sessions that do not run at the same moment
//!   reuse the same activation memory. This is what took the resident set with all 12 variants from about
//!   850 to about 370 MB after start.
//!
//! docs/memory.md has the measurements behind each choice.
use std::sync::Mutex;

use ort::{AsPointer, environment::Environment, session::builder::PrepackedWeights};

/// Shared by every session of one model; cheap to clone.
#[derive(Clone)]
pub struct ModelShare {
    pub prepacked: PrepackedWeights,
    /// The sessions allocate from the environment's arena (`--ort-shared-arena`).
    pub env_arena: bool,
}

impl ModelShare {
    /// A new prepacked-weights container; with `env_arena`, registers the environment's arena first (once per
    /// process, whatever the number of models).
    pub fn new(env: &Environment, env_arena: bool) -> anyhow::Result<ModelShare> {
        if env_arena {
            register_env_allocator(env)?;
        }
        Ok(ModelShare {
            prepacked: PrepackedWeights::new(),
            env_arena,
        })
    }
}

/// Registers one CPU arena allocator on the environment, once per process; sessions opt in with
/// `session.use_env_allocators`. The arena keeps ONNX Runtime's default configuration: growing chunks by
/// powers of two. Growing them by what is requested (`arena_extend_strategy` 1) was measured too and held
/// more memory with the three default models (428 against 352 MiB after load), from more, smaller chunks.
fn register_env_allocator(env: &Environment) -> anyhow::Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    let api = ort::api();
    let mut info: *mut ort::sys::OrtMemoryInfo = std::ptr::null_mut();
    // SAFETY: FFI calls with valid out-pointers; each returned status is consumed by `check`, the memory
    // info is released once registered (ONNX Runtime copies it), and a null arena config means defaults.
    unsafe {
        check(
            (api.CreateCpuMemoryInfo)(
                ort::sys::OrtAllocatorType::OrtArenaAllocator,
                ort::sys::OrtMemType::OrtMemTypeDefault,
                &mut info,
            ),
            "CreateCpuMemoryInfo",
        )?;
        let registered = check(
            (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info, std::ptr::null()),
            "CreateAndRegisterAllocator",
        );
        (api.ReleaseMemoryInfo)(info);
        registered?;
    }
    *done = true;
    Ok(())
}

/// # Safety
/// `status` must have just been returned by an ONNX Runtime call; this takes ownership of it.
unsafe fn check(status: ort::sys::OrtStatusPtr, what: &str) -> anyhow::Result<()> {
    unsafe { ort::Error::result_from_status(status) }
        .map_err(|e| anyhow::anyhow!("ONNX Runtime {what}: {e}"))
}
