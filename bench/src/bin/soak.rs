//! `mobilenet-soak` (`make soak`): `SOAK_SECONDS` of open-loop load at 80% of the capacity measured in the
//! same invocation, every task over both protocols, against the release binary started on free loopback
//! ports (or a running server given by its URLs and pid). Prints a markdown report, writes it to
//! `--results-dir`, and exits 1 when the RSS drift or the error count misses its goal
//! (`mobilenet_bench::soak`; the method is in docs/abuse.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mobilenet_bench::server::{self, Launch, Server};
use mobilenet_bench::soak::{self, Mixer, report, report::DriftJudged};
use mobilenet_bench::{load, loopback, machine, procfs};

#[derive(Parser)]
#[command(
    name = "mobilenet-soak",
    about = "Minutes of steady load on mobilenet-serve (issue 14 part 7)"
)]
struct Args {
    /// How long the soak runs (after the capacity pre-run).
    #[arg(long, env = "SOAK_SECONDS", default_value_t = 600.0)]
    seconds: f64,
    /// The load, as a fraction of the measured capacity.
    #[arg(long, env = "SOAK_FRACTION", default_value_t = 0.8)]
    fraction: f64,
    /// Seconds of each closed-loop capacity pre-run ...
    #[arg(long, default_value_t = 5.0)]
    capacity_secs: f64,
    /// ... of which there are this many, the median taken ...
    #[arg(long, default_value_t = 3)]
    capacity_rounds: usize,
    /// ... at this many concurrent clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The RSS may grow at most this much (%) from after warm-up to the end.
    #[arg(long, default_value_t = 5.0)]
    drift_goal_pct: f64,
    /// Which RSS drifts fail the soak: at rest only (the short CI form) or under load too.
    #[arg(long, env = "SOAK_DRIFT_JUDGED", value_enum, default_value_t = DriftJudged::UnderLoadAndAtRest)]
    drift_judged: DriftJudged,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 2.0)]
    rss_period_secs: f64,
    /// SIGKILL the server past this RSS, to protect the machine (the soak then fails with errors).
    #[arg(long, default_value_t = 4096)]
    rss_kill_mib: u64,
    #[arg(long, env = "MODEL_REPOSITORY", default_value = "models/repository")]
    model_repository: PathBuf,
    /// Every JPEG in it is sent, in turn.
    #[arg(long, env = "TEST_IMAGES", default_value = "../shared/images")]
    images: PathBuf,
    #[arg(long, default_value = "target/release/mobilenet-serve")]
    server_bin: PathBuf,
    /// Extra server flags, space-separated.
    #[arg(
        long,
        env = "SOAK_SERVER_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    server_args: Vec<String>,
    /// Soak a running server instead (loopback only; its pid is needed for the RSS).
    #[arg(long, requires_all = ["grpc_url", "pid"])]
    http_url: Option<String>,
    #[arg(long, requires_all = ["http_url", "pid"])]
    grpc_url: Option<String>,
    #[arg(long, requires_all = ["http_url", "grpc_url"])]
    pid: Option<u32>,
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.seconds >= 10.0,
        "SOAK_SECONDS must be at least 10 (ten tenths of a second each is no trend)"
    );
    anyhow::ensure!(
        args.fraction > 0.0 && args.fraction <= 1.0,
        "SOAK_FRACTION must be in (0, 1]"
    );
    let machine = machine::describe();
    let images = Arc::new(load::read_jpegs(&args.images)?);
    let server_args: Vec<String> = args
        .server_args
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (soak, server_line, alive) = runtime.block_on(async {
        let (mut server, pid) = match (&args.http_url, &args.grpc_url, args.pid) {
            (Some(h), Some(g), Some(pid)) => (Server::external(h.clone(), g.clone()), pid),
            _ => {
                let models = server::default_models(&args.model_repository)?;
                let server = Server::start(Launch {
                    binary: args.server_bin.clone(),
                    repository: args.model_repository.clone(),
                    models,
                    extra: server_args.clone(),
                    log: std::env::temp_dir().join(format!("mobilenet-soak-server-{}.log", std::process::id())),
                })?;
                let pid = server.pid().context("no pid")?;
                (server, pid)
            }
        };
        loopback::ensure(&server.http_url)?;
        loopback::ensure(&server.grpc_url)?;
        eprintln!("waiting for the server at {} / {}", server.http_url, server.grpc_url);
        server.wait_ready(Duration::from_secs(300)).await?;
        let mixer = Mixer::connect(&server.http_url, &server.grpc_url, images.clone()).await?;
        let (capacity, readings) = soak::median_capacity(
            &mixer,
            args.concurrency,
            Duration::from_secs_f64(args.capacity_secs),
            args.capacity_rounds,
        )
        .await?;
        let rate = capacity * args.fraction;
        eprintln!(
            "capacity {capacity:.1} req/s (median of {readings:.1?}; mix of {} kinds); soaking at {rate:.1} req/s for {:.0} s",
            soak::MIX.len(),
            args.seconds
        );
        let soak = soak::soak(
            &mixer,
            pid,
            (capacity, readings),
            rate,
            Duration::from_secs_f64(args.seconds),
            Duration::from_secs_f64(args.rss_period_secs),
            args.rss_kill_mib << 20,
        )
        .await;
        let mut line = format!(
            "Server: `{}` (pid {pid}) with flags `{}`; {} JPEGs from {}.",
            server.http_url,
            server_args.join(" "),
            images.len(),
            args.images.display()
        );
        if let Some(how) = server.exited() {
            line.push_str(&format!(" **The server died during the soak ({how})**: {}", server.log_tail(2)));
        }
        let alive = procfs::read(pid).is_some();
        anyhow::Ok((soak, line, alive))
    })?;

    let figures = report::Figures::of(&soak);
    let mut failures = figures.failures(args.drift_goal_pct, args.drift_judged);
    if !alive {
        failures.push("the server was not running at the end".to_owned());
    }
    let command: Vec<String> = std::env::args().collect();
    let header = vec![
        "## make soak".to_owned(),
        format!("Measured {machine}. Command: `{}`.", command.join(" ")),
        server_line,
    ];
    let md = report::markdown(&header, &soak, &figures, &failures);
    print!("{md}");
    std::fs::create_dir_all(&args.results_dir)
        .with_context(|| format!("creating {}", args.results_dir.display()))?;
    let file = args
        .results_dir
        .join(format!("soak-{}.md", machine::stamp_utc()));
    std::fs::write(&file, &md).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("written to {}", file.display());
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
