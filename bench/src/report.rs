//! The benchmark's figures, and the markdown tables they are printed as (ready to paste into docs/performance.md).

use mobilenet_serve::config::ModelKnobs;
use mobilenet_serve::repository::Task;

use crate::bare::{BatchRun, Layout};
use crate::load::LoadRun;

pub struct ServerRun {
    pub protocol: &'static str,
    pub run: LoadRun,
    /// Requests per ORT batch during the run, from the server's `/metrics`.
    pub mean_batch: Option<f64>,
}

impl ServerRun {
    pub fn with_protocol(self, protocol: &'static str) -> Self {
        ServerRun { protocol, ..self }
    }
}

pub struct ModelReport {
    pub model: String,
    pub task: Task,
    pub instances: usize,
    pub intra_op_threads: usize,
    pub solo_intra_op_threads: usize,
    pub decode_threads: usize,
    /// One image at a time, decode then inference.
    /// One run per latency round.
    pub sequential: Vec<BatchRun>,
    /// Decoding overlapped with inference: every layout at every batch size, the exploration that picks the
    /// best bare configuration.
    pub bare: Vec<BatchRun>,
    /// The best configuration measured again in each round, right before that round's server runs: the
    /// figure the server is compared with, round by round.
    pub confirmed: Vec<BatchRun>,
    /// Every round over every protocol.
    pub saturated: Vec<ServerRun>,
    pub single: Vec<ServerRun>,
    /// The engine's limit in each round: the confirmed layout and batch size on tensors prepared in advance.
    pub engine: Vec<BatchRun>,
    /// One prepared image at a time on the lone request's session, one run per latency round.
    pub engine_single: Vec<BatchRun>,
}

/// The median of a case's rounds, and their range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` without values. With an even count the median is the mean of the middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let (first, last) = (*v.first()?, *v.last()?);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Spread {
            median,
            min: first,
            max: last,
        })
    }

    /// One measurement: its own median and range.
    fn single(value: f64) -> Spread {
        Spread {
            median: value,
            min: value,
            max: value,
        }
    }

    /// `175` for one round, `175 (168–180)` for several.
    fn show(&self, rounds: u32) -> String {
        if rounds > 1 {
            format!("{} ({}–{})", fmt(self.median), fmt(self.min), fmt(self.max))
        } else {
            fmt(self.median)
        }
    }
}

impl ModelReport {
    pub fn new(
        model: String,
        task: Task,
        knobs: &ModelKnobs,
        decode_threads: usize,
        sequential: Vec<BatchRun>,
    ) -> Self {
        ModelReport {
            model,
            task,
            instances: knobs.instances,
            intra_op_threads: knobs.intra_op_threads,
            solo_intra_op_threads: knobs.solo_intra_op_threads,
            decode_threads,
            sequential,
            bare: Vec::new(),
            confirmed: Vec::new(),
            saturated: Vec::new(),
            single: Vec::new(),
            engine: Vec::new(),
            engine_single: Vec::new(),
        }
    }

    /// Server over the engine's limit for `protocol`, round by round (each round's server run over that
    /// round's engine run).
    fn engine_ratio(&self, protocol: &str) -> Option<Spread> {
        let server = self.saturated.iter().filter(|s| s.protocol == protocol);
        Spread::of(
            server
                .zip(&self.engine)
                .map(|(s, e)| s.run.images_per_s / e.images_per_s),
        )
    }

    /// One client's p50 over `protocol` against the engine's single-image p50, latency round by round.
    fn engine_latency_ratio(&self, protocol: &str) -> Option<Spread> {
        let single = self.single.iter().filter(|s| s.protocol == protocol);
        Spread::of(
            single
                .zip(&self.engine_single)
                .map(|(s, e)| s.run.latency.p50() / e.per_batch.p50()),
        )
    }

    /// Issue 15's targets against the engine (throughput at least, one-client p50 at most), for the
    /// classifiers; the other tasks are reported without one.
    fn engine_targets(&self) -> Option<(f64, f64)> {
        (self.task == Task::Classification).then_some((0.85, 1.5))
    }

