//! The C allocator's per-thread arenas. glibc gives a thread that allocates while the others hold their
//! arenas an arena of its own, up to 8 per CPU, and an arena keeps most of what was freed in it. The server
//! runs dozens of threads (the async runtime, the decode pool, one per session, ONNX Runtime's intra-op
//! threads), so with glibc's default their arenas held 50–70 MB more with the three default models
//! (docs/memory.md). ONNX Runtime's own arena and the image buffers are allocated through it too.

/// Caps glibc's malloc arenas at `arenas` (0 leaves glibc's default). Call it before any other thread starts:
/// threads that already have an arena keep it. Elsewhere than glibc there is nothing to set.
pub fn limit_arenas(arenas: usize) -> anyhow::Result<()> {
    if arenas == 0 {
        return Ok(());
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let value = libc::c_int::try_from(arenas)
            .map_err(|_| anyhow::anyhow!("--malloc-arenas {arenas} is too large"))?;
        // SAFETY: mallopt only sets a tunable of the allocator; it returns 0 when it refuses the value.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, value) } == 0 {
            anyhow::bail!("mallopt(M_ARENA_MAX, {arenas}) was refused");
        }
    }
    Ok(())
}

/// Hands the allocator's free pages back to the kernel now: once the models are loaded, the heap still holds
/// what building the sessions freed (the parsed graphs, the weights before they were repacked).
pub fn trim_now() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts a thread that hands the allocator's free pages back to the kernel every `interval` (zero: never).
///
/// glibc returns memory only from the top of a heap, so pages freed below a live block stay resident: after a
/// burst of large images and segmentation batches the three default models held about 28 MiB of freed pages
/// (measured with `malloc_trim` called from a debugger after load, docs/memory.md). `malloc_trim(0)` releases
/// every free page of every arena with `madvise`, in 1.4–2.7 ms here (docs/memory.md), so calling it once a second
/// bounds what the process holds between bursts without touching the hot path.
pub fn trim_periodically(interval: std::time::Duration) -> anyhow::Result<()> {
    if interval.is_zero() {
        return Ok(());
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let started = std::time::Instant::now();
                trim_now();
                tracing::trace!(
                    took_us = started.elapsed().as_micros() as u64,
                    "malloc_trim"
                );
            }
        })?;
    Ok(())
}
