//! The server under test: either one already running (its URLs given), or the release binary started here
//! on free loopback ports with exactly the benchmarked variants, stopped when the benchmark ends. The abuse
//! suite also asks whether it is still alive, why it died (its exit status and the end of its log), and
//! starts it again for the next case.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Server {
    pub http_url: String,
    pub grpc_url: String,
    child: Option<Child>,
    pub log: Option<PathBuf>,
    /// How the child was started, to start it again.
    launch: Option<Launch>,
}

/// Everything needed to start the binary again after a case killed it.
#[derive(Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub repository: PathBuf,
    pub models: Vec<String>,
    pub extra: Vec<String>,
    /// The server's stderr; each tool names its own, so that concurrent tools do not overwrite each other's.
    pub log: PathBuf,
}

impl Server {
    pub fn external(http_url: String, grpc_url: String) -> Server {
        Server {
            http_url,
            grpc_url,
            child: None,
            log: None,
            launch: None,
        }
    }

    /// Starts `binary` serving `models` from `repository`; `extra` flags are passed through unchanged.
    pub fn spawn(
        binary: &Path,
        repository: &Path,
        models: &[String],
        extra: &[String],
    ) -> anyhow::Result<Server> {
        Server::start(Launch {
            binary: binary.to_owned(),
            repository: repository.to_owned(),
            models: models.to_vec(),
            extra: extra.to_vec(),
            log: std::env::temp_dir().join("mobilenet-bench-server.log"),
        })
    }

    /// Starts the binary as `launch` says, on two free loopback ports.
    pub fn start(launch: Launch) -> anyhow::Result<Server> {
        let http = free_port()?;
        let grpc = free_port()?;
        let log_file = std::fs::File::create(&launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        let child = Command::new(&launch.binary)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--model-repository")
            .arg(&launch.repository)
            .arg("--models")
            .arg(launch.models.join(","))
            .args(&launch.extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run `cargo build --release -p mobilenet-serve`)",
                    launch.binary.display()
                )
            })?;
        Ok(Server {
            http_url: format!("http://127.0.0.1:{http}"),
            grpc_url: format!("http://127.0.0.1:{grpc}"),
            child: Some(child),
            log: Some(launch.log.clone()),
            launch: Some(launch),
        })
    }

    /// Stops this server (if it still runs) and starts the same binary again, on new ports, with its log
    /// moved aside to `<log>.<n>` first so that the cause of the previous death stays readable.
    pub fn restart(&mut self, generation: usize) -> anyhow::Result<()> {
        let launch = self
            .launch
            .clone()
            .context("only a server started here can be restarted")?;
        self.stop();
        let kept = launch.log.with_extension(format!("log.{generation}"));
        let _ = std::fs::rename(&launch.log, kept);
        *self = Server::start(launch)?;
        Ok(())
    }

    /// The child's process id (none for an external server).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(how it ended)` once the child has exited; `None` while it runs (and for an external server).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(describe_exit(status))
    }

    /// Why the child stopped, from its log: the last line that names a cause (an allocation failure, a
    /// panic, an error), else the last `lines` lines. Empty without a log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(text) = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        else {
            return String::new();
        };
        death_note(&text, lines)
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
    }

    /// Waits until `/readyz` answers 200 (every model loaded and warmed).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the server exited ({status}) before it was ready; see {}",
                    self.log_hint()
                );
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.http_url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server was not ready after {timeout:?}; see {}",
                    self.log_hint()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_hint(&self) -> String {
        self.log
            .as_ref()
            .map_or("its log".to_owned(), |p| p.display().to_string())
    }

    /// The `mobilenet_batch_size` histogram of `model` as (sum, count): requests and batches so far.
    pub async fn batch_totals(&self, model: &str) -> Option<(f64, f64)> {
        let http = reqwest::Client::builder().no_proxy().build().ok()?;
        let text = http
            .get(format!("{}/metrics", self.http_url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let label = format!("model=\"{model}\"");
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(&label))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        Some((
            value("mobilenet_batch_size_sum{")?,
            value("mobilenet_batch_size_count{")?,
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The line of a log that says why the process ended, or its last `lines` lines. A panic or allocation
/// failure is followed by a backtrace, whose last lines say nothing.
fn death_note(text: &str, lines: usize) -> String {
    const CAUSES: [&str; 4] = [
        "memory allocation of",
        "panicked at",
        "fatal runtime error",
        "ERROR",
    ];
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let note = match all
        .iter()
        .rev()
        .find(|l| CAUSES.iter().any(|c| l.contains(c)))
    {
        Some(cause) => (*cause).to_owned(),
        None => all[all.len().saturating_sub(lines)..].join(" | "),
    };
    note.chars().take(300).collect()
}

/// "signal 6 (SIGABRT)" or "exit code 1": a crash reads differently from a clean refusal to start.
fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            format!("signal {signal}{name}")
        }
        (None, None) => "ended".to_owned(),
    }
}

/// The default variant of each task in the repository's `index.json`, classifier first.
pub fn default_models(repository: &Path) -> anyhow::Result<Vec<String>> {
    let index = repository.join("index.json");
    let text = std::fs::read_to_string(&index)
        .with_context(|| format!("reading {} (run `make models`)", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    ["classification", "detection", "segmentation"]
        .iter()
        .map(|task| {
            json["defaults"][task]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{}: no default {task} variant", index.display()))
        })
        .collect()
}

/// A port that was free a moment ago. The server binds it right after; a clash fails loudly at start-up.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_of_death_is_found_above_the_backtrace() {
        let log = "INFO ready\nmemory allocation of 26208000003 bytes failed\nstack backtrace:\n   0: std::alloc\n   at ./server/src/engine/mod.rs:135:28\n";
        assert_eq!(
            death_note(log, 2),
            "memory allocation of 26208000003 bytes failed"
        );
        assert_eq!(death_note("a\nb\nc\n", 2), "b | c");
        assert_eq!(death_note("", 2), "");
    }
}
