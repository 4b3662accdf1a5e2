//! The `mobilenet-serve` binary: parse the configuration, set up logging, bind, serve until SIGTERM/SIGINT.
use clap::Parser;
use mobilenet_serve::{
    Listeners,
    config::{Config, LogFormat},
    shutdown,
};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match serve().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logged once, with its cause chain; no backtrace noise for configuration mistakes.
            tracing::error!("{e:#}");
            eprintln!("mobilenet-serve: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(http = %listeners.http.local_addr()?, grpc = %listeners.grpc.local_addr()?, "listening");
    mobilenet_serve::run(config, listeners, shutdown::signal()).await
}
