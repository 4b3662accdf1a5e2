//! How the model threads are scheduled against the rest of the server.
//!
//! ONNX Runtime splits each operator over its intra-op threads and waits for the slowest share. With the
//! default policy (`SCHED_OTHER`) each wake-up of another thread may preempt an intra-op thread mid-operator,
//! and the whole operator then waits for it. `SCHED_BATCH` turns off that wake-up preemption: measured on 2 CPUs
//! with one 2-thread session and the policy on every thread, the float classifier served 3.5% more images/s at
//! saturation (server-to-bare 0.862 against 0.834), with no change at one client.
//!
//! With the policy on every thread, though, a socket's wake-up also waited for an intra-op thread's time slice
//! to end: under a 10x burst a 429's p99 was 8 to 11 ms (the abuse suite's `burst`, docs/abuse.md). So only the
//! model threads, and the ONNX Runtime threads they start, run under `SCHED_BATCH`, and at a lower priority
//! (a higher nice value): the runtime's threads stay `SCHED_OTHER` at nice 0, wake at once and preempt
//! inference for the microseconds an admission, a refusal or a health check takes. Neither change needs a
//! privilege, and both are inherited by the threads a model thread creates afterwards.
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuScheduling {
    /// `SCHED_BATCH`: our threads do not preempt each other on wake-up.
    Batch,
    /// `SCHED_OTHER`, the kernel's default.
    Normal,
}

/// Puts the calling thread, and so every thread it creates from now on, under `policy`.
#[cfg(target_os = "linux")]
pub fn apply_to_current_thread(policy: CpuScheduling) -> std::io::Result<()> {
    let policy = match policy {
        CpuScheduling::Batch => libc::SCHED_BATCH,
        CpuScheduling::Normal => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for a non-real-time policy.
    match unsafe { libc::sched_setscheduler(0, policy, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn apply_to_current_thread(_policy: CpuScheduling) -> std::io::Result<()> {
    Ok(())
}

/// Lowers the calling thread's priority to `nice` (0 to 19), for it and every thread it creates from now on.
///
/// The model threads run at a lower priority than the runtime's: under overload the two CPUs are busy with
/// inference, and a refusal, a health check or a scrape must not wait for an intra-op thread's time slice to
/// end. Raising a nice value needs no privilege; inference still gets every cycle nothing else wants.
#[cfg(target_os = "linux")]
pub fn lower_current_thread_priority(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id changes that thread
    // only (Linux keeps nice values per thread).
    let done = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice.clamp(0, 19))
    };
    match done {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn lower_current_thread_priority(_nice: i32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn current_policy() -> libc::c_int {
        // SAFETY: querying the calling thread's policy has no preconditions.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn policy_applies_to_the_thread_and_is_inherited() {
        std::thread::spawn(|| {
            apply_to_current_thread(CpuScheduling::Batch).unwrap();
            assert_eq!(current_policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(current_policy).join().unwrap();
            assert_eq!(child, libc::SCHED_BATCH, "threads created later inherit it");
            apply_to_current_thread(CpuScheduling::Normal).unwrap();
            assert_eq!(current_policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn nice_applies_to_the_thread_only_and_is_inherited() {
        // SAFETY: getpriority on the calling thread (who 0) has no preconditions.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        let (own, child) = std::thread::spawn(move || {
            lower_current_thread_priority(before + 3).unwrap();
            (nice(), std::thread::spawn(nice).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(own, (before + 3).min(19));
        assert_eq!(child, own, "threads created later inherit it");
        assert_eq!(nice(), before, "the other threads keep theirs");
    }
}
