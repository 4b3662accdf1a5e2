//! The process series that the Prometheus client libraries export by default (memory, CPU time, file
//! descriptors, start time), read from `/proc/self` at each scrape and written in the text format.
//!
//! Read at scrape time rather than sampled, so a scrape shows the process as it is. The parsers are pure
//! functions of the `/proc` text, unit tested below on sample files; a file that cannot be read or parsed
//! (another OS, a locked-down `/proc`) leaves its series out rather than reporting a made-up value.
use std::fmt::Write;

use crate::metrics::{
    PROCESS_CPU_SECONDS_TOTAL, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_START_TIME_SECONDS, PROCESS_VIRTUAL_MEMORY_BYTES,
};

/// The fields of `/proc/self/stat` that the series need, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User and system CPU time, in clock ticks.
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// When the process started, in clock ticks after boot.
    pub start_ticks: u64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)). The command name, field 2, is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The soft limit on open files from `/proc/<pid>/limits`; `None` when it reads `unlimited` or is missing.
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, seconds since the Unix epoch) from `/proc/stat`.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The system constants that turn `/proc` units into seconds and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    pub ticks_per_second: u64,
    pub page_bytes: u64,
}

impl Units {
    fn of_this_system() -> Option<Units> {
        // SAFETY: sysconf only reads system constants.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Some(Units {
            ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0)?,
            page_bytes: u64::try_from(page).ok().filter(|&p| p > 0)?,
        })
    }
}

/// What one scrape read; `None` for what could not be read.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub stat: Option<Stat>,
    pub boot_time: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl Sample {
    /// Reads this process's files now.
    pub fn read() -> Sample {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Sample {
            stat: read("/proc/self/stat").as_deref().and_then(parse_stat),
            boot_time: read("/proc/stat").as_deref().and_then(parse_boot_time),
            // The directory listing holds one more descriptor while it is read, as in the client libraries.
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(parse_max_open_files),
        }
    }

    /// The series in the Prometheus text format, with the client libraries' help texts.
    pub fn render(&self, units: Units) -> String {
        let mut out = String::new();
        let mut series = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        };
        let ticks = units.ticks_per_second as f64;
        let stat = self.stat;
        series(
            PROCESS_CPU_SECONDS_TOTAL,
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.map(|s| (s.utime_ticks + s.stime_ticks) as f64 / ticks),
        );
        series(
            PROCESS_RESIDENT_MEMORY_BYTES,
            "gauge",
            "Resident memory size in bytes.",
            stat.map(|s| (s.resident_pages * units.page_bytes) as f64),
        );
        series(
            PROCESS_VIRTUAL_MEMORY_BYTES,
            "gauge",
            "Virtual memory size in bytes.",
            stat.map(|s| s.virtual_bytes as f64),
        );
        series(
            PROCESS_START_TIME_SECONDS,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            stat.zip(self.boot_time)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / ticks),
        );
        series(
            PROCESS_OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|n| n as f64),
        );
        series(
            PROCESS_MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|n| n as f64),
        );
        out
    }
}

/// This process's series now, or nothing where `/proc` is not available.
pub fn render() -> String {
    match Units::of_this_system() {
        Some(units) => Sample::read().render(units),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Laid out as proc(5) documents (52 fields), with a command name made awkward on purpose.
    const STAT: &str = "4242 (mobilenet (serve) x) S 1 4242 4242 0 -1 4194560 51230 0 12 0 \
        1534 287 0 0 20 0 37 0 2710533 2287210496 102400 18446744073709551615 1 1 0 0 0 0 0 4096 17663 0 0 0 \
        17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
";

    const UNITS: Units = Units {
        ticks_per_second: 100,
        page_bytes: 4096,
    };

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                utime_ticks: 1534,
                stime_ticks: 287,
                start_ticks: 2710533,
                virtual_bytes: 2287210496,
                resident_pages: 102400,
            })
        );
    }

    #[test]
    fn truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_stat("4242 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
        assert_eq!(parse_stat(&STAT.replace("1534", "x")), None);
    }

    #[test]
    fn soft_open_files_limit() {
        assert_eq!(parse_max_open_files(LIMITS), Some(1024));
        assert_eq!(
            parse_max_open_files(&LIMITS.replace("1024   ", "unlimited")),
            None
        );
        assert_eq!(parse_max_open_files("Limit Soft Hard\n"), None);
    }

    #[test]
    fn boot_time_from_proc_stat() {
        let stat = "cpu  1 2 3 4\nintr 5\nbtime 1764547200\nprocesses 9\n";
        assert_eq!(parse_boot_time(stat), Some(1764547200));
        assert_eq!(parse_boot_time("cpu 1 2\n"), None);
    }

    #[test]
    fn rendered_in_seconds_and_bytes() {
        let sample = Sample {
            stat: parse_stat(STAT),
            boot_time: Some(1764547200),
            open_fds: Some(37),
            max_fds: Some(1024),
        };
        let text = sample.render(UNITS);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from {text}"))
                .to_string()
        };
        assert_eq!(value(PROCESS_CPU_SECONDS_TOTAL), "18.21");
        assert_eq!(value(PROCESS_RESIDENT_MEMORY_BYTES), "419430400");
        assert_eq!(value(PROCESS_VIRTUAL_MEMORY_BYTES), "2287210496");
        assert_eq!(value(PROCESS_START_TIME_SECONDS), "1764574305.33");
        assert_eq!(value(PROCESS_OPEN_FDS), "37");
        assert_eq!(value(PROCESS_MAX_FDS), "1024");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge\n"));
    }

    #[test]
    fn what_could_not_be_read_is_left_out() {
        let text = Sample {
            open_fds: Some(3),
            ..Sample::default()
        }
        .render(UNITS);
        assert_eq!(
            text,
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds 3\n"
        );
    }
}
