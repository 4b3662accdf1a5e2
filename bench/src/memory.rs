//! The server's memory: its resident set after start and after load, for the default models and for every
//! variant of the repository (issue 14's goals: the defaults under 300 MB, all of them under 500 MB).
//!
//! Each case starts the release binary with its models on free loopback ports, waits for `/readyz` (every
//! session built and warmed), and reads VmRSS and VmHWM from `/proc/<pid>/status`. It then loads each served
//! model in turn with closed-loop clients, half the time over HTTP and half over gRPC, so that the batcher
//! forms its largest batches and ONNX Runtime allocates its largest activations, and reads both again. The
//! goal is held against VmHWM, the peak, since a memory limit has to cover the peak and not the resting
//! figure. The figures are printed, never asserted on: they depend on the machine and its allocator.
//! "img/s under load" is the requests answered over the whole load time, across models of unequal cost: it
//! compares two memory settings run one after the other, not the server's throughput (`make bench` has that).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use mobilenet_client::{Client, Protocol};
use mobilenet_serve::repository::{Repository, Task};

use crate::{load, server::Server};

/// One server configuration to measure.
pub struct Case {
    pub name: &'static str,
    pub models: Vec<(String, Task)>,
    /// Bytes the peak should stay under.
    pub goal_bytes: u64,
}

/// The two figures of `/proc/<pid>/status` this section reports, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    /// Resident now.
    pub current: u64,
    /// The peak resident set since the process started.
    pub peak: u64,
}

pub struct MemoryRun {
    pub case: Case,
    /// From spawning the process to `/readyz` answering 200.
    pub startup: Duration,
    pub after_start: Rss,
    pub after_load: Rss,
    pub requests: usize,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// The default models of the repository's index (one per task), and every variant it lists.
pub fn cases(repository: &Path) -> anyhow::Result<Vec<Case>> {
    let all = Repository::load(repository, &[])?;
    let task_of = |name: &str| {
        all.variants
            .iter()
            .find(|v| v.config.name == name)
            .map(|v| v.config.task)
    };
    let mut defaults = Vec::new();
    for task in [Task::Classification, Task::Detection, Task::Segmentation] {
        if let Some(name) = all.defaults.get(&task)
            && let Some(task) = task_of(name)
        {
            defaults.push((name.clone(), task));
        }
    }
    let every = all
        .variants
        .iter()
        .map(|v| (v.config.name.clone(), v.config.task))
        .collect();
    Ok(vec![
        Case {
            name: "default models",
            models: defaults,
            goal_bytes: 300_000_000,
        },
        Case {
            name: "all variants",
            models: every,
            goal_bytes: 500_000_000,
        },
    ])
}

/// Starts the server for `case`, measures it after start and after `load_per_model` of load on each model.
pub async fn measure(
    case: Case,
    binary: &Path,
    repository: &Path,
    extra: &[String],
    images: &Arc<Vec<Bytes>>,
    concurrency: usize,
    load_per_model: Duration,
) -> anyhow::Result<MemoryRun> {
    let names: Vec<String> = case.models.iter().map(|(n, _)| n.clone()).collect();
    let spawned = Instant::now();
    let mut server = Server::spawn(binary, repository, &names, extra)?;
    server.wait_ready(Duration::from_secs(300)).await?;
    let startup = spawned.elapsed();
    let pid = server
        .pid()
        .context("the memory section needs a server it started")?;
    let after_start = read_status(pid)?;
    eprintln!(
        "memory, {}: ready after {:.1} s, {}",
        case.name,
        startup.as_secs_f64(),
        describe(after_start)
    );
    let http = Client::connect(Protocol::Http, Some(&server.http_url)).await?;
    let grpc = Client::connect(Protocol::Grpc, Some(&server.grpc_url)).await?;
    let (mut requests, mut errors, mut first_error) = (0, 0, None);
    for (model, task) in &case.models {
        for client in [&http, &grpc] {
            let run = load::closed_loop(
                client,
                *task,
                model,
                images.clone(),
                concurrency,
                Duration::ZERO,
                load_per_model / 2,
            )
            .await;
            requests += run.latency.len();
            errors += run.errors;
            if first_error.is_none() {
                first_error = run.first_error;
            }
        }
    }
    let after_load = read_status(pid)?;
    eprintln!(
        "memory, {}: after {requests} requests ({errors} errors), {}",
        case.name,
        describe(after_load)
    );
    Ok(MemoryRun {
        case,
        startup,
        after_start,
        after_load,
        requests,
        errors,
        first_error,
    })
}

fn describe(rss: Rss) -> String {
    format!("VmRSS {} MB, VmHWM {} MB", mb(rss.current), mb(rss.peak))
}

fn mb(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1e6)
}

fn read_status(pid: u32) -> anyhow::Result<Rss> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status(&text).with_context(|| format!("no VmRSS / VmHWM in {path}"))
}

/// VmRSS and VmHWM from the text of `/proc/<pid>/status` (whose "kB" are KiB).
fn parse_status(text: &str) -> Option<Rss> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some(Rss {
        current: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// The section's markdown table; a peak over its goal is bold.
pub fn markdown(runs: &[MemoryRun], concurrency: usize, load_per_model: Duration) -> String {
    let mut out = format!(
        "\n### Memory (MB = 10^6 bytes; VmRSS / VmHWM from /proc/<pid>/status; load: {concurrency} closed-loop \
         clients on each model in turn, {:.1} s per model, half over HTTP and half over gRPC)\n\n",
        load_per_model.as_secs_f64()
    );
    out.push_str(
        "| models | variants | ready after | after start: RSS / peak | after load: RSS / peak | goal (peak) | requests (errors) | img/s under load |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for run in runs {
        let peak = run.after_load.peak.max(run.after_start.peak);
        let peak_cell = if peak < run.case.goal_bytes {
            mb(peak)
        } else {
            format!("**{}**", mb(peak))
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} s | {} / {} | {} / {} | < {} | {} ({}) | {:.1} |\n",
            run.case.name,
            run.case.models.len(),
            run.startup.as_secs_f64(),
            mb(run.after_start.current),
            mb(run.after_start.peak),
            mb(run.after_load.current),
            peak_cell,
            mb(run.case.goal_bytes),
            run.requests,
            run.errors,
            run.requests as f64
                / (load_per_model.as_secs_f64() * run.case.models.len().max(1) as f64)
        ));
    }
    for run in runs.iter().filter(|r| r.errors > 0) {
        out.push_str(&format!(
            "\n{}: first error: {}\n",
            run.case.name,
            run.first_error.as_deref().unwrap_or("?")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak_in_bytes() {
        let text = "Name:\tmobilenet-serve\nVmPeak:\t 1337232 kB\nVmHWM:\t  446000 kB\nVmRSS:\t  411000 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Rss {
                current: 411_000 * 1024,
                peak: 446_000 * 1024
            })
        );
        assert_eq!(parse_status("Name:\tx\nVmRSS:\t 1 kB\n"), None, "no VmHWM");
    }
}