    /// The overlapped bare pipeline's rounds in `layout` at batch size `b`.
    fn bare_at(&self, layout: Layout, b: usize) -> Option<Spread> {
        Spread::of(
            self.bare
                .iter()
                .filter(|r| r.layout == layout && r.batch_size == b)
                .map(|r| r.images_per_s),
        )
    }

    fn batch_sizes(&self) -> Vec<usize> {
        sorted_unique(self.bare.iter().map(|b| b.batch_size))
    }

    fn layouts(&self) -> Vec<Layout> {
        let mut layouts: Vec<Layout> = Vec::new();
        for run in &self.bare {
            if !layouts.contains(&run.layout) {
                layouts.push(run.layout);
            }
        }
        layouts
    }

    /// The bare figure the server is held to: the best configuration's confirmation rounds when there are
    /// some, else the best case of the exploration, sequential included. Returns its throughput, how it ran,
    /// and its batch size.
    fn best(&self) -> (Spread, String, usize) {
        if let (Some(first), Some(spread)) = (
            self.confirmed.first(),
            Spread::of(self.confirmed.iter().map(|r| r.images_per_s)),
        ) {
            let how = format!("overlapped, {}", layout_name(first.layout));
            return (spread, how, first.batch_size);
        }
        let sequential = self.sequential_rate().unwrap_or(Spread::single(0.0));
        self.layouts()
            .into_iter()
            .flat_map(|layout| self.batch_sizes().into_iter().map(move |b| (layout, b)))
            .filter_map(|(layout, b)| {
                let how = format!("overlapped, {}", layout_name(layout));
                Some((self.bare_at(layout, b)?, how, b))
            })
            .max_by(|a, b| a.0.median.total_cmp(&b.0.median))
            .filter(|(s, _, _)| s.median >= sequential.median)
            .unwrap_or((sequential, "sequential".into(), 1))
    }

    /// How a layout's sessions are shaped, e.g. `2 × 1` or `solo 1 × 2`.
    fn layout_shape(&self, layout: Layout) -> String {
        match layout {
            Layout::Instances | Layout::InstancesInline => {
                format!("{} × {}", self.instances, self.intra_op_threads)
            }
            Layout::Solo => format!("solo 1 × {}", self.solo_intra_op_threads),
        }
    }

    /// The bare pipeline one image at a time: its throughput over the latency rounds.
    fn sequential_rate(&self) -> Option<Spread> {
        Spread::of(self.sequential.iter().map(|r| r.images_per_s))
    }

    /// One client over `protocol`: p50 and p99 over the latency rounds, and each round's p50 over that
    /// round's bare single-image p50.
    fn one_client(&self, protocol: &str) -> Option<(Spread, Spread, Spread)> {
        let runs: Vec<&LoadRun> = self
            .single
            .iter()
            .filter(|s| s.protocol == protocol)
            .map(|s| &s.run)
            .collect();
        let p50 = Spread::of(runs.iter().map(|r| r.latency.p50()))?;
        let p99 = Spread::of(runs.iter().map(|r| r.latency.p99()))?;
        let ratio = Spread::of(
            runs.iter()
                .zip(&self.sequential)
                .map(|(r, bare)| r.latency.p50() / bare.per_batch.p50()),
        )?;
        Some((p50, p99, ratio))
    }

    /// The saturated server's rounds over `protocol`: throughput and mean batch size.
    fn server(&self, protocol: &str) -> Option<(Spread, Option<Spread>)> {
        let runs = || self.saturated.iter().filter(|s| s.protocol == protocol);
        let throughput = Spread::of(runs().map(|s| s.run.images_per_s))?;
        Some((throughput, Spread::of(runs().filter_map(|s| s.mean_batch))))
    }

    /// Server over bare for `protocol`: each round's server run over that round's confirmation of the best
    /// bare configuration, so that the machine's drift between rounds cancels out. Without confirmation
    /// rounds, the ratio of the medians.
    fn ratio(&self, protocol: &str) -> Option<Spread> {
        let server: Vec<f64> = self
            .saturated
            .iter()
            .filter(|s| s.protocol == protocol)
            .map(|s| s.run.images_per_s)
            .collect();
        if !self.confirmed.is_empty() && self.confirmed.len() == server.len() {
            return Spread::of(
                server
                    .iter()
                    .zip(&self.confirmed)
                    .map(|(s, b)| s / b.images_per_s),
            );
        }
        let (best, _, _) = self.best();
        Some(Spread::single(Spread::of(server)?.median / best.median))
    }

