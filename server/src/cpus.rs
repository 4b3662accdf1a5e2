//! How many CPUs this process may actually use: the smaller of its scheduler affinity and its cgroup CPU quota
//! (v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`). Containers often see every host core in
//! `/proc/cpuinfo` while being limited to a few; sizing thread pools from the host count oversubscribes them.
use std::fs;

/// CPUs available to this process, at least 1.
pub fn available() -> usize {
    let affinity = affinity_count()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let quota = cgroup_quota().map(|q| q.ceil().max(1.0) as usize);
    quota.map_or(affinity, |q| q.min(affinity)).max(1)
}

fn affinity_count() -> Option<usize> {
    // SAFETY: `cpu_set_t` is plain data; sched_getaffinity fills it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(libc::CPU_COUNT(&set) as usize).filter(|&n| n > 0)
    }
}

/// The cgroup CPU quota in CPUs, or None when unlimited or unknown.
fn cgroup_quota() -> Option<f64> {
    if let Ok(max) = fs::read_to_string("/sys/fs/cgroup/cpu.max") {
        return parse_cpu_max(&max);
    }
    let quota = fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").ok()?;
    let period = fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_period_us").ok()?;
    parse_cfs(&quota, &period)
}

/// Parses cgroup v2 `cpu.max`: "<quota> <period>" or "max <period>".
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: f64 = parts.next()?.parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    Some(quota.parse::<f64>().ok()? / period)
}

/// Parses cgroup v1 quota/period; a quota of -1 means unlimited.
fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_quota() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
    }

    #[test]
    fn cgroup_v1_quota() {
        assert_eq!(parse_cfs("200000\n", "100000\n"), Some(2.0));
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
    }

    #[test]
    fn at_least_one_cpu() {
        assert!(available() >= 1);
    }
}
