//! `mobilenet-bench`: how close the server comes to the bare pipeline on this machine.
//!
//! For each variant, in one run:
//! 1. the exploration: `--explore-rounds` passes of the bare pipeline in-process ([`bare`]) with decoding
//!    overlapped with inference, in every layout at every batch size, while the server idles. The
//!    configuration with the best median is the one the server is held to;
//! 2. `--rounds` rounds, each of: that configuration measured again, then the server at saturation, closed
//!    loop over HTTP and over gRPC ([`load`]). Each round's server figure is divided by that round's bare
//!    one, and the median of those ratios is reported. Measuring the chosen configuration again keeps the
//!    luck that made it win the exploration out of the comparison, and pairing within a round keeps the
//!    machine's drift between rounds out of it;
//! 3. `--latency-rounds` rounds of: the bare pipeline one image at a time (the single-image time), and right
//!    after it the server with one client over both protocols, so that the two latencies compared are
//!    measured within seconds; the median of the rounds' ratios is reported.
//!
//! 4. memory ([`memory`]): the server's resident set after start and after load, for the default models and
//!    for every variant, each case in a server of its own started after the rest (`--memory-only` runs
//!    just this, `make memory`).
//!
//! The server is the release binary started with the benchmarked variants only ([`server`]), with the same
//! flags from which the bare pipeline takes its intra-op threads. Prints a markdown report ([`report`]).

use mobilenet_bench::{bare, load, machine, memory, report, server};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use mobilenet_client::{Client, Protocol};
use mobilenet_serve::config::{Config, ModelKnobs};
use mobilenet_serve::engine;
use mobilenet_serve::repository::{Repository, Task};

use mobilenet_bench::report::{ModelReport, ServerRun};