    /// The throughput target: 0.90 of bare for classification, 0.85 for the heavier tasks.
    fn throughput_target(&self) -> f64 {
        match self.task {
            Task::Classification => 0.90,
            _ => 0.85,
        }
    }
}

/// The overlapped configuration (layout, batch size) with the highest median throughput over `runs`.
pub fn best_layout(runs: &[BatchRun]) -> Option<(Layout, usize)> {
    let mut configs: Vec<(Layout, usize)> = Vec::new();
    for run in runs {
        if !configs.contains(&(run.layout, run.batch_size)) {
            configs.push((run.layout, run.batch_size));
        }
    }
    let median = |(layout, b): (Layout, usize)| {
        Spread::of(
            runs.iter()
                .filter(|r| r.layout == layout && r.batch_size == b)
                .map(|r| r.images_per_s),
        )
        .map_or(f64::NAN, |s| s.median)
    };
    configs
        .into_iter()
        .max_by(|a, b| median(*a).total_cmp(&median(*b)))
}

pub fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Instances => "instances",
        Layout::Solo => "solo session",
        Layout::InstancesInline => "instances, inline decode",
    }
}

/// p50 at one client may be at most this multiple of the bare single-image time.
const LATENCY_TARGET: f64 = 1.15;

fn verdict(ratio: f64, ok: bool) -> String {
    if ratio.is_nan() {
        "-".into()
    } else if ok {
        format!("{ratio:.3}")
    } else {
        format!("**{ratio:.3}**")
    }
}

fn errors(run: &LoadRun) -> String {
    match &run.first_error {
        Some(e) if run.errors > 0 => format!(" ({} errors, first: {e})", run.errors),
        _ => String::new(),
    }
}

