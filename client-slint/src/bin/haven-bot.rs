//! `haven-bot`: a demo participant. Signs in as a user, joins a voice channel of a community
//! through signaling and talks: speech (espeak-ng, generated once; a synthesized
//! speech-like signal without it) looped with pauses through a paced fake microphone, while
//! whatever it hears is discarded. It is the client's own core ([`HeadlessClient`]) with a
//! `FakeSoundCard` instead of a sound card; on trouble it rejoins after a pause. Ctrl-C
//! leaves the channel and exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use haven_client::core::config::signaling_ws_url;
use haven_client::core::ClientConfig;
use haven_client::headless::{HeadlessClient, HeadlessConfig, HeadlessEvent};
use haven_client::voice::device::{AudioDevices, FakeSoundCard};
use haven_client::voice::speech::speech_48k;

#[derive(Debug, Parser)]
#[command(
    name = "haven-bot",
    version,
    about = "A Haven demo participant that talks in a voice channel"
)]
struct Args {
    /// A local stack description (stack.json from `cargo xtask up`) for the URLs and key.
    #[arg(long, env = "HAVEN_STACK_FILE")]
    stack_file: Option<PathBuf>,
    /// Supabase project URL (overrides the stack file).
    #[arg(long, env = "SUPABASE_URL")]
    supabase_url: Option<String>,
    /// The project's anon key (overrides the stack file).
    #[arg(long, env = "SUPABASE_ANON_KEY")]
    anon_key: Option<String>,
    /// Signaling WebSocket URL, ws://host:port/v1/ws (overrides the stack file).
    #[arg(long, env = "HAVEN_SIGNALING_URL")]
    signaling_url: Option<String>,
    /// Account email.
    #[arg(long, env = "HAVEN_BOT_EMAIL", default_value = "alice@haven.local")]
    email: String,
    /// Account password.
    #[arg(
        long,
        env = "HAVEN_BOT_PASSWORD",
        default_value = "haven-demo-password",
        hide_default_value = true
    )]
    password: String,
    /// Community name.
    #[arg(long, env = "HAVEN_BOT_COMMUNITY", default_value = "Haven Demo")]
    community: String,
    /// Voice channel name.
    #[arg(long, env = "HAVEN_BOT_CHANNEL", default_value = "Lounge")]
    channel: String,
    /// What to say (looped, with pauses).
    #[arg(
        long,
        env = "HAVEN_BOT_TEXT",
        default_value = "Hello from Haven. This is a demo voice, talking in the lounge."
    )]
    text: String,
    /// Pause between repetitions, in seconds.
    #[arg(long, env = "HAVEN_BOT_PAUSE_SECS", default_value_t = 2.0)]
    pause_secs: f64,
}

/// The fields of stack.json the bot needs.
#[derive(serde::Deserialize)]
struct StackFile {
    api_url: Option<String>,
    anon_key: Option<String>,
    signaling_url: Option<String>,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "haven_bot=info,haven_client=warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    if let Err(e) = run() {
        eprintln!("haven-bot: {e:#}");
        std::process::exit(1);
    }
}

fn client_config(args: &Args) -> Result<ClientConfig> {
    let (mut url, mut key, mut signaling) = (
        args.supabase_url.clone(),
        args.anon_key.clone(),
        args.signaling_url.clone(),
    );
    if let Some(path) = &args.stack_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let stack: StackFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        url = url.or(stack.api_url);
        key = key.or(stack.anon_key);
        signaling = signaling.or(stack.signaling_url);
    }
    let (Some(url), Some(key)) = (url, key) else {
        bail!("set --supabase-url and --anon-key (or --stack-file from `cargo xtask up`)");
    };
    let Some(signaling) = signaling else {
        bail!("set --signaling-url (or a --stack-file whose stack runs signaling)");
    };
    let mut config = ClientConfig::new(url, key)?;
    config.signaling_url = Some(signaling_ws_url(&signaling));
    config.config_dir = std::env::temp_dir().join(format!("haven-bot-{}", std::process::id()));
    Ok(config)
}

/// Feed `speech` into the card's microphone in a loop with `pause` of silence between
/// repetitions, and throw away what the speaker played, until `stop`.
fn talk(card: FakeSoundCard, speech: Vec<f32>, pause: Duration, stop: Arc<AtomicBool>) {
    let pause_samples = (pause.as_secs_f64() * 48_000.0) as usize;
    let mut take = speech
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0.0, pause_samples))
        .cycle();
    while !stop.load(Ordering::Relaxed) {
        // Keep about 200 ms queued: the card captures in real time.
        let want = 9_600usize.saturating_sub(card.mic_pending());
        if want > 0 {
            let chunk: Vec<f32> = take.by_ref().take(want).collect();
            card.speak_into_mic(&chunk);
        }
        card.take_played();
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let client = client_config(&args)?;
    let config = HeadlessConfig {
        client,
        email: args.email.clone(),
        password: args.password.clone(),
        community: args.community.clone(),
        channel: args.channel.clone(),
        noise_suppression: true,
    };
    let speech = speech_48k(&args.text);
    let card = FakeSoundCard::new(&format!("haven-bot-{}", args.email));
    let stop = Arc::new(AtomicBool::new(false));
    let talker = {
        let (card, stop) = (card.clone(), stop.clone());
        let pause = Duration::from_secs_f64(args.pause_secs.max(0.0));
        std::thread::Builder::new()
            .name("haven-bot-talk".into())
            .spawn(move || talk(card, speech, pause, stop))?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let devices = {
            let card = card.clone();
            Arc::new(move || AudioDevices::with_host(card.host()))
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                r = stay_in_voice(&config, devices.clone()) => {
                    if let Err(e) = r {
                        tracing::warn!("{}: {e}; rejoining in 3 s", config.email);
                    }
                }
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
        }
    });
    // Let the signaling task send the leave before the runtime goes.
    runtime.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    stop.store(true, Ordering::Relaxed);
    let _ = talker.join();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Join and stay until something fails for good.
async fn stay_in_voice(
    config: &HeadlessConfig,
    devices: haven_client::headless::DeviceFactory,
) -> Result<(), haven_client::headless::HeadlessError> {
    let mut client = HeadlessClient::start(config, devices).await?;
    // Leave cleanly when this future is dropped (Ctrl-C).
    struct LeaveOnDrop(Option<HeadlessClient>);
    impl Drop for LeaveOnDrop {
        fn drop(&mut self) {
            if let Some(c) = self.0.take() {
                c.leave();
            }
        }
    }
    client.wait_connected(Duration::from_secs(20)).await?;
    tracing::info!(
        "{} is in {} / {}, talking",
        config.email,
        config.community,
        config.channel
    );
    let mut guard = LeaveOnDrop(Some(client));
    loop {
        let Some(client) = guard.0.as_mut() else {
            return Ok(());
        };
        match client.next_event().await? {
            HeadlessEvent::SignalingDown => tracing::info!("signaling dropped; reconnecting"),
            HeadlessEvent::Joined => tracing::info!("rejoined"),
            _ => {}
        }
    }
}
