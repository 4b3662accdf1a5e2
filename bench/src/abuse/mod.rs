//! The hostile-client suite of issue 14 part 6 (`make abuse`), run against the release binary.
//!
//! Every case ([`Case`]) is one attack, and is judged on the same three checks, plus its own:
//!
//! 1. **The server keeps serving.** A normal request ([`crate::probe`]) every 100 ms during the attack must
//!    be answered correctly within 200 ms, and one more must be answered correctly afterwards.
//! 2. **Memory stays bounded.** The server's peak RSS over the case ([`crate::procfs`]) must stay under the
//!    bound: its RSS after warm-up plus a margin (`--rss-margin-mib`).
//! 3. **Nothing accepted is lost.** Real requests to every task over both protocols ([`witness`]) run
//!    alongside; each must be served or refused at admission, and the process must still be alive.
//!
//! A case that kills the server fails, with the exit status and the end of the server's log; the server is
//! started again for the next case, so one crash does not hide the other results.
//!
//! The attacks: [`images`] crafts the hostile images and [`hostile`] sends them; [`sockets`] holds raw
//! HTTP/1 connections; [`h2flood`] opens streams on one HTTP/2 connection; [`bodies`] sends bodies over the
//! limit; [`burst`] overloads the classifier. [`table`] prints the results.

pub mod bodies;
pub mod burst;
pub mod h2flood;
pub mod hostile;
pub mod images;
pub mod sockets;
pub mod table;
pub mod witness;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use mobilenet_client::{Client, Protocol};
use tokio::sync::watch;

use crate::probe::{self, Outcome, Probe};
use crate::procfs::{self, Sampler};
use crate::server::Server;
use crate::stalls;
use crate::{loopback, stats::Samples};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    PngWide,
    PngTall,
    Png16Bit,
    JpegBomb,
    JpegTruncated,
    HalfOpen,
    SlowUploads,
    IdleKeepAlive,
    GrpcStreams,
    BigBodies,
    Burst,
}

impl Case {
    pub const ALL: [Case; 11] = [
        Case::PngWide,
        Case::PngTall,
        Case::Png16Bit,
        Case::JpegBomb,
        Case::JpegTruncated,
        Case::HalfOpen,
        Case::SlowUploads,
        Case::IdleKeepAlive,
        Case::GrpcStreams,
        Case::BigBodies,
        Case::Burst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::PngWide => "png-wide",
            Case::PngTall => "png-tall",
            Case::Png16Bit => "png-16bit",
            Case::JpegBomb => "jpeg-bomb",
            Case::JpegTruncated => "jpeg-truncated",
            Case::HalfOpen => "half-open",
            Case::SlowUploads => "slow-uploads",
            Case::IdleKeepAlive => "idle-keepalive",
            Case::GrpcStreams => "grpc-streams",
            Case::BigBodies => "big-bodies",
            Case::Burst => "burst",
        }
    }

    /// Parses a comma-separated list of case names, or `all`.
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<Case>> {
        let mut cases = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                cases.extend(Case::ALL);
                continue;
            }
            let case = Case::ALL
                .into_iter()
                .find(|c| c.name() == name)
                .with_context(|| {
                    let names: Vec<&str> = Case::ALL.iter().map(|c| c.name()).collect();
                    format!("unknown case {name:?}; the cases are: {}", names.join(", "))
                })?;
            cases.push(case);
        }
        anyhow::ensure!(!cases.is_empty(), "no case selected");
        Ok(cases)
    }
}

/// The suite's knobs (the binary's flags, see `mobilenet-abuse --help`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub rss_margin: u64,
    pub rss_kill: u64,
    pub probe_period: Duration,
    pub probe_goal: Duration,
    pub witness_period: Duration,
    pub image_min: Duration,
    pub hold: Duration,
    pub half_open: usize,
    pub slow_uploads: usize,
    pub slow_rate: usize,
    pub idle: usize,
    pub streams: u32,
    pub streams_hold: Duration,
    pub max_streams_held: u32,
    pub big_bodies: usize,
    pub max_body_bytes: usize,
    pub max_image_pixels: u64,
    pub burst_factor: f64,
    pub burst: Duration,
    pub capacity_run: Duration,
    pub refusal_p99_goal: Duration,
    pub classifier: String,
}

