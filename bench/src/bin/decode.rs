//! `mobilenet-decode-bench` (`make decode-bench`): the time to turn each JPEG of `--images` into a model's
//! input, one thread, for the decoders the server has had: the `image` crate's (zune-jpeg, decode only, as
//! the server used until issue 15), and the server's own pre-processing (`imaging::prepare`: libjpeg-turbo,
//! resize, tensor) with a full decode and with the scaled decode. Prints a markdown table of medians.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mobilenet_bench::{load, machine};
use mobilenet_serve::{
    imaging::{self, ImageLimits},
    repository::{InputDtype, InputSpec, Layout, ResizeMode},
};

#[derive(Parser)]
#[command(
    name = "mobilenet-decode-bench",
    about = "JPEG decode and pre-processing time per image"
)]
struct Args {
    /// Every JPEG in it is measured.
    #[arg(long, env = "TEST_IMAGES", default_value = "../shared/images")]
    images: PathBuf,
    /// Model input sides to prepare for.
    #[arg(long, value_delimiter = ',', default_value = "224,513")]
    sides: Vec<u32>,
    /// Seconds measured per case.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

/// The median time of `f`, run repeatedly for about `budget` (at least 5 times).
fn median_time(budget: Duration, mut f: impl FnMut()) -> Duration {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// A float NHWC input of `side` (the classifiers' kind), stretched.
fn spec(side: u32) -> InputSpec {
    InputSpec {
        name: "input".into(),
        layout: Layout::Nhwc,
        dtype: InputDtype::Float32,
        height: side,
        width: side,
        mean: [127.5; 3],
        std: [127.5; 3],
        resize: ResizeMode::Stretch,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let budget = Duration::from_secs_f64(args.seconds);
    let paths = load::jpeg_paths(&args.images)?;
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    println!(
        "Measured {}; one thread, median of repeated runs, milliseconds.\n",
        machine::describe()
    );
    println!(
        "| image | size | zune-jpeg decode | side | prepare, full decode | prepare, scaled decode | scaled / full |"
    );
    println!("|---|---|---|---|---|---|---|");
    for path in &paths {
        let bytes = std::fs::read(path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
            .with_context(|| format!("decoding {name}"))?;
        let size = format!("{}x{}", decoded.width(), decoded.height());
        let zune = median_time(budget, || {
            let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg);
            std::hint::black_box(image.map(|i| i.into_rgb8()).ok());
        });
        for &side in &args.sides {
            let spec = spec(side);
            let mut times = [Duration::ZERO; 2];
            for (slot, scaled_jpeg_decode) in times.iter_mut().zip([false, true]) {
                let limits = ImageLimits {
                    scaled_jpeg_decode,
                    ..ImageLimits::default()
                };
                imaging::prepare_checked(&bytes, &spec, &limits)
                    .with_context(|| format!("preparing {name}"))?;
                *slot = median_time(budget, || {
                    std::hint::black_box(imaging::prepare_checked(&bytes, &spec, &limits).ok());
                });
            }
            println!(
                "| {name} | {size} | {} | {side} | {} | {} | {:.2} |",
                ms(zune),
                ms(times[0]),
                ms(times[1]),
                times[1].as_secs_f64() / times[0].as_secs_f64()
            );
        }
    }
    Ok(())
}
