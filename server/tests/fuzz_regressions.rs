//! Inputs that crashed or hung a fuzz target (fuzz/, docs/fuzzing.md), replayed by every `cargo test`.
//!
//! Each file under `tests/data/fuzz/decode/` must be prepared or refused with a 4xx, without a panic or an
//! abort, for every model input the decode target uses. A new finding becomes a test by adding its file.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use mobilenet_serve::{
    imaging,
    repository::{InputDtype, InputSpec, Layout, ResizeMode},
};

/// The server's default `--max-image-pixels`, as in the decode target.
const MAX_PIXELS: u64 = 40_000_000;

/// Findings not fixed yet, so that they do not take the test binary down (an abort ends the process):
/// `open_findings_are_fixed` runs them with `--ignored`. Remove a name when its fix lands (issue 14, part 1:
/// decode memory bounds).
const OPEN: &[&str] = &[
    // Stretch to 224x224 allocates fast_image_resize's intermediate image of 39e6 x 224 RGB pixels:
    // "memory allocation of 26208000003 bytes failed", then abort.
    "png_39000000x1.png",
    // Served, but decoding and resizing 39 million one-pixel rows takes seconds (7.5 s in release).
    "png_1x39000000.png",
];

/// A finding that is fixed answers well within this; the open slow one takes tens of seconds.
const TIME_LIMIT: Duration = Duration::from_secs(5);

/// The decode target's model inputs (fuzz/src/bin/decode.rs); every input is replayed with each of them.
fn specs() -> Vec<InputSpec> {
    use {InputDtype::*, Layout::*, ResizeMode::*};
    let spec = |layout, dtype, side, resize, mean| InputSpec {
        name: "input".into(),
        layout,
        dtype,
        height: side,
        width: side,
        mean: [mean; 3],
        std: [127.5; 3],
        resize,
    };
    vec![
        spec(Nhwc, Uint8, 224, Stretch, 0.0),
        spec(Nhwc, Float32, 257, Stretch, 127.5),
        spec(Nchw, Float32, 224, CenterCrop, 127.5),
        spec(Nhwc, Uint8, 300, CenterCrop, 0.0),
    ]
}

fn findings() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/decode");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn is_open(path: &std::path::Path) -> bool {
    OPEN.iter().any(|name| path.ends_with(name))
}

fn replay(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    for spec in specs() {
        let start = Instant::now();
        match imaging::prepare(&bytes, &spec, MAX_PIXELS) {
            Ok(prepared) => {
                assert_eq!(prepared.data.len(), 3 * (spec.width * spec.height) as usize)
            }
            Err(error) => assert!(
                error.parts().status.is_client_error(),
                "{}: refused with {}: {error}",
                path.display(),
                error.parts().status
            ),
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed < TIME_LIMIT,
            "{} ({spec:?}) took {elapsed:?}",
            path.display()
        );
    }
}

#[test]
fn fixed_findings_stay_fixed() {
    for path in findings().iter().filter(|p| !is_open(p)) {
        replay(path);
    }
}

#[test]
#[ignore = "open findings of the decode target abort or take tens of seconds until issue 14 part 1 lands"]
fn open_findings_are_fixed() {
    for path in findings().iter().filter(|p| is_open(p)) {
        replay(path);
    }
}

#[test]
fn every_open_finding_has_its_file() {
    let files = findings();
    for name in OPEN {
        assert!(
            files.iter().any(|p| p.ends_with(name)),
            "{name} is listed as open but missing"
        );
    }
}