#[derive(Parser)]
#[command(
    name = "mobilenet-bench",
    about = "mobilenet-serve against the bare decode + resize + ORT pipeline"
)]
struct Args {
    /// Model repository written by `make models`.
    #[arg(long, env = "MODEL_REPOSITORY", default_value = "models/repository")]
    model_repository: PathBuf,
    /// Folder of test images; every JPEG in it is used, in turn.
    #[arg(long, env = "TEST_IMAGES", default_value = "../shared/images")]
    images: PathBuf,
    /// Variants to benchmark.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mobilenet_v2_1.0_224,mobilenet_v2_1.0_224_int8,mobilenet_v2_1.0_224_int8_per_channel,ssd_mobilenet_v2_fpnlite_256,deeplabv3_mnv2_513"
    )]
    models: Vec<String>,
    /// Seconds measured per case (each server run, and each bare batch size gets half of it).
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Rounds of (the best bare configuration, server over HTTP, server over gRPC) per variant. The tables
    /// give each case's median over the rounds, and its range, so one noisy run on a shared machine neither
    /// makes nor breaks a ratio.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Rounds of (the bare pipeline one image at a time, one client over HTTP, one over gRPC) per variant;
    /// each latency ratio is a round's server p50 over that round's bare p50.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    latency_rounds: u32,
    /// Passes over every bare layout and batch size that choose the best bare configuration.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    explore_rounds: u32,
    /// Seconds of load before each server measurement starts counting.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Closed-loop clients at saturation.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Batch sizes tried for the bare pipeline (all of them, also above the server's max batch size).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    batch_sizes: Vec<usize>,
    /// The server binary to start.
    #[arg(long, default_value = "target/release/mobilenet-serve")]
    server_bin: PathBuf,
    /// Extra server flag (repeatable), e.g. `--server-arg=--max-batch-size=4`; the bare pipeline reads its
    /// intra-op threads from the same flags.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Use a running server instead of starting one (both URLs needed; its flags must match --server-arg).
    #[arg(long, requires = "grpc_url")]
    http_url: Option<String>,
    #[arg(long, requires = "http_url")]
    grpc_url: Option<String>,
    /// Seconds of load on each model in the memory section (half over HTTP, half over gRPC).
    #[arg(long, default_value_t = 4.0)]
    memory_load_secs: f64,
    /// Run only the memory section (`make memory`).
    #[arg(long, conflicts_with = "skip_memory")]
    memory_only: bool,
    /// Leave the memory section out.
    #[arg(long)]
    skip_memory: bool,
    /// libonnxruntime.so for the bare pipeline (the server reads the same variable).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_dylib: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Taken before any work, so that the load average shows what else was running.
    let machine = machine::describe();
    let images = Arc::new(load::read_jpegs(&args.images)?);
    let command: Vec<String> = std::env::args().collect();
    if args.memory_only {
        println!("Measured {machine}.\nCommand: `{}`.", command.join(" "));
        print!("{}", memory_section(&args, &images)?);
        return Ok(());
    }
    let repository = Repository::load(&args.model_repository, &args.models).with_context(|| {
        format!(
            "model repository {} (run `make models`)",
            args.model_repository.display()
        )
    })?;
    // The server's own configuration, parsed from the flags it will be started with, decides the threads.
    let config = Config::try_parse_from(
        std::iter::once("mobilenet-serve".to_owned()).chain(args.server_arg.clone()),
    )
    .context("--server-arg")?;
    // The bare pipeline allocates as the server does (the load generator's threads start later).
    mobilenet_serve::malloc::limit_arenas(config.malloc_arenas)?;
    eprintln!(
        "{} images from {}, {} variants, {:.0} s per case",
        images.len(),
        args.images.display(),
        args.models.len(),
        args.duration
    );

    // The server starts first and idles while the bare pipeline of a variant runs; each variant's bare and
    // server runs then follow each other closely, so that both see the same background load.
    let env = engine::environment(args.ort_dylib.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = runtime.block_on(async {
        let mut server = match (&args.http_url, &args.grpc_url) {
            (Some(h), Some(g)) => server::Server::external(h.clone(), g.clone()),
            _ => server::Server::spawn(
                &args.server_bin,
                &args.model_repository,
                &args.models,
                &args.server_arg,
            )?,
        };
        eprintln!(
            "waiting for the server at {} / {}",
            server.http_url, server.grpc_url
        );
        server.wait_ready(Duration::from_secs(300)).await?;
        // The load generator shares this single-threaded runtime, so it stays light next to the server.
        let http = Client::connect(Protocol::Http, Some(&server.http_url)).await?;
        let grpc = Client::connect(Protocol::Grpc, Some(&server.grpc_url)).await?;
        let mut reports = Vec::new();
        for variant in repository.variants {
            // Blocking this runtime is fine here: nothing else is in flight while the bare pipeline runs.
            let (name, task) = (variant.config.name.clone(), variant.config.task);
            let (mut pipeline, knobs) = open_bare(&env, variant, &config)?;
            let (mut bare_runs, mut saturated, mut single) = (Vec::new(), Vec::new(), Vec::new());
            for pass in 1..=args.explore_rounds {
                eprintln!("  exploration {pass}/{}", args.explore_rounds);
                bare_runs.extend(measure_bare(&mut pipeline, &config, &args, &images)?);
            }
            let (layout, batch_size) =
                report::best_layout(&bare_runs).context("the exploration measured nothing")?;
            let (mut confirmed, mut engine, mut engine_single) =
                (Vec::new(), Vec::new(), Vec::new());
            // Bare and server runs alternate, so that a burst of background load hits one round of each
            // rather than all of one side.
            for round in 1..=args.rounds {
                eprintln!("  round {round}/{}", args.rounds);
                let run = pipeline.measure_pipelined(
                    layout,
                    &images,
                    batch_size,
                    config.decode_threads(),
                    Duration::from_secs_f64(args.duration),
                )?;
                eprintln!(
                    "  best bare ({}, batch {batch_size}): {:.1} img/s",
                    report::layout_name(layout),
                    run.images_per_s
                );
                confirmed.push(run);
                let limit = pipeline.measure_engine(
                    layout,
                    &images,
                    batch_size,
                    Duration::from_secs_f64(args.duration),
                )?;
                eprintln!(
                    "  engine, tensors prepared in advance ({}, batch {batch_size}): {:.1} img/s",
                    report::layout_name(layout),
                    limit.images_per_s
                );
                engine.push(limit);
                for (protocol, client) in [("HTTP", &http), ("gRPC", &grpc)] {
                    let run = measure_server(
                        &server,
                        client,
                        &name,
                        task,
                        &args,
                        &images,
                        args.concurrency,
                    )
                    .await;
                    saturated.push(run.with_protocol(protocol));
                }
            }
            // The single-image floor is measured right before the one-client runs it is compared with, round
            // by round, so that the machine's drift does not enter the latency ratio.
            let mut sequential = Vec::new();
            for _ in 0..args.latency_rounds {
                let single_engine = pipeline
                    .measure_engine_single(&images, Duration::from_secs_f64(args.duration) / 2)?;
                eprintln!(
                    "  engine, one prepared image at a time: p50 {:.2} ms",
                    single_engine.per_batch.p50()
                );
                engine_single.push(single_engine);
                sequential.push(measure_sequential(&mut pipeline, &args, &images)?);
                for (protocol, client) in [("HTTP", &http), ("gRPC", &grpc)] {
                    let run = measure_server(&server, client, &name, task, &args, &images, 1).await;
                    single.push(run.with_protocol(protocol));
                }
            }
            let mut report =
                ModelReport::new(name, task, &knobs, config.decode_threads(), sequential);
            report.bare = bare_runs;
            report.confirmed = confirmed;
            report.engine = engine;
            report.engine_single = engine_single;
            report.saturated = saturated;
            report.single = single;
            reports.push(report);
        }
        anyhow::Ok(reports)
    })?;

    println!("Measured {machine}.\nCommand: `{}`.", command.join(" "));
    print!(
        "{}",
        report::markdown(
            &reports,
            args.concurrency,
            images.len(),
            args.rounds,
            args.explore_rounds
        )
    );
    if !args.skip_memory {
        print!("{}", memory_section(&args, &images)?);
    }
    Ok(())
}

