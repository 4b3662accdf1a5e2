//! Pre-processing fidelity: the server's resized pixels against the reference pipeline's (Pillow's full decode,
//! `convert("RGB")`, `resize(BILINEAR)`), which the upstream reference outputs were computed on. The reference
//! files are written by `models/preprocess_reference.py` (`make test` runs it first) for every test image and
//! every input side of the repository.
//!
//! Prints, per image and side, the mean absolute difference and the share of values more than 1 and 2 levels
//! apart, for a full decode and for the scaled JPEG decode (`--jpeg-scaled-decode`, the default). Fails when
//! more than 1% of all values of the full decode are more than 1 level apart (issue 15's goal). The scaled
//! decode is not the reference's pipeline and is only reported here; the reference tests hold it to the
//! upstream answers.
mod common;

use std::path::PathBuf;

use mobilenet_serve::{
    imaging::{self, ImageLimits, InputData},
    repository::{InputDtype, InputSpec, Layout, ResizeMode},
};

fn reference_dir() -> PathBuf {
    std::env::var_os("PREPROCESS_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/preprocess-reference")
        })
}

/// The model input that is the resized RGB8 image itself: NHWC, uint8, no normalisation.
fn raw_input(side: u32) -> InputSpec {
    InputSpec {
        name: "input".into(),
        layout: Layout::Nhwc,
        dtype: InputDtype::Uint8,
        height: side,
        width: side,
        mean: [0.0; 3],
        std: [1.0; 3],
        resize: ResizeMode::Stretch,
    }
}

#[derive(Default)]
struct Difference {
    values: u64,
    sum: u64,
    over_1: u64,
    over_2: u64,
    max: u8,
}

impl Difference {
    fn add(&mut self, ours: &[u8], reference: &[u8]) {
        for (&a, &b) in ours.iter().zip(reference) {
            let d = a.abs_diff(b);
            self.values += 1;
            self.sum += u64::from(d);
            self.over_1 += u64::from(d > 1);
            self.over_2 += u64::from(d > 2);
            self.max = self.max.max(d);
        }
    }

    fn share(count: u64, of: u64) -> f64 {
        100.0 * count as f64 / of.max(1) as f64
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.3} | {:.2}% | {:.2}% | {} |",
            self.sum as f64 / self.values.max(1) as f64,
            Difference::share(self.over_1, self.values),
            Difference::share(self.over_2, self.values),
            self.max
        )
    }
}

/// Every reference file: (image, side, path), sorted.
fn references() -> Vec<(String, u32, PathBuf)> {
    let dir = reference_dir();
    let mut references: Vec<(String, u32, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run models/preprocess_reference.py", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let stem = path
                .file_name()?
                .to_str()?
                .strip_suffix(".rgb")?
                .to_string();
            let (image, side) = stem.rsplit_once('_')?;
            Some((image.to_string(), side.parse().ok()?, path))
        })
        .collect();
    references.sort();
    assert!(
        !references.is_empty(),
        "no reference files in {}",
        dir.display()
    );
    references
}

/// Prints the table for one decode mode and gives the difference over every value.
fn compare(scaled_jpeg_decode: bool) -> Difference {
    let limits = ImageLimits {
        scaled_jpeg_decode,
        ..ImageLimits::default()
    };
    let mut total = Difference::default();
    let mut rows = Vec::new();
    for (image, side, path) in &references() {
        let bytes = common::image(image);
        let prepared = imaging::prepare_checked(&bytes, &raw_input(*side), &limits)
            .unwrap_or_else(|e| panic!("{image}: {e}"));
        let InputData::U8(ours) = prepared.data else {
            panic!("a uint8 input gives uint8 data");
        };
        let reference = std::fs::read(path).unwrap();
        assert_eq!(ours.len(), reference.len(), "{image} at {side}");
        let mut diff = Difference::default();
        diff.add(&ours, &reference);
        total.add(&ours, &reference);
        rows.push(diff.row(&format!("{image} {side}")));
    }
    let mode = if scaled_jpeg_decode {
        "scaled JPEG decode"
    } else {
        "full decode"
    };
    println!("\n{mode}\n\n| image, side | mean abs diff | > 1 level | > 2 levels | max |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!("{}", total.row("all"));
    total
}

#[test]
fn resized_pixels_match_pillow() {
    let full = compare(false);
    compare(true);
    let over_1 = Difference::share(full.over_1, full.values);
    assert!(
        over_1 <= 1.0,
        "{over_1:.2}% of values more than 1 level from Pillow's (goal: at most 1%)"
    );
}
