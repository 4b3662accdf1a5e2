//! The server under test: either one already running (its URLs given), or the release binary started here
//! on free loopback ports with exactly the benchmarked variants, stopped when the benchmark ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Server {
    pub http_url: String,
    pub grpc_url: String,
    child: Option<Child>,
    pub log: Option<PathBuf>,
}

impl Server {
    pub fn external(http_url: String, grpc_url: String) -> Server {
        Server {
            http_url,
            grpc_url,
            child: None,
            log: None,
        }
    }

    /// Starts `binary` serving `models` from `repository`; `extra` flags are passed through unchanged.
    pub fn spawn(
        binary: &Path,
        repository: &Path,
        models: &[String],
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let http = free_port()?;
        let grpc = free_port()?;
        let log = std::env::temp_dir().join("mobilenet-bench-server.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--model-repository")
            .arg(repository)
            .arg("--models")
            .arg(models.join(","))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run `cargo build --release -p mobilenet-serve`)",
                    binary.display()
                )
            })?;
        Ok(Server {
            http_url: format!("http://127.0.0.1:{http}"),
            grpc_url: format!("http://127.0.0.1:{grpc}"),
            child: Some(child),
            log: Some(log),
        })
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

    /// The process id of a server started here.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port that was free a moment ago. The server binds it right after; a clash fails loudly at start-up.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
