//! The server's memory as the kernel sees it: `VmRSS` (resident now) and `VmHWM` (the resident peak) from
//! `/proc/<pid>/status`, sampled on a timer.
//!
//! Sampling alone misses a spike shorter than the period, so each measured span starts by resetting the
//! peak (`echo 5 > /proc/<pid>/clear_refs`, Linux 4.0+, allowed on our own child) and ends by reading
//! `VmHWM`: the span's true peak whatever its length. When the reset is refused the sampled maximum is all
//! there is, and the report says so.
//!
//! Each tick also reads the machine's CPU time stolen by the hypervisor (`/proc/stat`), so that a report can
//! tell a server that slowed down from a VM that was given less CPU.
//!
//! The sampler is also the shared machine's guard: past `kill_above` bytes it sends SIGKILL, so that a server
//! that would otherwise allocate tens of GB (issue 14 saw a 26 GB attempt) is stopped before it pushes other
//! processes out of memory. The kill is recorded and makes the case fail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

/// `VmRSS` and `VmHWM` of `pid`, or `None` once the process is gone.
pub fn read(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

fn parse_status(text: &str) -> Option<Memory> {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    Some(Memory {
        rss: kib("VmRSS:")? * 1024,
        hwm: kib("VmHWM:")? * 1024,
    })
}

/// The machine's CPU time so far, in ticks, summed over CPUs: stolen by the hypervisor, and in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub steal: u64,
    pub total: u64,
}

impl CpuTicks {
    /// Share of the CPU time between `self` and `later` that was stolen, in %.
    pub fn steal_pct_until(&self, later: &CpuTicks) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        Some(100.0 * later.steal.saturating_sub(self.steal) as f64 / total as f64)
    }
}

/// The `cpu` line of `/proc/stat`.
pub fn cpu_ticks() -> Option<CpuTicks> {
    parse_cpu_line(std::fs::read_to_string("/proc/stat").ok()?.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<CpuTicks> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    Some(CpuTicks {
        steal: *values.get(7)?,
        total: values.iter().take(8).sum(),
    })
}

/// Resets `VmHWM` to the current RSS. False when the kernel refused (then only samples give peaks).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}

/// What a sampler saw between [`Sampler::start`] and [`Sampler::stop`].
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// (time since start, VmRSS) at every tick.
    pub samples: Vec<(Duration, u64)>,
    /// (time since start, the machine's CPU ticks) at every tick.
    pub cpu: Vec<(Duration, CpuTicks)>,
    /// The largest sampled VmRSS.
    pub sampled_peak: u64,
    /// VmHWM at the last successful read; the span's true peak when `peak_was_reset`.
    pub hwm: u64,
    pub peak_was_reset: bool,
    /// Set when the guard killed the process: the RSS it had reached.
    pub killed_at: Option<u64>,
}

impl Trace {
    /// The span's peak RSS: VmHWM when it was reset at the start, else the sampled maximum.
    pub fn peak(&self) -> u64 {
        if self.peak_was_reset {
            self.hwm.max(self.sampled_peak)
        } else {
            self.sampled_peak
        }
    }
}

pub struct Sampler {
    trace: Arc<Mutex<Trace>>,
    task: tokio::task::JoinHandle<()>,
    pid: u32,
}

impl Sampler {
    /// Samples `pid` every `period`; SIGKILLs it if its RSS passes `kill_above` bytes.
    pub fn start(pid: u32, period: Duration, kill_above: u64) -> Sampler {
        let trace = Arc::new(Mutex::new(Trace {
            peak_was_reset: reset_peak(pid),
            ..Trace::default()
        }));
        let task = tokio::spawn({
            let trace = trace.clone();
            async move {
                let begin = Instant::now();
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(m) = read(pid) else { return };
                    let mut t = trace.lock().unwrap_or_else(|p| p.into_inner());
                    t.samples.push((begin.elapsed(), m.rss));
                    if let Some(ticks) = cpu_ticks() {
                        t.cpu.push((begin.elapsed(), ticks));
                    }
                    t.sampled_peak = t.sampled_peak.max(m.rss);
                    t.hwm = m.hwm;
                    if m.rss > kill_above && t.killed_at.is_none() {
                        // SAFETY: kill(2) on our own child's pid; no memory is touched.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        t.killed_at = Some(m.rss);
                    }
                }
            }
        });
        Sampler { trace, task, pid }
    }

    /// The trace so far, without stopping.
    pub fn snapshot(&self) -> Trace {
        self.trace.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops sampling after one last read, so that a peak reached after the last tick is still counted.
    pub fn stop(self) -> Trace {
        self.task.abort();
        let mut t = self.snapshot();
        if let Some(m) = read(self.pid) {
            t.sampled_peak = t.sampled_peak.max(m.rss);
            t.hwm = m.hwm;
        }
        t
    }
}

/// Bytes as MiB, for tables.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let text = "Name:\tx\nVmPeak:\t  99 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                rss: 1 << 20,
                hwm: 2 << 20
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn steal_is_the_eighth_cpu_field() {
        let a = parse_cpu_line("cpu  100 0 50 800 0 0 0 50 0 0").unwrap();
        assert_eq!(
            a,
            CpuTicks {
                steal: 50,
                total: 1000
            }
        );
        let b = parse_cpu_line("cpu  200 0 100 1550 0 0 0 150 7 0").unwrap();
        assert_eq!(a.steal_pct_until(&b), Some(10.0));
        assert_eq!(b.steal_pct_until(&b), None);
        assert_eq!(parse_cpu_line("cpu0 1 2 3"), None);
    }

    #[test]
    fn our_own_process_is_readable() {
        let m = read(std::process::id()).unwrap();
        assert!(m.rss > 0 && m.hwm >= m.rss);
    }

    #[test]
    fn peak_is_hwm_only_after_a_reset() {
        let mut t = Trace {
            sampled_peak: 10,
            hwm: 50,
            ..Trace::default()
        };
        assert_eq!(
            t.peak(),
            10,
            "a lifetime VmHWM says nothing about this span"
        );
        t.peak_was_reset = true;
        assert_eq!(t.peak(), 50);
    }
}
