//! The `mobilenet-serve` binary: parse the configuration, set up logging and the malloc arenas,
//! bind, serve until SIGTERM/SIGINT.
use clap::Parser;
use mobilenet_serve::{
    Listeners,
    config::{Config, LogFormat},
    shutdown,
};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // Before any other thread exists, so that no thread has an arena of its own yet.
    if let Err(e) = mobilenet_serve::malloc::limit_arenas(config.malloc_arenas) {
        tracing::warn!(error = %e, "could not cap the malloc arenas; serving with glibc's default");
    }
    let trim_every = std::time::Duration::from_millis(config.malloc_trim_interval_ms);
    if let Err(e) = mobilenet_serve::malloc::trim_periodically(trim_every) {
        tracing::warn!(error = %e, "could not start the malloc trimmer; freed pages stay with the process");
    }
    let served = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(serve(config)));
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logged once, with its cause chain; no backtrace noise for configuration mistakes.
            tracing::error!("{e:#}");
            eprintln!("mobilenet-serve: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(http = %listeners.http.local_addr()?, grpc = %listeners.grpc.local_addr()?, cpu_scheduling = ?config.cpu_scheduling, "listening");
    mobilenet_serve::run(config, listeners, shutdown::signal()).await
}
