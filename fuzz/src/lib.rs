//! Shared by the fuzz targets in `src/bin/` (one per attack surface; docs/fuzzing.md lists them).
//!
//! A target fails (AFL records a crash) on a panic, an abort such as a failed allocation, or a broken
//! invariant checked here: hostile input may be refused, but only as the client's fault, and what is
//! accepted is in range.
use mobilenet_serve::{
    error::Error, options::RequestOptions, postprocess::TaskOptions, repository::Task,
};

/// A refusal must be a 4xx: a 5xx for bad input would page an operator for a client's mistake, and would
/// hide a real server fault behind the same status.
pub fn assert_client_error(error: &Error) {
    let status = error.parts().status;
    assert!(
        status.is_client_error(),
        "input refused with {status} instead of a 4xx: {error}"
    );
}

/// Accepted options are in range: they size buffers and loops after the model has run, and pick a variant.
pub fn assert_valid(task: Task, options: &RequestOptions) {
    let s = &options.selector;
    assert!(s.width.is_none_or(|w| w.is_finite() && w > 0.0), "{s:?}");
    assert_ne!(s.resolution, Some(0));
    assert!(s.model.as_ref().is_none_or(|m| !m.is_empty()), "{s:?}");
    // A latency budget only with model=auto, and within 1 ms..10 min.
    assert!(
        s.latency_budget
            .is_none_or(|b| s.is_auto() && (1..=600_000).contains(&b.as_millis())),
        "{s:?}"
    );
    // A dataset is a short name of letters, digits, _ and -; it is echoed in the error that names it.
    assert!(
        s.dataset.as_deref().is_none_or(|d| !d.is_empty()
            && d.len() <= 64
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')),
        "{s:?}"
    );
    let precision = s.precision.as_deref().map(str::to_ascii_lowercase);
    assert!(
        matches!(precision.as_deref(), None | Some("float32" | "int8")),
        "{s:?}"
    );
    match (task, options.task) {
        (Task::Classification, TaskOptions::Classify { top_k }) => {
            assert!((1..=1000).contains(&top_k))
        }
        (
            Task::Detection,
            TaskOptions::Detect {
                score_threshold,
                iou_threshold,
                max_detections,
            },
        ) => {
            assert!((0.0..=1.0).contains(&score_threshold));
            assert!((0.0..=1.0).contains(&iou_threshold));
            assert!((1..=1000).contains(&max_detections));
        }
        (Task::Segmentation, TaskOptions::Segment) => {}
        (task, other) => panic!("the {task:?} endpoint answered with {other:?}"),
    }
    assert!(!options.png || task == Task::Segmentation);
}
