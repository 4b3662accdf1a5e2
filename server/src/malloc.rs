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
