//! `cargo xtask up` runs Haven locally; `cargo xtask test` runs every test;
//! `cargo xtask pgo` builds the profile-guided `haven-sfu` to deploy.
//!
//! The first two are the README's two commands. Both install missing system packages, build
//! what they need, start real services (PostgreSQL from Debian, the local Supabase
//! stand-in, ...) and stop everything they started, also on Ctrl-C or failure.

mod apt;
mod cargo;
mod pgo;
mod signals;
mod test;

use std::path::PathBuf;

use anyhow::{bail, Result};

pub(crate) const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  up      run the whole system locally (Postgres + local Supabase API + services),
          until Ctrl-C. State persists in .haven/ between runs. Also starts two
          demo bots (alice and bob talking in Haven Demo / Lounge) and, with a
          display, the client signed in as demo@haven.local.
          --pg-port N    Postgres port (default 54322, or a free one)
          --api-port N   local Supabase API port (default 54321, or a free one)
          --reset        delete the local state first (fresh database)
          --no-build     use the binaries already built
  test    install what is missing, build, start a throw-away stack and run every test:
          pgTAP (pg_prove), the migration reproducibility check, cargo test --workspace.
          -- ARGS        extra arguments passed to cargo test
  pgo     build the haven-sfu to deploy: profile-guided, trained on the load harness's
          scenarios (10, 100, 500 participants; ~2 min) between an instrumented and
          an optimised release build. Prints the binary's path (target/pgo/haven-sfu).
          --seconds N    steady traffic per training run (default 15-20)
";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let root = haven_devstack::workspace_root();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("missing command");
    };
    match command.as_str() {
        "up" => up(root, rest),
        "test" => test::run(&root, rest),
        "pgo" => pgo::run(&root, rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

fn up(root: PathBuf, args: &[String]) -> Result<()> {
    let mut opts = haven_devstack::StackOptions {
        state_dir: haven_devstack::stack::persistent_state_dir(&root),
        pg_port: None,
        api_port: None,
        signaling_port: None,
        seed: true,
    };
    let mut reset = false;
    let mut build = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pg-port" => opts.pg_port = Some(parse_port(it.next())?),
            "--api-port" => opts.api_port = Some(parse_port(it.next())?),
            "--reset" => reset = true,
            "--no-build" => build = false,
            other => bail!("unknown option `{other}` for up\n{USAGE}"),
        }
    }
    signals::block_shutdown_signals();
    apt::ensure(apt::Purpose::Up)?;
    if build {
        cargo::run(&root, &["build", "--workspace", "--all-targets"], &[])?;
    }
    if reset && opts.state_dir.exists() {
        std::fs::remove_dir_all(&opts.state_dir)?;
    }
    let mut stack = haven_devstack::LocalStack::start(&root, &opts)?;
    print_banner(&stack);
    let mut demo = start_demo(&stack)?;
    let sig = signals::wait_for_shutdown();
    eprintln!("\nxtask: {sig} received, stopping the stack...");
    // Bots and the client first, while signaling is still there to hear them leave.
    for service in demo.iter_mut().rev() {
        service.stop();
    }
    drop(demo);
    if let Err(e) = stack.check_alive() {
        eprintln!("xtask: a service had already stopped: {e}");
    }
    drop(stack);
    eprintln!("xtask: stopped.");
    Ok(())
}

fn print_banner(stack: &haven_devstack::LocalStack) {
    let info = &stack.info;
    println!("\nHaven is running locally (Ctrl-C stops everything).\n");
    println!("  Postgres       {}", info.database_url);
    match (&info.api_url, &info.anon_key, &info.service_role_key) {
        (Some(url), Some(anon), Some(service)) => {
            println!("  Supabase API   {url}  (/auth/v1, /rest/v1)");
            println!("  anon key       {anon}");
            println!("  service key    {service}");
        }
        _ => println!("  Supabase API   not built (haven-local-api)"),
    }
    match &info.signaling_url {
        Some(url) => println!(
            "  Signaling      {}/v1/ws  (/healthz, /metrics)",
            url.replace("http", "ws")
        ),
        None => println!("  Signaling      not built (haven-signaling)"),
    }
    match &info.sfu_metrics_url {
        Some(url) => println!("  SFU node       local-1, registered with signaling ({url})"),
        None => println!("  SFU node       not built (haven-sfu)"),
    }
    println!("  Demo login     demo@haven.local / haven-demo-password");
    println!("                 (also alice@, bob@ and outsider@haven.local, same password)");
    println!("  Stack file     {}", stack.info_path().display());
    println!("  Logs           {}", stack.state_dir.display());
}

/// Who the demo bots are and what they say.
const DEMO_BOTS: [(&str, &str); 2] = [
    (
        "alice",
        "Hi, this is Alice. The lounge is open, come in and say hello.",
    ),
    (
        "bob",
        "Bob here. I can hear you fine through the local voice server.",
    ),
];

/// The demo around a running stack: two bots (alice and bob talking in Haven Demo /
/// Lounge) when `haven-bot` is built and the stack runs signaling, and the desktop client
/// signed in as the demo user when there is a display.
fn start_demo(stack: &haven_devstack::LocalStack) -> Result<Vec<haven_devstack::Service>> {
    let bin = haven_devstack::debug_bin_dir();
    let stack_file = stack.info_path();
    let mut services = Vec::new();
    let bot = bin.join("haven-bot");
    if stack.info.signaling_url.is_none() {
        println!("  Demo bots      not started (the stack runs no signaling)");
    } else if !bot.exists() {
        println!("  Demo bots      not built (cargo build -p haven-client --bin haven-bot)");
    } else {
        for (name, text) in DEMO_BOTS {
            let mut cmd = std::process::Command::new(&bot);
            cmd.arg("--stack-file")
                .arg(&stack_file)
                .args(["--email", &format!("{name}@haven.local")])
                .args(["--community", "Haven Demo", "--channel", "Lounge"])
                .args(["--text", text]);
            let log = stack.state_dir.join(format!("bot-{name}.log"));
            services.push(haven_devstack::Service::spawn(
                &format!("haven-bot ({name})"),
                cmd,
                &log,
            )?);
        }
        println!("  Demo bots      alice and bob talking in Haven Demo / Lounge (logs bot-*.log)");
    }
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let client = bin.join("haven");
    if !has_display {
        println!("\nno display: the client is not started; the stack keeps running");
    } else if !client.exists() {
        println!(
            "\nthe client is not built (cargo build -p haven-client); the stack keeps running"
        );
    } else {
        let mut cmd = std::process::Command::new(&client);
        cmd.arg("--demo")
            .arg("--stack-file")
            .arg(&stack_file)
            .arg("--config-dir")
            .arg(stack.state_dir.join("client"));
        let log = stack.state_dir.join("client.log");
        services.push(haven_devstack::Service::spawn("haven", cmd, &log)?);
        println!(
            "\nThe client is starting, signed in as demo@haven.local (log {}).",
            log.display()
        );
    }
    Ok(services)
}

fn parse_port(v: Option<&String>) -> Result<u16> {
    match v.map(|s| s.parse::<u16>()) {
        Some(Ok(p)) if p != 0 => Ok(p),
        _ => bail!("expected a port number (1-65535)"),
    }
}
