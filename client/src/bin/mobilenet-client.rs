//! `mobilenet-client`: classify, detect or segment images with a mobilenet-serve server, and list its models.
//!
//! Each image of a folder is sent in turn; one failing image is reported and the others still run (the exit
//! status is 1 if any failed). Errors from the server are printed with the server's status and message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mobilenet_client::{
    ClassifyOptions, Client, ClientError, DetectOptions, Protocol, Selector, inputs, mask, output,
    overlay,
};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "mobilenet-client",
    version,
    about = "Client for mobilenet-serve (gRPC and HTTP)"
)]
struct Cli {
    /// Wire protocol to use.
    #[arg(
        long,
        value_enum,
        default_value = "grpc",
        global = true,
        env = "MOBILENET_PROTOCOL"
    )]
    protocol: Protocol,
    /// Server URL; defaults to http://127.0.0.1:50051 for gRPC and http://127.0.0.1:8080 for HTTP.
    #[arg(long, global = true, env = "MOBILENET_SERVER")]
    server: Option<String>,
    /// How to print results.
    #[arg(long, value_enum, default_value = "table", global = true)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Classify an image or every image of a folder (ImageNet classes).
    Classify {
        #[command(flatten)]
        input: Input,
        /// How many classes to return.
        #[arg(long)]
        top_k: Option<u32>,
    },
    /// Detect objects (COCO classes) in an image or every image of a folder.
    Detect {
        #[command(flatten)]
        input: Input,
        #[arg(long)]
        score_threshold: Option<f32>,
        #[arg(long)]
        iou_threshold: Option<f32>,
        #[arg(long)]
        max_detections: Option<u32>,
        /// Write the image with boxes and labels drawn on (format from the extension; for a folder input, a
        /// folder that receives <name>.png per image).
        #[arg(long)]
        overlay_out: Option<PathBuf>,
    },
    /// Segment an image or every image of a folder (PASCAL VOC classes).
    Segment {
        #[command(flatten)]
        input: Input,
        /// Write the class map as an indexed PNG (pixel value = class index, VOC palette); for a folder input,
        /// a folder that receives <name>.png per image.
        #[arg(long)]
        mask_out: Option<PathBuf>,
    },
    /// List the models the server serves.
    Models,
}

#[derive(Args)]
struct Input {
    /// An image file (JPEG, PNG, BMP) or a folder of them.
    path: PathBuf,
    /// Variant name, e.g. mobilenet_v2_1.0_224_int8; overrides the attributes below.
    #[arg(long)]
    model: Option<String>,
    /// Width multiplier, e.g. 1.0 or 0.5.
    #[arg(long)]
    width: Option<f32>,
    /// Network input side in pixels, e.g. 224.
    #[arg(long)]
    resolution: Option<u32>,
    /// float32 or int8.
    #[arg(long)]
    precision: Option<String>,
    /// The label set: imagenet (the default classifiers'), inat_birds, inat_insects, coco, pascal_voc.
    #[arg(long)]
    dataset: Option<String>,
    /// With `--model auto`: the time (ms) each answer should take; the server picks the best variant that
    /// fits it now, or refuses at once.
    #[arg(long)]
    latency_budget_ms: Option<u32>,
}

