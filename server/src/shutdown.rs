//! Graceful shutdown. [`signal`] resolves on SIGTERM or SIGINT. [`Drain`] broadcasts "stop accepting" to both
//! servers; from then on `/readyz` and gRPC health report not serving, requests already accepted are still
//! answered, and `run` returns once they are (or when the drain timeout passes).
use tokio::sync::watch;

/// Resolves when the process is asked to stop (SIGTERM from an orchestrator, SIGINT from a terminal).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, draining"),
        _ = term => tracing::info!("SIGTERM received, draining"),
    }
}

/// A one-way latch: once triggered, every `wait` resolves.
#[derive(Clone)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::Sender::new(false),
        }
    }
}

impl Drain {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|draining| *draining).await;
        }
    }
}