/// One case's verdict and figures.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub case: Case,
    /// Why it failed; empty when it passed.
    pub failures: Vec<String>,
    /// What a reader should know that is no failure (probes slowed by the machine, not the server).
    pub notes: Vec<String>,
    pub peak_rss: u64,
    /// False when the kernel refused the VmHWM reset, so the peak is sampled (may miss a short spike).
    pub peak_exact: bool,
    pub probes: probe::Summary,
    pub witnessed: witness::Witnessed,
    /// What the server did with the attack, in figures.
    pub what: String,
    pub seconds: f64,
}

/// What an attack reports: its figures, and the case-specific reasons it failed.
struct Attack {
    what: String,
    failures: Vec<String>,
}

/// The inputs a case needs, made before its attack so that crafting an image or measuring the capacity is
/// not counted as attack time.
enum Prepared {
    Image(Bytes),
    Capacity(f64),
    Nothing,
}

pub struct Suite {
    pub server: Server,
    pub settings: Settings,
    probe: Probe,
    /// Real JPEGs for witnesses and the burst.
    images: Arc<Vec<Bytes>>,
    /// The smallest JPEG (slow uploads) and the largest (truncated).
    smallest: Bytes,
    largest: Bytes,
    /// VmRSS after warm-up; the bound is this plus the margin.
    pub baseline: u64,
    /// The normal request for 2 s before any attack.
    pub at_rest: probe::Summary,
    /// The stall watcher got real-time priority, so probes slowed only by the machine are set apart.
    pub stalls_realtime: bool,
    restarts: usize,
}

