//! Inputs that crashed or hung a fuzz target (fuzz/, docs/fuzzing.md), replayed by every `cargo test`.
//!
//! Each file under `tests/data/fuzz/decode/` must be prepared or refused with a 4xx, without a panic or an
//! abort, for every model input the decode target uses. A new finding becomes a test by adding its file.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use mobilenet_serve::{
    imaging::{self, ImageLimits},
    repository::{InputDtype, InputSpec, Layout, ResizeMode},
};

/// A fixed finding answers well within this (the 1 x 39,000,000 PNG took 7.5 s before it was refused by its
/// shape).
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

fn replay(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    for spec in specs() {
        let start = Instant::now();
        match imaging::prepare_checked(&bytes, &spec, &ImageLimits::default()) {
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

/// Both findings so far (docs/fuzzing.md): a 39,000,000 x 1 PNG whose resize aborted the process on a
/// 26 GB allocation, and a 1 x 39,000,000 PNG that took 7.5 s; both are now refused from their header.
#[test]
fn findings_stay_fixed() {
    let files = findings();
    assert!(!files.is_empty(), "no findings to replay");
    for path in &files {
        replay(path);
    }
}
