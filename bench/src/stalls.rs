//! Stalls of the machine itself, told apart from a slow server.
//!
//! A thread at real-time priority (`SCHED_FIFO`) asks to sleep 1 ms, over and over, and records every
//! wake-up that came [`STALL_MIN`] or more late. Nothing in the server or the suite can hold such a thread
//! off a CPU for that long (the kernel runs it ahead of every normal thread the moment its timer fires), so
//! a late wake-up means the whole VM was not running: the hypervisor descheduled it, or a cgroup quota
//! throttled it. The idea is jHiccup's, with the priority that makes the reading about the machine alone.
//!
//! A probe that was slow only by the time the machine stood still ([`Stalls::overlap`]) says nothing about
//! the server; the abuse suite reports it apart and does not fail a case for it. Without real-time priority
//! (not root, or a container without `CAP_SYS_NICE`) a late wake-up may be the server's own load, so
//! nothing is set apart ([`Stalls::realtime`] is false).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A wake-up this much later than asked counts as a stall: far above the scheduler's wake-up latency for a
/// real-time thread (tens of µs), far below the 200 ms probe goal.
pub const STALL_MIN: Duration = Duration::from_millis(10);
const TICK: Duration = Duration::from_millis(1);

/// A span in which the machine did not run the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub from: Instant,
    pub to: Instant,
}

/// What the watcher saw.
#[derive(Debug, Clone, Default)]
pub struct Stalls {
    /// The watcher ran at real-time priority, so its stalls are the machine's.
    pub realtime: bool,
    pub stalls: Vec<Stall>,
}

impl Stalls {
    /// How long the machine stood still within `[from, to]`.
    pub fn overlap(&self, from: Instant, to: Instant) -> Duration {
        self.stalls
            .iter()
            .map(|s| s.to.min(to).saturating_duration_since(s.from.max(from)))
            .sum()
    }

    pub fn longest(&self) -> Duration {
        self.stalls
            .iter()
            .map(|s| s.to.duration_since(s.from))
            .max()
            .unwrap_or_default()
    }
}

/// A running watcher; [`Watcher::stop`] ends it and returns what it saw.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Stalls>>,
}

impl Watcher {
    pub fn start() -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stall-watcher".to_owned())
            .spawn(move || watch(&stopping))
            .ok();
        Watcher { stop, thread }
    }

    pub fn stop(mut self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

fn watch(stop: &AtomicBool) -> Stalls {
    let mut seen = Stalls {
        realtime: make_realtime(),
        stalls: Vec::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        let asleep = Instant::now();
        std::thread::sleep(TICK);
        let woke = Instant::now();
        if woke.duration_since(asleep) >= TICK + STALL_MIN {
            seen.stalls.push(Stall {
                from: asleep + TICK,
                to: woke,
            });
        }
    }
    seen
}

/// Puts the calling thread in `SCHED_FIFO` at the lowest real-time priority; false when refused.
fn make_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call's duration.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_only_the_stalled_part_of_a_span() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let seen = Stalls {
            realtime: true,
            stalls: vec![
                Stall {
                    from: ms(100),
                    to: ms(300),
                },
                Stall {
                    from: ms(500),
                    to: ms(520),
                },
            ],
        };
        assert_eq!(seen.overlap(ms(0), ms(50)), Duration::ZERO);
        assert_eq!(seen.overlap(ms(200), ms(510)), Duration::from_millis(110));
        assert_eq!(seen.overlap(ms(0), ms(1000)), Duration::from_millis(220));
        assert_eq!(seen.longest(), Duration::from_millis(200));
    }
}