/// The memory section: a server of its own per case, started after every other server has stopped.
fn memory_section(args: &Args, images: &Arc<Vec<Bytes>>) -> anyhow::Result<String> {
    let load_per_model = Duration::from_secs_f64(args.memory_load_secs);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for case in memory::cases(&args.model_repository)? {
        runs.push(runtime.block_on(memory::measure(
            case,
            &args.server_bin,
            &args.model_repository,
            &args.server_arg,
            images,
            args.concurrency,
            load_per_model,
        ))?);
    }
    Ok(memory::markdown(&runs, args.concurrency, load_per_model))
}

/// Opens the bare pipeline of one variant in the layout the server gives it.
fn open_bare(
    env: &ort::environment::Environment,
    variant: mobilenet_serve::repository::Variant,
    config: &Config,
) -> anyhow::Result<(bare::Bare, ModelKnobs)> {
    let name = variant.config.name.clone();
    let (pipeline, knobs) = bare::Bare::open_as_served(env, variant, config)?;
    let solo = match knobs.solo_intra_op_threads {
        0 => String::new(),
        t => format!(" (+ a solo session x {t})"),
    };
    eprintln!(
        "{name}: bare, {} session(s) x {} intra-op threads{solo}, decode threads {}, {:?} scheduling",
        knobs.instances,
        knobs.intra_op_threads,
        config.decode_threads(),
        config.cpu_scheduling
    );
    Ok((pipeline, knobs))
}

/// The bare pipeline one image at a time: the latency floor.
fn measure_sequential(
    pipeline: &mut bare::Bare,
    args: &Args,
    images: &[Bytes],
) -> anyhow::Result<bare::BatchRun> {
    let single = pipeline.measure_sequential(images, Duration::from_secs_f64(args.duration) / 2)?;
    eprintln!(
        "  one image at a time: {:.1} img/s, p50 {:.1} ms",
        single.images_per_s,
        single.per_batch.p50()
    );
    Ok(single)
}

/// One round of the bare pipeline with decoding overlapped with inference, at each batch size.
fn measure_bare(
    pipeline: &mut bare::Bare,
    config: &Config,
    args: &Args,
    images: &[Bytes],
) -> anyhow::Result<Vec<bare::BatchRun>> {
    let duration = Duration::from_secs_f64(args.duration) / 2;
    let mut runs = Vec::new();
    // Every layout and batch size, whatever the server's cap: the server is held to the bare pipeline at its
    // best.
    for layout in pipeline.layouts() {
        for &b in args.batch_sizes.iter().filter(|&&b| b >= 1) {
            let run =
                pipeline.measure_pipelined(layout, images, b, config.decode_threads(), duration)?;
            eprintln!(
                "  overlapped, {}, batch {b}: {:.1} img/s",
                report::layout_name(layout),
                run.images_per_s
            );
            runs.push(run);
        }
    }
    Ok(runs)
}

/// The server under `concurrency` closed-loop clients, with the mean batch size it formed meanwhile.
async fn measure_server(
    server: &server::Server,
    client: &Client,
    model: &str,
    task: Task,
    args: &Args,
    images: &Arc<Vec<Bytes>>,
    concurrency: usize,
) -> ServerRun {
    let before = server.batch_totals(model).await;
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let run = load::closed_loop(
        client,
        task,
        model,
        images.clone(),
        concurrency,
        warmup,
        duration,
    )
    .await;
    let after = server.batch_totals(model).await;
    // Before the model's first batch its histogram is absent from /metrics: that is zero, not unknown.
    let (s0, c0) = before.unwrap_or((0.0, 0.0));
    let mean_batch = match after {
        Some((s1, c1)) if c1 > c0 => Some((s1 - s0) / (c1 - c0)),
        _ => None,
    };
    eprintln!(
        "  server x{concurrency}: {:.1} img/s, p50 {:.1} ms, mean batch {}",
        run.images_per_s,
        run.latency.p50(),
        mean_batch.map_or("-".into(), |b| format!("{b:.1}"))
    );
    ServerRun {
        protocol: "",
        run,
        mean_batch,
    }
}