pub fn markdown(
    reports: &[ModelReport],
    concurrency: usize,
    images: usize,
    rounds: u32,
    explore_rounds: u32,
) -> String {
    let mut out = String::new();
    let of_rounds = if rounds > 1 {
        format!(
            ", median of {rounds} rounds (range); each round measures the best bare configuration again, \
             and each ratio is a round's server over that round's bare"
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "\n### Throughput at saturation ({concurrency} closed-loop clients, {images} JPEGs in turn{of_rounds})\n\n\
         | variant | best bare img/s | HTTP img/s | HTTP / bare | gRPC img/s | gRPC / bare | mean batch HTTP / gRPC | target |\n\
         |---|---|---|---|---|---|---|---|\n"
    ));
    let mut notes = Vec::new();
    for r in reports {
        let (best, how, batch) = r.best();
        let target = r.throughput_target();
        let mut cells = vec![format!("{} ({how}, batch {batch})", best.show(rounds))];
        let mut batches = Vec::new();
        for protocol in ["HTTP", "gRPC"] {
            let (Some((throughput, mean_batch)), Some(ratio)) =
                (r.server(protocol), r.ratio(protocol))
            else {
                continue;
            };
            cells.push(throughput.show(rounds));
            let range = if rounds > 1 {
                format!(" ({:.3}–{:.3})", ratio.min, ratio.max)
            } else {
                String::new()
            };
            cells.push(verdict(ratio.median, ratio.median >= target) + &range);
            batches.push(mean_batch.map_or("-".into(), |b| format!("{:.1}", b.median)));
        }
        for s in &r.saturated {
            if !errors(&s.run).is_empty() {
                notes.push(format!("{} {}{}", r.model, s.protocol, errors(&s.run)));
            }
        }
        out.push_str(&format!(
            "| {} | {} | {} | ≥ {target:.2} |\n",
            r.model,
            cells.join(" | "),
            batches.join(" / ")
        ));
    }
    let latency_rounds = reports
        .iter()
        .map(|r| r.sequential.len())
        .max()
        .unwrap_or(0);
    let of_latency_rounds = if latency_rounds > 1 {
        format!(
            ", median of {latency_rounds} rounds; each ratio is a round's p50 over that round's bare p50, \
             with the range of the rounds"
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "\n### Latency with one client (ms{of_latency_rounds})\n\n\
         | variant | bare 1 image p50 / p99 | HTTP p50 / p99 | HTTP p50 / bare | gRPC p50 / p99 | gRPC p50 / bare |\n\
         |---|---|---|---|---|---|\n"
    ));
    for r in reports {
        let bare_p50 = Spread::of(r.sequential.iter().map(|s| s.per_batch.p50()));
        let bare_p99 = Spread::of(r.sequential.iter().map(|s| s.per_batch.p99()));
        let (Some(bare_p50), Some(bare_p99)) = (bare_p50, bare_p99) else {
            continue;
        };
        let mut cells = vec![format!(
            "{} / {}",
            fmt(bare_p50.median),
            fmt(bare_p99.median)
        )];
        for protocol in ["HTTP", "gRPC"] {
            let Some((p50, p99, ratio)) = r.one_client(protocol) else {
                continue;
            };
            cells.push(format!("{} / {}", fmt(p50.median), fmt(p99.median)));
            let range = if latency_rounds > 1 {
                format!(" ({:.3}–{:.3})", ratio.min, ratio.max)
            } else {
                String::new()
            };
            cells.push(verdict(ratio.median, ratio.median <= LATENCY_TARGET) + &range);
        }
        for s in &r.single {
            if !errors(&s.run).is_empty() {
                notes.push(format!(
                    "{} {} single client{}",
                    r.model,
                    s.protocol,
                    errors(&s.run)
                ));
            }
        }
        out.push_str(&format!("| {} | {} |\n", r.model, cells.join(" | ")));
    }
    out.push_str(
        "\n### Against the engine's limit (the same sessions, layout and batch size on input tensors prepared in \
         advance: ONNX Runtime and post-processing only; each ratio per round, median and range)\n\n\
         | variant | engine img/s | HTTP / engine | gRPC / engine | engine 1 image p50 ms | HTTP p50 / engine | gRPC p50 / engine | target |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let (Some(limit), Some(single)) = (
            Spread::of(r.engine.iter().map(|e| e.images_per_s)),
            Spread::of(r.engine_single.iter().map(|e| e.per_batch.p50())),
        ) else {
            continue;
        };
        let targets = r.engine_targets();
        let show = |ratio: Option<Spread>, meets: &dyn Fn(f64) -> bool| {
            ratio.map_or("-".to_string(), |x| {
                format!(
                    "{} ({:.3}–{:.3})",
                    verdict(x.median, targets.is_none() || meets(x.median)),
                    x.min,
                    x.max
                )
            })
        };
        let at_least = |x: f64| targets.is_some_and(|(t, _)| x >= t);
        let at_most = |x: f64| targets.is_some_and(|(_, t)| x <= t);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            limit.show(rounds),
            show(r.engine_ratio("HTTP"), &at_least),
            show(r.engine_ratio("gRPC"), &at_least),
            fmt(single.median),
            show(r.engine_latency_ratio("HTTP"), &at_most),
            show(r.engine_latency_ratio("gRPC"), &at_most),
            targets.map_or("report only".to_string(), |(t, l)| format!(
                "≥ {t:.2}, ≤ {l:.1}"
            )),
        ));
    }
    out.push_str(&format!(
        "\n### Bare pipeline (img/s{}): one image at a time, and the exploration of decoding overlapped with inference by layout and batch size\n\n\
         | variant | sessions × intra-op / decode threads | sequential |",
        if explore_rounds > 1 { ", overlapped: median of the exploration rounds" } else { "" }
    ));
    let sizes = sorted_unique(reports.iter().flat_map(|r| r.batch_sizes()));
    for b in &sizes {
        out.push_str(&format!(" batch {b} |"));
    }
    out.push_str(&format!("\n|---|---|---|{}\n", "---|".repeat(sizes.len())));
    for r in reports {
        for layout in r.layouts() {
            // The sequential figure belongs to the session a lone request runs on.
            let sequential = match (r.sequential.first(), r.sequential_rate()) {
                (Some(first), Some(rate)) if first.layout == layout => fmt(rate.median),
                _ => "-".into(),
            };
            let decoders = match layout {
                Layout::InstancesInline => "inline".to_string(),
                _ => r.decode_threads.to_string(),
            };
            out.push_str(&format!(
                "| {} | {} / {} | {} |",
                r.model,
                r.layout_shape(layout),
                decoders,
                sequential
            ));
            for &b in &sizes {
                let cell = r.bare_at(layout, b).map_or("-".into(), |x| fmt(x.median));
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    out.push_str("\nBold ratios miss the target (throughput: ≥ 0.90 classification, ≥ 0.85 others; latency: ≤ 1.15).\n");
    for n in notes {
        out.push_str(&format!("- {n}\n"));
    }
    out
}

fn sorted_unique(values: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = values.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Three significant figures are all these measurements carry.
fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run(layout: Layout, batch_size: usize, images_per_s: f64) -> BatchRun {
        BatchRun {
            layout,
            batch_size,
            images_per_s,
            per_batch: Default::default(),
        }
    }

    /// The server's knobs with no flags, for reports whose layout does not matter.
    fn default_knobs() -> ModelKnobs {
        mobilenet_serve::config::Config::parse_from(["x"])
            .knobs_for("m", Default::default())
            .unwrap()
    }

    fn server_run(protocol: &'static str, images_per_s: f64) -> ServerRun {
        ServerRun {
            protocol,
            run: LoadRun {
                images_per_s,
                latency: Default::default(),
                errors: 0,
                first_error: None,
            },
            mean_batch: Some(1.0),
        }
    }

    #[test]
    fn ratios_pair_each_round_with_its_own_bare_run() {
        let knobs = default_knobs();
        let sequential = vec![run(Layout::Instances, 1, 10.0)];
        let mut report = ModelReport::new("m".into(), Task::Detection, &knobs, 2, sequential);
        report.bare = vec![
            run(Layout::Instances, 1, 120.0),
            run(Layout::InstancesInline, 2, 150.0),
            run(Layout::Instances, 1, 130.0),
            run(Layout::InstancesInline, 2, 140.0),
        ];
        assert_eq!(
            best_layout(&report.bare),
            Some((Layout::InstancesInline, 2))
        );
        // A slow round and a fast one: per round 0.95 and 0.90, while the medians' ratio would be 0.917.
        report.confirmed = vec![
            run(Layout::InstancesInline, 2, 100.0),
            run(Layout::InstancesInline, 2, 200.0),
        ];
        report.saturated = vec![
            server_run("HTTP", 95.0),
            server_run("gRPC", 80.0),
            server_run("HTTP", 180.0),
            server_run("gRPC", 170.0),
        ];
        let http = report.ratio("HTTP").unwrap();
        assert!((http.median - 0.925).abs() < 1e-9, "{http:?}");
        assert_eq!((http.min, http.max), (0.9, 0.95));
        let (best, how, batch) = report.best();
        assert_eq!(
            (best.median, how.as_str(), batch),
            (150.0, "overlapped, instances, inline decode", 2)
        );
        let table = markdown(&[report], 8, 5, 2, 2);
        assert!(table.contains("| 0.925 (0.900–0.950) |"), "{table}");
        assert!(table.contains("| **0.825** (0.800–0.850) |"), "{table}");
    }

    #[test]
    fn engine_ratios_pair_rounds_and_only_classifiers_have_targets() {
        let knobs = default_knobs();
        let sequential = vec![run(Layout::Instances, 1, 10.0)];
        let mut report = ModelReport::new("m".into(), Task::Classification, &knobs, 2, sequential);
        report.engine = vec![
            run(Layout::Instances, 1, 200.0),
            run(Layout::Instances, 1, 100.0),
        ];
        report.saturated = vec![
            server_run("HTTP", 160.0),
            server_run("gRPC", 180.0),
            server_run("HTTP", 90.0),
            server_run("gRPC", 80.0),
        ];
        // Per round: HTTP 0.80 and 0.90, gRPC 0.90 and 0.80.
        let http = report.engine_ratio("HTTP").unwrap();
        assert!((http.median - 0.85).abs() < 1e-9, "{http:?}");
        assert_eq!((http.min, http.max), (0.8, 0.9));
        assert_eq!(report.engine_targets(), Some((0.85, 1.5)));
        report.task = Task::Segmentation;
        assert_eq!(report.engine_targets(), None);
    }

    fn one_image_at(ms: u64) -> crate::stats::Samples {
        let mut samples = crate::stats::Samples::default();
        samples.push(std::time::Duration::from_millis(ms));
        samples
    }

    #[test]
    fn latency_ratios_pair_each_round_with_its_own_floor() {
        let knobs = default_knobs();
        // The floor moves from 10 to 20 ms between the rounds; the server stays 10% above it in both.
        let sequential = [10, 20]
            .map(|ms| BatchRun {
                per_batch: one_image_at(ms),
                ..run(Layout::Solo, 1, 1000.0 / ms as f64)
            })
            .into();
        let mut report = ModelReport::new("m".into(), Task::Detection, &knobs, 2, sequential);
        report.single = [11, 22]
            .map(|ms| {
                let mut one = server_run("HTTP", 1.0);
                one.run.latency = one_image_at(ms);
                one
            })
            .into();
        let (p50, _, ratio) = report.one_client("HTTP").unwrap();
        assert_eq!(p50.median, 16.5);
        assert!((ratio.median - 1.1).abs() < 1e-9, "{ratio:?}");
        let table = markdown(&[report], 8, 5, 1, 1);
        assert!(
            table.contains("| m | 15.0 / 15.0 | 16.5 / 16.5 | 1.100 (1.100–1.100) |"),
            "{table}"
        );
    }

    #[test]
    fn best_bare_is_taken_over_every_layout_and_batch_size() {
        let knobs = ModelKnobs {
            max_batch_size: 1,
            max_queue_delay: std::time::Duration::ZERO,
            queue_capacity: 1,
            max_queue_wait: None,
            instances: 2,
            intra_op_threads: 1,
            solo_intra_op_threads: 2,
            decode_in_model_thread: true,
            shared_arena: true,
            cpu_scheduling: mobilenet_serve::sched::CpuScheduling::Normal,
            thread_nice: 0,
        };
        let sequential = vec![run(Layout::Solo, 1, 100.0)];
        let mut report = ModelReport::new("m".into(), Task::Classification, &knobs, 2, sequential);
        report.bare = vec![
            run(Layout::Instances, 1, 180.0),
            run(Layout::Instances, 4, 170.0),
            run(Layout::Solo, 4, 190.0),
            run(Layout::Solo, 1, 150.0),
            run(Layout::InstancesInline, 8, 185.0),
        ];
        let (best, how, batch) = report.best();
        assert_eq!(
            (best.median, how.as_str(), batch),
            (190.0, "overlapped, solo session", 4)
        );
        assert_eq!(report.bare_at(Layout::Instances, 4).unwrap().median, 170.0);
        assert_eq!(report.layout_shape(Layout::Solo), "solo 1 × 2");
        let table = markdown(&[report], 8, 5, 1, 1);
        assert!(
            table.contains("| m | 2 × 1 / 2 | - | 180 | 170 |"),
            "{table}"
        );
        assert!(
            table.contains("| m | 2 × 1 / inline | - | - | - | 185 |"),
            "{table}"
        );
        assert!(
            table.contains("| m | solo 1 × 2 / 2 | 100 | 150 | 190 |"),
            "{table}"
        );
    }

    #[test]
    fn spread_takes_the_median_and_range() {
        let s = Spread::of([180.0, 170.0, 175.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (175.0, 170.0, 180.0));
        let even = Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert_eq!(Spread::of([f64::NAN, 2.0]).unwrap().median, 2.0);
        assert!(Spread::of(std::iter::empty()).is_none());
        assert_eq!(s.show(3), "175 (170–180)");
        assert_eq!(s.show(1), "175");
    }
}
