//! Closed-loop load over the real client library: `concurrency` workers, each sending its next request as
//! soon as the previous answer arrives, so the server is kept saturated without an unbounded backlog.
//! Only requests that complete inside the measured window (after a warm-up) count.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use mobilenet_client::{ClassifyOptions, Client, DetectOptions, Selector};
use mobilenet_serve::repository::Task;

use crate::stats::Samples;

pub struct LoadRun {
    pub images_per_s: f64,
    pub latency: Samples,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// One request of `task` to `model`, answered or failed.
async fn send(
    client: &Client,
    task: Task,
    selector: &Selector,
    image: Bytes,
) -> Result<(), String> {
    let result = match task {
        Task::Classification => client
            .classify(image, selector, &ClassifyOptions::default())
            .await
            .map(drop),
        Task::Detection => client
            .detect(image, selector, &DetectOptions::default())
            .await
            .map(drop),
        Task::Segmentation => client.segment(image, selector).await.map(drop),
    };
    result.map_err(|e| e.to_string())
}

pub async fn closed_loop(
    client: &Client,
    task: Task,
    model: &str,
    images: Arc<Vec<Bytes>>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> LoadRun {
    let selector = Selector {
        model: Some(model.to_owned()),
        ..Default::default()
    };
    let begin = Instant::now() + warmup;
    let end = begin + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (client, selector, images) = (client.clone(), selector.clone(), images.clone());
        workers.spawn(async move {
            let mut latency = Samples::default();
            let (mut errors, mut first_error) = (0, None);
            // Workers start at different images so that concurrent requests differ.
            let mut next = worker;
            while Instant::now() < end {
                let image = images[next % images.len()].clone();
                next += 1;
                let sent = Instant::now();
                let result = send(&client, task, &selector, image).await;
                let done = Instant::now();
                if sent < begin || done > end {
                    continue;
                }
                match result {
                    Ok(()) => latency.push(done - sent),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latency, errors, first_error)
        });
    }
    let mut run = LoadRun {
        images_per_s: 0.0,
        latency: Samples::default(),
        errors: 0,
        first_error: None,
    };
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((latency, errors, first_error)) => {
                run.latency.extend(latency);
                run.errors += errors;
                if run.first_error.is_none() {
                    run.first_error = first_error;
                }
            }
            Err(e) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert(format!("load worker failed: {e}"));
            }
        }
    }
    run.images_per_s = run.latency.len() as f64 / duration.as_secs_f64();
    run
}

/// Every JPEG of `dir`, in name order (the task asks for the JPEGs; BMPs would mostly measure memcpy).
pub fn read_jpegs(dir: &Path) -> anyhow::Result<Vec<Bytes>> {
    jpeg_paths(dir)?
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(Bytes::from)
                .with_context(|| format!("reading {}", p.display()))
        })
        .collect()
}

/// The paths of every JPEG of `dir`, in name order; an error if there is none.
pub fn jpeg_paths(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        })
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "no JPEG images in {}", dir.display());
    Ok(paths)
}
