//! `haven-local-api`: runs the local Supabase stand-in (see the library docs and README.md).

use anyhow::Context;
use clap::Parser;
use haven_local_api::config::Args;
use haven_local_api::server;

fn main() -> anyhow::Result<()> {
    // Before any thread exists, so every runtime thread inherits the mask.
    unblock_shutdown_signals();
    let args = Args::parse();
    init_tracing(args.log_json);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

/// A launcher that blocks SIGINT/SIGTERM for itself (to shut its children down in order)
/// passes that mask on through fork and exec; with the signals blocked, the graceful-shutdown
/// handler would never run and the launcher would have to SIGKILL us.
fn unblock_shutdown_signals() {
    // SAFETY: plain libc calls on a local, zero-initialised sigset_t, changing only the mask
    // of the current (only) thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    server::serve(
        args,
        |info| {
            // Printed for people and scripts alike: the KEY=value lines can be pasted into a
            // shell or grepped by tooling.
            println!("haven-local-api listening on {}", info.url);
            println!("  REST {}/rest/v1", info.url);
            println!("  Auth {}/auth/v1 (JWKS {})", info.url, info.jwks_url);
            println!("SUPABASE_URL={}", info.url);
            println!("SUPABASE_ANON_KEY={}", info.anon_key);
            println!("SUPABASE_SERVICE_ROLE_KEY={}", info.service_role_key);
        },
        server::shutdown_signal(),
    )
    .await
    .context("haven-local-api")
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,postrust=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
