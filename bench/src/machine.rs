//! A one-line description of when and where the benchmark ran, for the report's header: the figures mean
//! little without the CPU, the core count and how busy the machine was.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = mobilenet_serve::cpus::available();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    format!(
        "{} UTC, {cpus} CPUs available ({cpu}), load average {load} at start",
        now_utc()
    )
}

/// `YYYY-MM-DD HH:MM` from the system clock (civil-from-days, so no date crate is needed for one line).
pub fn now_utc() -> String {
    utc_with_seconds()[..16].to_owned()
}

/// `YYYY-MM-DD HH:MM:SS`.
fn utc_with_seconds() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `YYYYMMDDTHHMMSSZ`: the time as a file-name stamp for the tools' result files (with seconds, because
/// two short runs in one minute must not overwrite each other's report).
pub fn stamp_utc() -> String {
    let t = utc_with_seconds();
    format!("{}T{}Z", t[..10].replace('-', ""), t[11..].replace(':', ""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_a_date() {
        let s = super::now_utc();
        assert_eq!(s.len(), 16, "{s}");
        assert!(s.starts_with("20"), "{s}");
        let stamp = super::stamp_utc();
        assert_eq!(stamp.len(), 16, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
            "{stamp}"
        );
    }
}
