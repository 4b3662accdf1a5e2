//! The suite's report: one markdown table row per case (outcome and why, peak RSS against the bound, the
//! normal request's latency during the attack, what the server did), printed and written to
//! `bench/results/`.

use super::{CaseResult, latency_cell};
use crate::procfs::mib;

/// Markdown: a header naming the run, then the table.
pub fn markdown(header: &[String], results: &[CaseResult], bound: u64) -> String {
    let mut out = String::new();
    for line in header {
        out.push_str(line);
        out.push_str("\n\n");
    }
    out.push_str(
        "| case | outcome | peak RSS (bound) | normal request during (p50 / max, n) | witnesses served / refused / lost | what the server did | s |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|\n");
    for r in results {
        let mut outcome = if r.failures.is_empty() {
            "pass".to_owned()
        } else {
            format!("**FAIL**: {}", r.failures.join("; "))
        };
        if !r.notes.is_empty() {
            outcome.push_str(&format!(" ({})", r.notes.join("; ")));
        }
        let peak = if r.peak_rss == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.0} MiB{} ({:.0})",
                mib(r.peak_rss),
                if r.peak_exact { "" } else { " sampled" },
                mib(bound)
            )
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} ({}) | {} / {} / {} | {} | {:.0} |\n",
            r.case.name(),
            cell(&outcome),
            peak,
            latency_cell(&r.probes.latency),
            r.probes.sent,
            r.witnessed.served,
            r.witnessed.refused,
            r.witnessed.lost,
            cell(&r.what),
            r.seconds
        ));
    }
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    out.push_str(&format!(
        "\n{} of {} cases passed.\n",
        results.len() - failed,
        results.len()
    ));
    out
}

/// Table cells cannot hold `|` or newlines.
fn cell(text: &str) -> String {
    text.replace('|', "/").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abuse::{Case, witness::Witnessed};
    use crate::probe::Summary;

    fn result(case: Case, failures: Vec<String>) -> CaseResult {
        CaseResult {
            case,
            failures,
            notes: Vec::new(),
            peak_rss: 900 << 20,
            peak_exact: true,
            probes: Summary::default(),
            witnessed: Witnessed::default(),
            what: "a | b".to_owned(),
            seconds: 3.0,
        }
    }

    #[test]
    fn rows_say_pass_or_why_not() {
        let md = markdown(
            &["# title".to_owned()],
            &[
                result(Case::PngWide, vec![]),
                CaseResult {
                    notes: vec!["1 slowed by a stall".to_owned()],
                    ..result(Case::HalfOpen, vec![])
                },
                result(
                    Case::Burst,
                    vec!["refusals p99 9.0 ms over 5 ms".to_owned()],
                ),
            ],
            1000 << 20,
        );
        assert!(md.starts_with("# title\n\n| case |"));
        assert!(
            md.contains("| png-wide | pass | 900 MiB (1000) | - (0) | 0 / 0 / 0 | a / b | 3 |")
        );
        assert!(md.contains("| half-open | pass (1 slowed by a stall) |"));
        assert!(md.contains("| burst | **FAIL**: refusals p99 9.0 ms over 5 ms |"));
        assert!(md.ends_with("2 of 3 cases passed.\n"));
    }
}
