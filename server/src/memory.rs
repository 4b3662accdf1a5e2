//! How much memory this process may use: its cgroup memory limit (v2 `memory.max`, v1
//! `memory.limit_in_bytes`), else the machine's `MemTotal`. Containers see the host's memory in
//! `/proc/meminfo` while the kernel kills them at the cgroup limit, so budgets sized from the host would let
//! a burst of large images get the pod OOM-killed. The defaults of the byte budgets derive from this.
use std::fs;

/// Memory this process may use, in bytes. Falls back to 4 GiB when nothing can be read (not Linux).
pub fn available() -> u64 {
    const FALLBACK: u64 = 4 << 30;
    let total = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text));
    let limit = cgroup_limit();
    match (limit, total) {
        (Some(l), Some(t)) => l.min(t),
        (Some(l), None) => l,
        (None, Some(t)) => t,
        (None, None) => FALLBACK,
    }
}

/// The cgroup memory limit, or None when unlimited or unknown.
fn cgroup_limit() -> Option<u64> {
    if let Ok(max) = fs::read_to_string("/sys/fs/cgroup/memory.max") {
        return parse_limit(&max);
    }
    fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        .ok()
        .and_then(|v1| parse_limit(&v1))
}

/// Parses a v2 `memory.max` ("max" or bytes) or a v1 `memory.limit_in_bytes`, where "unlimited" is a huge
/// page-rounded number (2^63 - 4096 on x86_64), taken here as anything from 2^60 up.
fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>().ok().filter(|&b| b > 0 && b < 1 << 60)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1 unlimited");
        assert_eq!(parse_limit("garbage"), None);
    }

    #[test]
    fn meminfo_total() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn some_memory_is_available() {
        assert!(available() >= 64 << 20);
    }
}