impl Input {
    fn selector(&self) -> Selector {
        Selector {
            model: self.model.clone(),
            width: self.width,
            resolution: self.resolution,
            precision: self.precision.clone(),
            dataset: self.dataset.clone(),
            latency_budget_ms: self.latency_budget_ms,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // The reader left (`| head`): what it wanted was printed, as with any Unix tool.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout. Unlike `print!`, which panics when the reader has closed the pipe, a closed pipe
/// comes back as an error, which `main` takes as the end of the run.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Returns whether every image succeeded; `Err` is for failures that stop the whole run.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let client = Client::connect(cli.protocol, cli.server.as_deref()).await?;
    let command = cli.command;
    if let Command::Models = command {
        let models = client.models().await?;
        match cli.output {
            OutputFormat::Table => emit(&output::models(&models))?,
            OutputFormat::Json => emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(&json!({ "models": models }))?
            ))?,
        }
        return Ok(true);
    }
    let input = match &command {
        Command::Classify { input, .. }
        | Command::Detect { input, .. }
        | Command::Segment { input, .. } => input,
        Command::Models => unreachable!("handled above"),
    };
    let files = inputs::collect(&input.path)
        .with_context(|| format!("cannot read {}", input.path.display()))?;
    let many = input.path.is_dir();
    if files.is_empty() {
        anyhow::bail!("no JPEG, PNG or BMP files in {}", input.path.display());
    }
    let out_dir = match &command {
        Command::Detect { overlay_out: o, .. } | Command::Segment { mask_out: o, .. } => o.as_ref(),
        _ => None,
    };
    if let (Some(dir), true) = (out_dir, many) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let mut all_ok = true;
    let mut json_results = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        let outcome = one_image(&client, &command, input, file, many).await;
        match (outcome, cli.output) {
            (Ok((text, _)), OutputFormat::Table) => emit(&text)?,
            (Ok((_, value)), OutputFormat::Json) => {
                json_results.push(json!({ "file": name, "result": value }))
            }
            (Err(e), format) => {
                all_ok = false;
                eprintln!("error: {name}: {e:#}");
                if format == OutputFormat::Json {
                    json_results.push(json!({ "file": name, "error": error_json(&e) }));
                }
            }
        }
    }
    if cli.output == OutputFormat::Json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&json_results)?
        ))?;
    }
    Ok(all_ok)
}

/// Sends one image; returns its table text and its JSON value, after writing any requested image output.
async fn one_image(
    client: &Client,
    command: &Command,
    input: &Input,
    file: &Path,
    many: bool,
) -> anyhow::Result<(String, Value)> {
    let image = tokio::fs::read(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    let selector = input.selector();
    match command {
        Command::Classify { top_k, .. } => {
            let r = client
                .classify(image, &selector, &ClassifyOptions { top_k: *top_k })
                .await?;
            Ok((output::classify(&name, &r), serde_json::to_value(&r)?))
        }
        Command::Detect {
            score_threshold,
            iou_threshold,
            max_detections,
            overlay_out,
            ..
        } => {
            let options = DetectOptions {
                score_threshold: *score_threshold,
                iou_threshold: *iou_threshold,
                max_detections: *max_detections,
            };
            // The image is needed again for the overlay; keep a copy only then.
            let keep = overlay_out.as_ref().map(|_| image.clone());
            let r = client.detect(image, &selector, &options).await?;
            if let (Some(out), Some(bytes)) = (overlay_out, keep) {
                let path = inputs::output_path(out, file, many);
                let mut rgb = image::load_from_memory(&bytes)
                    .with_context(|| {
                        format!("cannot decode {} locally for the overlay", file.display())
                    })?
                    .to_rgb8();
                overlay::draw_detections(&mut rgb, &r.detections);
                rgb.save(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            Ok((output::detect(&name, &r), serde_json::to_value(&r)?))
        }
        Command::Segment { mask_out, .. } => {
            let r = client.segment(image, &selector).await?;
            if let Some(out) = mask_out {
                let path = inputs::output_path(out, file, many);
                let png = mask::encode_png(&mask::decode_rle(&r.mask)?)?;
                std::fs::write(&path, png)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            Ok((output::segment(&name, &r), serde_json::to_value(&r)?))
        }
        Command::Models => unreachable!("models takes no input"),
    }
}

fn error_json(e: &anyhow::Error) -> Value {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Server {
            status,
            kind,
            message,
        }) => {
            json!({ "status": status.to_string(), "kind": kind, "message": message })
        }
        _ => json!({ "message": format!("{e:#}") }),
    }
}
