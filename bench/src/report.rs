//! The benchmark's figures, and the markdown tables they are printed as (ready to paste into the README).

use mobilenet_serve::repository::Task;

use crate::bare::BatchRun;
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
    pub intra_op_threads: usize,
    pub decode_threads: usize,
    /// One image at a time, decode then inference.
    pub sequential: BatchRun,
    /// Decoding overlapped with inference, per batch size.
    pub bare: Vec<BatchRun>,
    pub saturated: Vec<ServerRun>,
    pub single: Vec<ServerRun>,
}

impl ModelReport {
    pub fn new(
        model: String,
        task: Task,
        intra_op_threads: usize,
        decode_threads: usize,
        sequential: BatchRun,
        bare: Vec<BatchRun>,
    ) -> Self {
        ModelReport {
            model,
            task,
            intra_op_threads,
            decode_threads,
            sequential,
            bare,
            saturated: Vec::new(),
            single: Vec::new(),
        }
    }

    /// The bare run with the highest throughput, sequential or pipelined: the server is held to the better.
    fn best(&self) -> (&BatchRun, &'static str) {
        let pipelined = self
            .bare
            .iter()
            .max_by(|a, b| a.images_per_s.total_cmp(&b.images_per_s));
        match pipelined {
            Some(p) if p.images_per_s >= self.sequential.images_per_s => (p, "overlapped"),
            _ => (&self.sequential, "sequential"),
        }
    }

    /// The throughput target: 0.90 of bare for classification, 0.85 for the heavier tasks.
    fn throughput_target(&self) -> f64 {
        match self.task {
            Task::Classification => 0.90,
            _ => 0.85,
        }
    }
}

/// p50 at one client may be at most this multiple of the bare single-image time.
const LATENCY_TARGET: f64 = 1.15;

fn verdict(ratio: f64, ok: bool) -> String {
    if ratio.is_nan() {
        "-".into()
    } else if ok {
        format!("{ratio:.2}")
    } else {
        format!("**{ratio:.2}**")
    }
}

fn errors(run: &LoadRun) -> String {
    match &run.first_error {
        Some(e) if run.errors > 0 => format!(" ({} errors, first: {e})", run.errors),
        _ => String::new(),
    }
}

pub fn markdown(reports: &[ModelReport], concurrency: usize, images: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n### Throughput at saturation ({concurrency} closed-loop clients, {images} JPEGs in turn)\n\n\
         | variant | best bare img/s | HTTP img/s | HTTP / bare | gRPC img/s | gRPC / bare | mean batch HTTP / gRPC | target |\n\
         |---|---|---|---|---|---|---|---|\n"
    ));
    let mut notes = Vec::new();
    for r in reports {
        let (best, how) = r.best();
        let target = r.throughput_target();
        let mut cells = vec![format!(
            "{} ({how}, batch {})",
            fmt(best.images_per_s),
            best.batch_size
        )];
        let mut batches = Vec::new();
        for s in &r.saturated {
            let ratio = s.run.images_per_s / best.images_per_s;
            cells.push(fmt(s.run.images_per_s));
            cells.push(verdict(ratio, ratio >= target));
            batches.push(s.mean_batch.map_or("-".into(), |b| format!("{b:.1}")));
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
    out.push_str(
        "\n### Latency with one client (ms)\n\n\
         | variant | bare 1 image p50 / p99 | HTTP p50 / p99 | HTTP p50 / bare | gRPC p50 / p99 | gRPC p50 / bare |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in reports {
        let single = &r.sequential;
        let bare_p50 = single.per_batch.p50();
        let mut cells = vec![format!(
            "{} / {}",
            fmt(bare_p50),
            fmt(single.per_batch.p99())
        )];
        for s in &r.single {
            let ratio = s.run.latency.p50() / bare_p50;
            cells.push(format!(
                "{} / {}",
                fmt(s.run.latency.p50()),
                fmt(s.run.latency.p99())
            ));
            cells.push(verdict(ratio, ratio <= LATENCY_TARGET));
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
        "\n### Bare pipeline (img/s): one image at a time, and decoding overlapped with inference by batch size\n\n\
         | variant | intra-op / decode threads | sequential |",
    );
    let sizes: Vec<usize> = {
        let mut s: Vec<usize> = reports
            .iter()
            .flat_map(|r| r.bare.iter().map(|b| b.batch_size))
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    for b in &sizes {
        out.push_str(&format!(" batch {b} |"));
    }
    out.push_str(&format!("\n|---|---|---|{}\n", "---|".repeat(sizes.len())));
    for r in reports {
        out.push_str(&format!(
            "| {} | {} / {} | {} |",
            r.model,
            r.intra_op_threads,
            r.decode_threads,
            fmt(r.sequential.images_per_s)
        ));
        for b in &sizes {
            let cell = r
                .bare
                .iter()
                .find(|x| x.batch_size == *b)
                .map_or("-".into(), |x| fmt(x.images_per_s));
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out.push_str("\nBold ratios miss the target (throughput: ≥ 0.90 classification, ≥ 0.85 others; latency: ≤ 1.15).\n");
    for n in notes {
        out.push_str(&format!("- {n}\n"));
    }
    out
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
