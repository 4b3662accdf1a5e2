//! `mobilenet-tradeoff` (`make tradeoff`): the paper's accuracy/latency trade-off (its Figure 5) measured on
//! this machine, for every variant of the repository, each in the layout the server gives it:
//!
//! - its quality (config.json: published, or the agreement with the task's default) and multiply-adds;
//! - the engine's single-image time on the session a lone request runs on (a prepared input tensor);
//! - a lone request's in-process time, decoding and post-processing included (the JPEGs of `--images` in turn);
//! - the engine's throughput with the server's sessions, at the variant's largest batch (up to 4).
//!
//! Prints a markdown table and writes the figures as JSON for the plot (`bench/plot_tradeoff.py`).
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mobilenet_bench::{bare, load, machine};
use mobilenet_serve::{config::Config, engine, repository::Repository};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "mobilenet-tradeoff",
    about = "Quality against latency for every variant, on this machine"
)]
struct Args {
    #[arg(long, env = "MODEL_REPOSITORY", default_value = "models/repository")]
    model_repository: PathBuf,
    /// The JPEGs fed to the variants, in turn.
    #[arg(long, env = "TEST_IMAGES", default_value = "../shared/images")]
    images: PathBuf,
    /// Seconds per measurement (three per variant).
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Where the figures go as JSON, for the plot.
    #[arg(long, default_value = "bench/results/tradeoff.json")]
    json_out: PathBuf,
    /// libonnxruntime.so (the server reads the same variable).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_dylib: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = machine::describe();
    let repo = args.model_repository.to_string_lossy().into_owned();
    // The server's defaults decide each variant's sessions and threads, as `make run` would serve it.
    let config = Config::try_parse_from(["mobilenet-serve", "--model-repository", &repo])?;
    mobilenet_serve::malloc::limit_arenas(config.malloc_arenas)?;
    let repository = Repository::load(&args.model_repository, &[])
        .with_context(|| format!("model repository {repo} (run `make models`)"))?;
    let images = load::read_jpegs(&args.images)?;
    let env = engine::environment(args.ort_dylib.as_deref())?;
    let duration = Duration::from_secs_f64(args.seconds);

    let mut rows = Vec::new();
    for variant in repository.variants {
        let c = variant.config.clone();
        eprintln!("{}", c.name);
        let (mut pipeline, knobs) = bare::Bare::open_as_served(&env, variant, &config)?;
        let engine_single = pipeline.measure_engine_single(&images, duration)?;
        let request = pipeline.measure_sequential(&images, duration)?;
        let batch = knobs.max_batch_size.clamp(1, 4);
        let throughput =
            pipeline.measure_engine(bare::Layout::Instances, &images, batch, duration)?;
        rows.push(json!({
            "name": c.name,
            "task": c.task.as_str(),
            "width": c.attributes.width,
            "resolution": c.attributes.resolution,
            "precision": c.attributes.precision,
            "multiply_adds": c.attributes.multiply_adds,
            "quality": c.quality,
            "engine_single_ms": engine_single.per_batch.p50(),
            "request_ms": request.per_batch.p50(),
            "engine_images_per_s": throughput.images_per_s,
            "engine_batch": batch,
            "sessions": knobs.instances,
        }));
    }

    println!(
        "Measured {machine}; {:.1} s per figure; JPEGs of {}.\n",
        args.seconds,
        args.images.display()
    );
    println!(
        "| variant | quality | MAdds | engine, 1 image (ms) | request in-process, 1 image (ms) | engine img/s (sessions x batch) |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let quality = match r["quality"].as_object() {
            Some(q) => format!("{} {}", q["value"], q["metric"].as_str().unwrap_or("")),
            None => "-".into(),
        };
        println!(
            "| {} | {quality} | {:.0}M | {:.2} | {:.2} | {:.1} ({} x {}) |",
            r["name"].as_str().unwrap_or(""),
            r["multiply_adds"].as_f64().unwrap_or(0.0) / 1e6,
            r["engine_single_ms"].as_f64().unwrap_or(0.0),
            r["request_ms"].as_f64().unwrap_or(0.0),
            r["engine_images_per_s"].as_f64().unwrap_or(0.0),
            r["sessions"],
            r["engine_batch"],
        );
    }
    if let Some(dir) = args.json_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let document = json!({ "machine": machine, "seconds": args.seconds, "variants": rows });
    std::fs::write(&args.json_out, serde_json::to_vec_pretty(&document)?)
        .with_context(|| format!("writing {}", args.json_out.display()))?;
    eprintln!("figures: {}", args.json_out.display());
    Ok(())
}
