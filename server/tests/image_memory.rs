//! The decode memory estimate (`imaging::cost`) is an upper bound of what preparing an image really takes,
//! for the shapes and formats that cost the most per byte sent: 16-bit RGBA PNG, a progressive JPEG (its
//! coefficients), a grey PNG (converted to RGB), an extreme-aspect PNG at the side and aspect limits (the
//! resizer's buffers), a BMP. For each, the process's peak RSS is reset (`/proc/self/clear_refs`), the image
//! prepared for a 224 and a 513 model, and the growth of the peak compared with the estimate.
//!
//! One test function, so that nothing else in this process allocates meanwhile. Large blocks are mapped
//! fresh and, before each image, the allocator returns its free memory to the system (`malloc_trim`), so the
//! growth is this image's alone; the growth must be at least half the decoded RGB image (the progressive
//! JPEG's coefficients count for it when the JPEG is decoded at a reduced scale), or the measurement itself
//! is broken.
use std::io::Cursor;

use mobilenet_serve::{
    imaging::{self, ImageLimits},
    repository::{InputDtype, InputSpec, Layout, ResizeMode},
};

fn spec(side: u32, resize: ResizeMode) -> InputSpec {
    InputSpec {
        name: "x".into(),
        layout: Layout::Nhwc,
        dtype: InputDtype::Float32,
        height: side,
        width: side,
        mean: [127.5; 3],
        std: [127.5; 3],
        resize,
    }
}

fn encoded(format: image::ImageFormat, image: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// (VmRSS, VmHWM) in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn the_estimate_bounds_the_real_peak() {
    use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};
    // Every block over 128 KiB is its own mapping, so each image's buffers are fresh pages that the peak
    // counts. With glibc's dynamic threshold (raised as large blocks are freed) a later image's 27 MB buffer
    // came from heap pages an earlier one left resident, and its growth read under 1 MB.
    // SAFETY: mallopt only changes the allocator's policy for blocks allocated from now on.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "PNG RGBA 16-bit 3000x3000",
            encoded(
                image::ImageFormat::Png,
                DynamicImage::ImageRgba16(ImageBuffer::from_pixel(3000, 3000, Rgba([9u16; 4]))),
            ),
        ),
        (
            "progressive JPEG 4000x3000",
            include_bytes!("data/progressive_12mp.jpg").to_vec(),
        ),
        (
            "PNG grey 6000x6000",
            encoded(
                image::ImageFormat::Png,
                DynamicImage::ImageLuma8(ImageBuffer::from_pixel(6000, 6000, Luma([9u8]))),
            ),
        ),
        (
            "PNG RGB 32768x1024",
            encoded(
                image::ImageFormat::Png,
                DynamicImage::ImageRgb8(ImageBuffer::from_pixel(32768, 1024, Rgb([9u8; 3]))),
            ),
        ),
        (
            "BMP 3000x3000",
            encoded(
                image::ImageFormat::Bmp,
                DynamicImage::ImageRgb8(ImageBuffer::from_pixel(3000, 3000, Rgb([9u8; 3]))),
            ),
        ),
    ];
    let limits = ImageLimits::default();
    let mut failures = Vec::new();
    println!("| image | model input | estimate MiB | peak growth MiB | estimate / growth |");
    for (name, bytes) in &cases {
        for spec in [
            spec(224, ResizeMode::CenterCrop),
            spec(513, ResizeMode::Stretch),
        ] {
            let inspection = imaging::inspect(bytes, &spec, &limits).unwrap();
            let rgb = inspection.header.pixels() * 3;
            // SAFETY: malloc_trim only releases free memory of glibc's heap.
            unsafe { libc::malloc_trim(0) };
            std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
            let (before, _) = rss();
            let prepared = imaging::prepare(bytes, &inspection, &spec).unwrap();
            let (_, peak) = rss();
            drop(prepared);
            let growth = peak.saturating_sub(before);
            let mib = |b: u64| b as f64 / f64::from(1 << 20);
            println!(
                "| {name} | {} | {:.1} | {:.1} | {:.2} |",
                spec.width,
                mib(inspection.memory_bytes),
                mib(growth),
                inspection.memory_bytes as f64 / growth.max(1) as f64
            );
            if growth < rgb / 2 {
                failures.push(format!(
                    "{name} at {}: grew {growth} B, less than half its {rgb} B of RGB: not measured",
                    spec.width
                ));
            }
            if growth > inspection.memory_bytes {
                failures.push(format!(
                    "{name} at {}: grew {growth} B, estimated {}",
                    spec.width, inspection.memory_bytes
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
