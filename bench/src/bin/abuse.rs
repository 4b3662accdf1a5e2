//! `mobilenet-abuse` (`make abuse`): the hostile-client suite of issue 14 against the release binary. Starts
//! the server on free loopback ports with the default variant of each task, runs the selected cases
//! (`mobilenet_bench::abuse`), prints a markdown table, writes it to `--results-dir`, and exits 1 if any case
//! failed. The method and the defaults' reasons are in docs/abuse.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mobilenet_bench::abuse::{self, Case, Settings, Suite, table};
use mobilenet_bench::server::{self, Launch, Server};
use mobilenet_bench::{machine, procfs};

#[derive(Parser)]
#[command(
    name = "mobilenet-abuse",
    about = "Hostile clients against mobilenet-serve (issue 14 part 6)"
)]
struct Args {
    /// Cases to run, comma-separated, or `all`: png-wide, png-tall, png-16bit, jpeg-bomb, jpeg-truncated,
    /// half-open, slow-uploads, idle-keepalive, grpc-streams, big-bodies, burst.
    #[arg(long, env = "ABUSE_CASES", default_value = "all")]
    cases: String,
    /// Model repository written by `make models`; the server serves its default variant of each task.
    #[arg(long, env = "MODEL_REPOSITORY", default_value = "models/repository")]
    model_repository: PathBuf,
    /// Test images: the probe, the witnesses and the burst send their JPEGs.
    #[arg(long, env = "TEST_IMAGES", default_value = "../shared/images")]
    images: PathBuf,
    /// The normal request's image; its reference top-1 label must come back.
    #[arg(long, default_value = "burger.jpg")]
    probe_image: String,
    /// The server binary.
    #[arg(long, default_value = "target/release/mobilenet-serve")]
    server_bin: PathBuf,
    /// Extra server flags, space-separated (e.g. shorter timeouts than the defaults).
    #[arg(
        long,
        env = "ABUSE_SERVER_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    server_args: Vec<String>,
    /// The memory bound is the server's RSS after warm-up plus this margin (docs/abuse.md says why 512).
    #[arg(long, env = "ABUSE_RSS_MARGIN_MIB", default_value_t = 512)]
    rss_margin_mib: u64,
    /// The suite SIGKILLs the server past this RSS, to protect the machine; the case fails.
    #[arg(long, env = "ABUSE_RSS_KILL_MIB", default_value_t = 4096)]
    rss_kill_mib: u64,
    /// A normal request is sent every this many ms during an attack ...
    #[arg(long, default_value_t = 100)]
    probe_period_ms: u64,
    /// ... and must be answered within this many ms.
    #[arg(long, env = "ABUSE_PROBE_GOAL_MS", default_value_t = 200)]
    probe_goal_ms: u64,
    /// A witness request (every task, both protocols in turn) is sent every this many ms during an attack.
    #[arg(long, default_value_t = 250)]
    witness_period_ms: u64,
    /// Each hostile image is sent to every task over both protocols, in rounds, for at least this long.
    #[arg(long, default_value_t = 2.0)]
    image_min_secs: f64,
    /// How long connection attacks hold their connections; half-open and idle ones must have been closed
    /// by the server by then.
    #[arg(long, env = "ABUSE_HOLD_SECS", default_value_t = 35.0)]
    hold_secs: f64,
    #[arg(long, default_value_t = 5000)]
    half_open: usize,
    #[arg(long, default_value_t = 200)]
    slow_uploads: usize,
    /// Bytes per second of each slow upload.
    #[arg(long, default_value_t = 1024)]
    slow_rate: usize,
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Streams opened on one gRPC connection ...
    #[arg(long, default_value_t = 10_000)]
    streams: u32,
    /// ... watched for this long ...
    #[arg(long, default_value_t = 5.0)]
    streams_hold_secs: f64,
    /// ... of which the server may hold at most this many.
    #[arg(long, env = "ABUSE_MAX_STREAMS", default_value_t = 1000)]
    max_streams_held: u32,
    /// Oversized bodies of each kind (Content-Length, chunked, gRPC), sent at once.
    #[arg(long, default_value_t = 4)]
    big_bodies: usize,
    /// The server's --max-body-bytes: the oversized bodies are one byte more.
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// The server's --max-image-pixels: the crafted images are sized from it.
    #[arg(long, default_value_t = 40_000_000)]
    max_image_pixels: u64,
    /// The burst's rate, in multiples of the measured capacity ...
    #[arg(long, default_value_t = 10.0)]
    burst_factor: f64,
    /// ... for this long ...
    #[arg(long, env = "ABUSE_BURST_SECS", default_value_t = 10.0)]
    burst_secs: f64,
    /// ... after a closed-loop capacity run of this long.
    #[arg(long, default_value_t = 3.0)]
    capacity_secs: f64,
    /// The burst's refusals must come back within this p99.
    #[arg(long, default_value_t = 5.0)]
    refusal_p99_ms: f64,
    /// Where the markdown table is written (gitignored).
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cases = Case::parse_list(&args.cases)?;
    let machine = machine::describe();
    // Thousands of sockets at once: raise our own soft limit to the hard one before anything opens. The
    // server, started afterwards, inherits the same limits as it would from a shell with them.
    let needed = args.half_open.max(args.idle).max(args.slow_uploads) as u64 + 1024;
    let fd_limit = raise_fd_limit();
    anyhow::ensure!(
        fd_limit >= needed,
        "the open-file limit is {fd_limit} and the connection cases need {needed}; raise `ulimit -Hn`"
    );
    let models = server::default_models(&args.model_repository)?;
    let settings = Settings {
        rss_margin: args.rss_margin_mib << 20,
        rss_kill: args.rss_kill_mib << 20,
        probe_period: Duration::from_millis(args.probe_period_ms),
        probe_goal: Duration::from_millis(args.probe_goal_ms),
        witness_period: Duration::from_millis(args.witness_period_ms.max(1)),
        image_min: Duration::from_secs_f64(args.image_min_secs),
        hold: Duration::from_secs_f64(args.hold_secs),
        half_open: args.half_open,
        slow_uploads: args.slow_uploads,
        slow_rate: args.slow_rate,
        idle: args.idle,
        streams: args.streams,
        streams_hold: Duration::from_secs_f64(args.streams_hold_secs),
        max_streams_held: args.max_streams_held,
        big_bodies: args.big_bodies,
        max_body_bytes: args.max_body_bytes,
        max_image_pixels: args.max_image_pixels,
        burst_factor: args.burst_factor,
        burst: Duration::from_secs_f64(args.burst_secs),
        capacity_run: Duration::from_secs_f64(args.capacity_secs),
        refusal_p99_goal: Duration::from_secs_f64(args.refusal_p99_ms / 1e3),
        classifier: models[0].clone(),
    };
    let server_args = args
        .server_args
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect::<Vec<_>>();
    let launch = Launch {
        binary: args.server_bin.clone(),
        repository: args.model_repository.clone(),
        models: models.clone(),
        extra: server_args.clone(),
        log: std::env::temp_dir()
            .join(format!("mobilenet-abuse-server-{}.log", std::process::id())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (results, suite_header, bound) = runtime.block_on(async {
        let server = Server::start(launch)?;
        eprintln!("waiting for the server at {} / {} (log: {})", server.http_url, server.grpc_url,
            server.log.as_ref().map_or(String::new(), |p| p.display().to_string()));
        let mut suite = Suite::new(server, settings, args.images.clone(), &args.probe_image).await?;
        eprintln!(
            "baseline RSS {:.0} MiB, bound {:.0} MiB",
            procfs::mib(suite.baseline),
            procfs::mib(suite.bound())
        );
        let mut results = Vec::new();
        for case in cases {
            eprintln!("== {}", case.name());
            let r = suite.run(case).await;
            eprintln!(
                "   {} in {:.0} s: {}",
                if r.failures.is_empty() { "pass" } else { "FAIL" },
                r.seconds,
                if r.failures.is_empty() { r.what.clone() } else { r.failures.join("; ") }
            );
            results.push(r);
        }
        let header = format!(
            "Server: `{}` serving {} with flags `{}`; its RSS after warm-up {:.0} MiB, bound = that + {} MiB = {:.0} MiB; open-file limit {fd_limit}. The normal request with no attack: p50 / max {} ({} sent). {}",
            args.server_bin.display(),
            models.join(", "),
            server_args.join(" "),
            procfs::mib(suite.baseline),
            args.rss_margin_mib,
            procfs::mib(suite.bound()),
            abuse::latency_cell(&suite.at_rest.latency),
            suite.at_rest.sent,
            if suite.stalls_realtime {
                "Machine stalls are watched by a real-time thread: a normal request over the goal only by the time the machine stood still is reported, not failed."
            } else {
                "The stall watcher could not get real-time priority: every slow normal request counts against the server."
            }
        );
        anyhow::Ok((results, header, suite.bound()))
    })?;

    let command: Vec<String> = std::env::args().collect();
    let header = vec![
        "## make abuse".to_owned(),
        format!("Measured {machine}. Command: `{}`.", command.join(" ")),
        suite_header,
    ];
    let md = table::markdown(&header, &results, bound);
    print!("{md}");
    std::fs::create_dir_all(&args.results_dir)
        .with_context(|| format!("creating {}", args.results_dir.display()))?;
    let file = args
        .results_dir
        .join(format!("abuse-{}.md", machine::stamp_utc()));
    std::fs::write(&file, &md).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("written to {}", file.display());
    if results.iter().any(|r| !r.failures.is_empty()) {
        std::process::exit(1);
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}
