//! `haven`: the desktop client. Reads where the Supabase project (and signaling) are from
//! flags or the environment, refuses politely without a display, and runs the Slint window
//! over the core.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use haven_client::core::config::{default_config_dir, signaling_ws_url};
use haven_client::core::{ClientConfig, SessionFile, SessionManager};
use haven_client::ui::controller::AppController;
use haven_client::ui::AppWindow;
use haven_client::voice::device::AudioDevices;
use slint::ComponentHandle;

/// The demo account seeded by supabase/seed.sql (local stack only).
const DEMO_EMAIL: &str = "demo@haven.local";
const DEMO_PASSWORD: &str = "haven-demo-password";

#[derive(Debug, Parser)]
#[command(
    name = "haven",
    version,
    about = "Haven desktop client: voice and chat for your communities"
)]
struct Args {
    /// Supabase project URL (hosted, or the local stack's API).
    #[arg(long, env = "SUPABASE_URL")]
    supabase_url: Option<String>,
    /// The project's anon (public) key.
    #[arg(long, env = "SUPABASE_ANON_KEY")]
    anon_key: Option<String>,
    /// Signaling WebSocket URL (ws://host:port/v1/ws); voice and live chat need it.
    #[arg(long, env = "HAVEN_SIGNALING_URL")]
    signaling_url: Option<String>,
    /// A local stack description (stack.json from `cargo xtask up`) to take the URL and key from.
    #[arg(long, env = "HAVEN_STACK_FILE")]
    stack_file: Option<PathBuf>,
    /// Where the session and settings live (default: the user's config directory).
    #[arg(long, env = "HAVEN_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Sign in as the local stack's demo user.
    #[arg(long)]
    demo: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// The fields of stack.json the client needs.
#[derive(serde::Deserialize)]
struct StackFile {
    api_url: Option<String>,
    anon_key: Option<String>,
    /// `http://host:port` of signaling (its WebSocket is at `ws://host:port/v1/ws`).
    signaling_url: Option<String>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("haven: {e:#}");
        std::process::exit(1);
    }
}

fn has_display() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    set("DISPLAY") || set("WAYLAND_DISPLAY")
}

fn run() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "haven=info,haven_client=info".into());
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    if !has_display() {
        eprintln!(
            "haven: no display found ($DISPLAY and $WAYLAND_DISPLAY are unset). The Haven desktop client needs a \
             graphical session; run it from a desktop, or with X forwarding."
        );
        std::process::exit(2);
    }

    let (mut url, mut key) = (args.supabase_url.clone(), args.anon_key.clone());
    let mut signaling = args.signaling_url.clone();
    // The stack file fills in what is missing; its signaling URL is used only with its own
    // Supabase URL (or when the file is named), never mixed with a hosted project.
    if url.is_none() || key.is_none() || (signaling.is_none() && args.stack_file.is_some()) {
        let path = args
            .stack_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(".haven/stack.json"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            let stack: StackFile = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", path.display()))?;
            url = url.or(stack.api_url);
            key = key.or(stack.anon_key);
            signaling = signaling.or(stack.signaling_url.map(|s| signaling_ws_url(&s)));
        }
    }
    let (Some(url), Some(key)) = (url, key) else {
        bail!("set SUPABASE_URL and SUPABASE_ANON_KEY (or --supabase-url/--anon-key, or --stack-file from `cargo xtask up`)");
    };

    let mut config = ClientConfig::new(url, key)?;
    config.signaling_url = signaling;
    config.config_dir = match args.config_dir.clone() {
        Some(dir) => dir,
        None => default_config_dir()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let session = SessionManager::new(
        config.supabase()?,
        Some(SessionFile::in_dir(&config.config_dir)),
    );

    let window = AppWindow::new().context("opening the window")?;
    let controller: Rc<AppController> =
        AppController::new(&window, session, config, runtime.handle().clone());
    let devices = AudioDevices::system();
    controller.set_devices(devices.input_names(), devices.output_names());
    if args.demo {
        controller.sign_in(DEMO_EMAIL.into(), DEMO_PASSWORD.into());
    } else {
        controller.restore_session();
    }
    // Core results arrive from tokio threads; render them on the UI thread.
    let timer = slint::Timer::default();
    let pump = controller.clone();
    timer.start(
        slint::TimerMode::Repeated,
        Duration::from_millis(30),
        move || {
            pump.apply_pending();
        },
    );
    // Ctrl-C (or `cargo xtask up` stopping the demo) closes the window like the user would.
    runtime.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = slint::invoke_from_event_loop(|| {
                let _ = slint::quit_event_loop();
            });
        }
    });
    window.run().context("running the window")?;
    drop(timer);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