impl Suite {
    /// Waits for the server, warms it up with every task over both protocols, and takes its RSS then as
    /// the baseline.
    pub async fn new(
        mut server: Server,
        settings: Settings,
        images_dir: PathBuf,
        probe_image: &str,
    ) -> anyhow::Result<Suite> {
        let probe = Probe::new(&images_dir, probe_image)?;
        let jpegs = crate::load::read_jpegs(&images_dir)?;
        let smallest = jpegs
            .iter()
            .min_by_key(|j| j.len())
            .cloned()
            .context("no JPEG")?;
        let largest = jpegs
            .iter()
            .max_by_key(|j| j.len())
            .cloned()
            .context("no JPEG")?;
        server.wait_ready(Duration::from_secs(300)).await?;
        let mut suite = Suite {
            server,
            settings,
            probe,
            images: Arc::new(jpegs),
            smallest,
            largest,
            baseline: 0,
            at_rest: probe::Summary::default(),
            stalls_realtime: false,
            restarts: 0,
        };
        suite.warm_up().await?;
        let pid = suite
            .server
            .pid()
            .context("the suite needs the server's pid")?;
        suite.baseline = procfs::read(pid).context("reading the server's RSS")?.rss;
        // The normal request with no attack, so the latencies under attack can be read against the
        // machine's own noise (a shared machine's load shows here first).
        let (stop, stopped) = watch::channel(false);
        let watcher = stalls::Watcher::start();
        let probes = suite.probe.during(
            suite.server.http_url.clone(),
            suite.settings.probe_period,
            stopped,
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop.send(true);
        let probes = probes.await.unwrap_or_default();
        let stalled = watcher.stop();
        suite.stalls_realtime = stalled.realtime;
        suite.at_rest = probe::Summary::of(&probes, suite.settings.probe_goal, &stalled);
        Ok(suite)
    }

    /// Every task over both protocols on every image, so that every lazily built buffer exists before the
    /// baseline is taken.
    async fn warm_up(&self) -> anyhow::Result<()> {
        let clients = self.clients().await?;
        for client in &clients {
            for image in self.images.iter() {
                serve_all_tasks(client, image.clone()).await?;
            }
        }
        let r = self.probe.once(&self.server.http_url).await;
        anyhow::ensure!(
            r.outcome == Outcome::Correct,
            "the warm-up probe was not answered correctly: {:?}",
            r.outcome
        );
        Ok(())
    }

    /// True once the server process has ended: an attack stops sending then.
    fn server_gone(&self) -> bool {
        self.server
            .pid()
            .is_none_or(|pid| procfs::read(pid).is_none())
    }

    pub fn bound(&self) -> u64 {
        self.baseline + self.settings.rss_margin
    }

    async fn clients(&self) -> anyhow::Result<[Client; 2]> {
        loopback::ensure(&self.server.http_url)?;
        loopback::ensure(&self.server.grpc_url)?;
        Ok([
            Client::connect(Protocol::Http, Some(&self.server.http_url)).await?,
            Client::connect(Protocol::Grpc, Some(&self.server.grpc_url)).await?,
        ])
    }

    /// Starts the server again if the previous case killed it, left it unready, or left its RSS more than
    /// half the margin over the baseline (the allocator keeps what a large image took): each case is then
    /// judged from the same baseline, not charged with its predecessor's memory. Returns why it restarted.
    async fn ensure_serving(&mut self) -> anyhow::Result<Option<String>> {
        let dead = self.server.exited().is_some();
        let ready =
            !dead && self.probe.once(&self.server.http_url).await.outcome == Outcome::Correct;
        let rss = self
            .server
            .pid()
            .and_then(procfs::read)
            .map_or(0, |m| m.rss);
        let inflated = rss > self.baseline + self.settings.rss_margin / 2;
        let why = match (dead, ready, inflated) {
            (true, _, _) => "the previous case killed the server".to_owned(),
            (false, false, _) => "the server did not answer a normal request correctly".to_owned(),
            (false, true, true) => format!(
                "the previous case left the server's RSS at {:.0} MiB",
                procfs::mib(rss)
            ),
            (false, true, false) => return Ok(None),
        };
        {
            self.restarts += 1;
            eprintln!("  restarting the server (restart {}): {why}", self.restarts);
            self.server.restart(self.restarts)?;
            self.server.wait_ready(Duration::from_secs(300)).await?;
            self.warm_up().await?;
        }
        Ok(Some(why))
    }

    pub async fn run(&mut self, case: Case) -> CaseResult {
        let started = Instant::now();
        let mut result = CaseResult {
            case,
            failures: Vec::new(),
            notes: Vec::new(),
            peak_rss: 0,
            peak_exact: false,
            probes: probe::Summary::default(),
            witnessed: witness::Witnessed::default(),
            what: String::new(),
            seconds: 0.0,
        };
        if let Err(e) = self.run_checked(case, &mut result).await {
            result.failures.push(format!("could not run: {e:#}"));
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    }

    async fn run_checked(&mut self, case: Case, result: &mut CaseResult) -> anyhow::Result<()> {
        let restarted = self.ensure_serving().await?;
        let prepared = self.prepare(case).await?;
        let clients = self.clients().await?;
        let pid = self.server.pid().context("no server pid")?;
        let http_url = self.server.http_url.clone();
        let s = &self.settings;

        let sampler = Sampler::start(pid, Duration::from_millis(50), s.rss_kill);
        let watcher = stalls::Watcher::start();
        let (stop, stopped) = watch::channel(false);
        let probes = self
            .probe
            .during(http_url.clone(), s.probe_period, stopped.clone());
        let witnesses = witness::during(
            clients.clone(),
            self.images.clone(),
            s.witness_period,
            stopped,
        );
        let attack = self.attack(case, prepared, &clients).await;
        let _ = stop.send(true);
        let probes = probes.await.unwrap_or_default();
        let witnessed = witnesses.await.unwrap_or_default();
        let trace = sampler.stop();
        let stalled = watcher.stop();

        let failures = &mut result.failures;
        match attack {
            Ok(a) => {
                result.what = match restarted {
                    Some(why) => format!("{} (on a fresh server: {why})", a.what),
                    None => a.what,
                };
                failures.extend(a.failures);
            }
            Err(e) => failures.push(format!("the attack failed to run: {e:#}")),
        }
        // Check 3 first: a dead server explains every other failure.
        if let Some(how) = self.server.exited() {
            failures.insert(
                0,
                format!(
                    "server died ({how}); its log ends: {}",
                    self.server.log_tail(2)
                ),
            );
        } else {
            let after = self.probe.once(&http_url).await;
            if after.outcome != Outcome::Correct {
                failures.push(format!(
                    "a normal request after the attack: {:?}",
                    after.outcome
                ));
            }
        }
        if witnessed.lost > 0 {
            failures.push(format!(
                "{} of {} accepted requests lost, first: {}",
                witnessed.lost,
                witnessed.sent,
                clip(&witnessed.first_loss.clone().unwrap_or_default())
            ));
        }
        // Check 1, during the attack.
        let summary = probe::Summary::of(&probes, s.probe_goal, &stalled);
        if summary.sent == 0 {
            failures.push("no normal request completed during the attack".to_owned());
        }
        if summary.bad > 0 {
            failures.push(format!(
                "{} of {} normal requests failed during the attack: {}",
                summary.bad,
                summary.sent,
                clip(&summary.problems.join("; "))
            ));
        }
        // Under a burst of 10x capacity, a quick 429 is the contract for every client, the probe included;
        // under any other attack the queue is not full, so a refusal means the attack took the capacity.
        if summary.refused > 0 && case != Case::Burst {
            failures.push(format!(
                "{} of {} normal requests refused (429) during the attack",
                summary.refused, summary.sent
            ));
        }
        if summary.slow > 0 {
            failures.push(format!(
                "{} of {} normal requests over {} ms (max {:.0} ms; sent at {} s into the attack)",
                summary.slow,
                summary.sent,
                s.probe_goal.as_millis(),
                summary.latency.quantile(1.0),
                summary
                    .slow_at
                    .iter()
                    .map(|t| format!("{t:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if summary.stalled > 0 {
            result.notes.push(format!(
                "{} normal request(s) over {} ms only by the time the machine itself stood still \
                 (up to {:.0} ms within one; longest stall {:.0} ms): not counted",
                summary.stalled,
                s.probe_goal.as_millis(),
                summary.stalled_most.as_secs_f64() * 1e3,
                stalled.longest().as_secs_f64() * 1e3
            ));
        }
        // Check 2.
        result.peak_rss = trace.peak();
        result.peak_exact = trace.peak_was_reset;
        if let Some(at) = trace.killed_at {
            failures.push(format!(
                "killed by the suite at {:.0} MiB RSS (--rss-kill-mib {:.0})",
                procfs::mib(at),
                procfs::mib(s.rss_kill)
            ));
        } else if result.peak_rss > self.bound() {
            failures.push(format!(
                "peak RSS {:.0} MiB over the bound {:.0} MiB",
                procfs::mib(result.peak_rss),
                procfs::mib(self.bound())
            ));
        }
        result.probes = summary;
        result.witnessed = witnessed;
        Ok(())
    }

    async fn prepare(&self, case: Case) -> anyhow::Result<Prepared> {
        use images::PngColor;
        let s = &self.settings;
        // Just under the pixel limit, as in issue 14 (39,000,000 for the default 40,000,000).
        let long = u32::try_from(s.max_image_pixels * 39 / 40).unwrap_or(u32::MAX);
        Ok(match case {
            Case::PngWide => Prepared::Image(images::png_zeros(long, 1, PngColor::Rgb, 8).into()),
            Case::PngTall => Prepared::Image(images::png_zeros(1, long, PngColor::Rgb, 8).into()),
            Case::Png16Bit => {
                // 8000 x 5000 RGBA at 16 bits for the default limit: exactly at it, 8 bytes a pixel.
                let width = 8000u32;
                let height =
                    u32::try_from(s.max_image_pixels / u64::from(width)).unwrap_or(u32::MAX);
                Prepared::Image(images::png_zeros(width, height, PngColor::Rgba, 16).into())
            }
            Case::JpegBomb => {
                // 65,000 x 600 for the default limit: the widest side a JPEG header can hold, nearly.
                let width = 65_000u16;
                let height =
                    u16::try_from((s.max_image_pixels / u64::from(width)).min(600)).unwrap_or(600);
                Prepared::Image(images::progressive_jpeg_bomb(width, height, 64).into())
            }
            Case::JpegTruncated => Prepared::Image(images::truncated(&self.largest, 0.5).into()),
            Case::Burst => {
                let [http, _] = self.clients().await?;
                let cap =
                    burst::capacity(&http, &s.classifier, self.images.clone(), 8, s.capacity_run)
                        .await?;
                Prepared::Capacity(cap)
            }
            _ => Prepared::Nothing,
        })
    }

    async fn attack(
        &self,
        case: Case,
        prepared: Prepared,
        clients: &[Client; 2],
    ) -> anyhow::Result<Attack> {
        let s = &self.settings;
        let http: SocketAddr = loopback::ensure(&self.server.http_url)?;
        let grpc: SocketAddr = loopback::ensure(&self.server.grpc_url)?;
        let mut failures = Vec::new();
        let what = match (case, prepared) {
            (_, Prepared::Image(image)) => {
                let named = [("HTTP", clients[0].clone()), ("gRPC", clients[1].clone())];
                let size = image.len();
                // Rounds until the minimum attack time, so that the probe samples the server while it
                // decodes, not only before or after.
                let begin = Instant::now();
                let mut sent = hostile::Sent::default();
                loop {
                    sent.absorb(hostile::send_everywhere(&named, image.clone()).await);
                    if begin.elapsed() >= s.image_min || self.server_gone() {
                        break;
                    }
                }
                if let Some(first) = sent.bad.first() {
                    failures.push(format!(
                        "{} of {} answers neither served nor a 4xx, first: {}",
                        sent.bad.len(),
                        sent.answers.len(),
                        clip(first)
                    ));
                }
                format!("{size} B image; {}", sent.describe())
            }
            (Case::HalfOpen, _) => {
                let t = sockets::Tally::of(&sockets::half_open(http, s.half_open, s.hold).await);
                if t.open > 0 {
                    failures.push(format!(
                        "{} of {} half-open connections still open after {:.0} s",
                        t.open,
                        t.total,
                        s.hold.as_secs_f64()
                    ));
                }
                server_errors(&t, &mut failures);
                t.describe()
            }
            (Case::SlowUploads, _) => {
                let fates = sockets::slow_uploads(
                    http,
                    s.slow_uploads,
                    self.smallest.clone(),
                    s.slow_rate,
                    s.hold,
                )
                .await;
                let t = sockets::Tally::of(&fates);
                server_errors(&t, &mut failures);
                format!(
                    "{} B at {} B/s each; {}",
                    self.smallest.len(),
                    s.slow_rate,
                    t.describe()
                )
            }
            (Case::IdleKeepAlive, _) => {
                let t = sockets::Tally::of(&sockets::idle_keepalive(http, s.idle, s.hold).await);
                if t.open > 0 {
                    failures.push(format!(
                        "{} of {} idle keep-alive connections still open after {:.0} s",
                        t.open,
                        t.total,
                        s.hold.as_secs_f64()
                    ));
                }
                let unhealthy = t.answered_with(|st| st != 200);
                if unhealthy > 0 {
                    failures.push(format!("{unhealthy} health checks not answered 200"));
                }
                t.describe()
            }
            (Case::GrpcStreams, _) => {
                let f = h2flood::flood(grpc, s.streams, s.streams_hold).await?;
                if f.held() > s.max_streams_held {
                    failures.push(format!(
                        "the server held {} streams on one connection (more than {})",
                        f.held(),
                        s.max_streams_held
                    ));
                }
                f.describe()
            }
            (Case::BigBodies, _) => {
                let size = s.max_body_bytes + 1;
                let grpc_client = clients[1].clone();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..s.big_bodies {
                    tasks.spawn(bodies::http(http, size, bodies::Framing::ContentLength));
                    tasks.spawn(bodies::http(http, size, bodies::Framing::Chunked));
                    let c = grpc_client.clone();
                    tasks.spawn(async move { bodies::grpc(&c, size).await });
                }
                let mut answers: Vec<(String, usize)> = Vec::new();
                let mut unexpected = 0;
                while let Some(done) = tasks.join_next().await {
                    let a = done.unwrap_or_else(|e| bodies::Answer::Lost(e.to_string()));
                    unexpected += usize::from(!a.is_expected());
                    let label = a.label();
                    match answers.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, n)) => *n += 1,
                        None => answers.push((label, 1)),
                    }
                }
                answers.sort();
                let listed: Vec<String> =
                    answers.iter().map(|(l, n)| format!("{l} x{n}")).collect();
                if unexpected > 0 {
                    failures.push(format!(
                        "{unexpected} answers other than 413 / OUT_OF_RANGE / RESOURCE_EXHAUSTED"
                    ));
                }
                format!(
                    "{} bodies of {size} B (Content-Length, chunked, gRPC): {}",
                    3 * s.big_bodies,
                    listed.join(", ")
                )
            }
            (Case::Burst, Prepared::Capacity(capacity)) => {
                let b = burst::burst(
                    clients[0].clone(),
                    &self.server.grpc_url,
                    self.images.clone(),
                    capacity,
                    s.burst_factor,
                    s.burst,
                )
                .await?;
                if b.bad > 0 {
                    failures.push(format!(
                        "{} answers neither served nor refused, first: {}",
                        b.bad,
                        b.first_bad.clone().unwrap_or_default()
                    ));
                }
                if b.not_sent > 0 {
                    failures.push(format!(
                        "{} requests the generator could not send",
                        b.not_sent
                    ));
                }
                if b.refused == 0 {
                    failures.push("nothing refused at 10x capacity".to_owned());
                } else if b.refusal_ms.p99() > s.refusal_p99_goal.as_secs_f64() * 1e3 {
                    failures.push(format!(
                        "refusals p99 {:.1} ms over {} ms",
                        b.refusal_ms.p99(),
                        s.refusal_p99_goal.as_millis()
                    ));
                }
                b.describe()
            }
            (case, _) => anyhow::bail!("case {} was not prepared", case.name()),
        };
        Ok(Attack { what, failures })
    }
}

/// Error texts carry URLs and nested causes; a table cell keeps the first 160 characters.
fn clip(text: &str) -> String {
    match text.char_indices().nth(160) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// A 5xx to a connection attack is the server failing, not refusing.
fn server_errors(t: &sockets::Tally, failures: &mut Vec<String>) {
    let n = t.answered_with(|s| s >= 500);
    if n > 0 {
        failures.push(format!("{n} answered with a 5xx"));
    }
}

/// One real request of each task that must be served (the warm-up).
async fn serve_all_tasks(client: &Client, image: Bytes) -> anyhow::Result<()> {
    let s = mobilenet_client::Selector::default();
    client
        .classify(image.clone(), &s, &Default::default())
        .await
        .context("warm-up classify")?;
    client
        .detect(image.clone(), &s, &Default::default())
        .await
        .context("warm-up detect")?;
    client.segment(image, &s).await.context("warm-up segment")?;
    Ok(())
}

/// p50 / max of a probe summary, for tables.
pub fn latency_cell(latency: &Samples) -> String {
    if latency.is_empty() {
        return "-".to_owned();
    }
    format!("{:.0} / {:.0} ms", latency.p50(), latency.quantile(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_lists() {
        assert_eq!(Case::parse_list("all").unwrap().len(), Case::ALL.len());
        assert_eq!(
            Case::parse_list("burst, png-wide").unwrap(),
            vec![Case::Burst, Case::PngWide]
        );
        assert!(Case::parse_list("png-wide,nope").is_err());
        assert!(Case::parse_list("").is_err());
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = Case::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Case::ALL.len());
    }
}
