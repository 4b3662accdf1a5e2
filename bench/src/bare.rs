//! The bare pipeline: what the server does per image, with no server around it. Decode + resize + normalise
//! ([`imaging::prepare`]), one ONNX Runtime run of the batch on a session built by the server's own
//! [`instance::build_session`] (same graph options, same intra-op threads, no spinning), and the server's
//! post-processing ([`postprocess::decode`], plus the class-map resize and RLE for segmentation).
//!
//! Two shapes of the same work:
//! - [`Bare::measure_sequential`]: one image after the other on one thread, the floor for one client's latency;
//! - [`Bare::measure_pipelined`]: as many decode threads as the server has (`--decode-threads`) feed batches
//!   to the session thread over a small bounded channel, so decoding overlaps inference as it does in the
//!   server. Its best batch size is the throughput the server is compared with.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use mobilenet_serve::batching::{Batch, ModelLoad};
use mobilenet_serve::engine::instance::{self, Context};
use mobilenet_serve::imaging::{self, InputData, Prepared};
use mobilenet_serve::options;
use mobilenet_serve::postprocess::{self, Decoded, TaskOptions, segment};
use mobilenet_serve::repository::{Task, Variant};
use ort::environment::Environment;
use ort::session::Session;

use crate::stats::Samples;

pub struct Bare {
    variant: Arc<Variant>,
    session: Session,
    options: TaskOptions,
    max_pixels: u64,
}

/// Throughput at one batch size, and the time of each batch.
pub struct BatchRun {
    pub batch_size: usize,
    pub images_per_s: f64,
    pub per_batch: Samples,
}

impl Bare {
    pub fn open(
        env: &Environment,
        variant: Variant,
        intra_op_threads: usize,
        max_pixels: u64,
    ) -> anyhow::Result<Bare> {
        // The server's builder takes the model thread's context; the queue it holds is never read here.
        let (_unused, batches) = tokio::sync::mpsc::channel::<Batch>(1);
        let context = Context {
            env: env.clone(),
            variant: Arc::new(variant),
            intra_op_threads,
            max_batch_size: 1,
            batches: Arc::new(Mutex::new(batches)),
            load: ModelLoad::new(1),
        };
        let session = instance::build_session(&context)?;
        // The server's defaults for requests that set no options (README), so both do the same work.
        let options = match context.variant.config.task {
            Task::Classification => options::classify(None)?,
            Task::Detection => options::detect(None, None, None)?,
            Task::Segmentation => TaskOptions::Segment,
        };
        Ok(Bare {
            variant: context.variant,
            session,
            options,
            max_pixels,
        })
    }

    /// Runs prepared images as one batch: ORT, then the server's post-processing of each image.
    fn infer(&mut self, prepared: &[Prepared]) -> anyhow::Result<()> {
        let inputs: Vec<&InputData> = prepared.iter().map(|p| &p.data).collect();
        let output_spec = &self.variant.config.output;
        let outputs = instance::run_session(&mut self.session, &self.variant, &inputs)
            .map_err(|e| anyhow!(e))?;
        let rows =
            instance::collect_rows(&outputs, output_spec, inputs.len()).map_err(|e| anyhow!(e))?;
        for (row, image) in rows.iter().zip(prepared) {
            match postprocess::decode(output_spec, &self.variant.labels, row, self.options)? {
                Decoded::ClassMap(map) => {
                    let full = segment::resize_nearest(&map, image.width, image.height);
                    black_box(segment::fractions(&full.classes));
                    black_box(segment::run_length(&full.classes));
                }
                other => {
                    black_box(other);
                }
            }
        }
        Ok(())
    }

    fn prepare(&self, bytes: &[u8]) -> anyhow::Result<Prepared> {
        Ok(imaging::prepare(
            bytes,
            &self.variant.config.input,
            self.max_pixels,
        )?)
    }

    /// One image at a time, decode then inference, for about `duration` (after one untimed image).
    pub fn measure_sequential(
        &mut self,
        images: &[Vec<u8>],
        duration: Duration,
    ) -> anyhow::Result<BatchRun> {
        let one = |bare: &mut Bare, i: usize| -> anyhow::Result<()> {
            let prepared = bare.prepare(&images[i % images.len()])?;
            bare.infer(&[prepared])
        };
        one(self, 0)?;
        let mut per_batch = Samples::default();
        let start = Instant::now();
        let mut i = 1;
        while start.elapsed() < duration || per_batch.len() < 3 {
            let t = Instant::now();
            one(self, i)?;
            per_batch.push(t.elapsed());
            i += 1;
        }
        let images_per_s = per_batch.len() as f64 / start.elapsed().as_secs_f64();
        Ok(BatchRun {
            batch_size: 1,
            images_per_s,
            per_batch,
        })
    }

    /// `decoders` threads prepare images (cycling through `images`) into a bounded channel; this thread runs
    /// them in batches of `batch_size` for about `duration`, after one untimed batch.
    pub fn measure_pipelined(
        &mut self,
        images: &[Vec<u8>],
        batch_size: usize,
        decoders: usize,
        duration: Duration,
    ) -> anyhow::Result<BatchRun> {
        let stop = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        let variant = self.variant.clone();
        let max_pixels = self.max_pixels;
        std::thread::scope(|scope| {
            // Room for the batch being formed and the next one: decoding stays ahead without piling up.
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<anyhow::Result<Prepared>>(2 * batch_size);
            for _ in 0..decoders.max(1) {
                let (tx, stop, next, variant) = (tx.clone(), &stop, &next, &variant);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let prepared = imaging::prepare(
                            &images[i % images.len()],
                            &variant.config.input,
                            max_pixels,
                        )
                        .map_err(anyhow::Error::from);
                        if tx.send(prepared).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let take = || -> anyhow::Result<Vec<Prepared>> {
                (0..batch_size)
                    .map(|_| rx.recv().map_err(|_| anyhow!("decode threads stopped"))?)
                    .collect()
            };
            let result = (|| {
                self.infer(&take()?)?;
                let mut per_batch = Samples::default();
                let start = Instant::now();
                while start.elapsed() < duration || per_batch.len() < 3 {
                    let batch = take()?;
                    let t = Instant::now();
                    self.infer(&batch)?;
                    per_batch.push(t.elapsed());
                }
                let images_per_s =
                    (per_batch.len() * batch_size) as f64 / start.elapsed().as_secs_f64();
                Ok(BatchRun {
                    batch_size,
                    images_per_s,
                    per_batch,
                })
            })();
            // Unblock decoders waiting on a full channel, then let the scope join them.
            stop.store(true, Ordering::Relaxed);
            drop(rx);
            result
        })
    }
}
