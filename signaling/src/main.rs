//! `haven-signaling`: parse flags, set up logging, run until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use haven_signaling::config::Config;
use haven_signaling::server;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_json);
    config.validate().context("configuration")?;
    server::run(config, server::shutdown_signal())
        .await
        .context("haven-signaling")
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
