//! Installs the Debian/Ubuntu packages the project needs, only those missing.
//!
//! The README promises two commands on a fresh machine, so the commands themselves
//! install what they need. Packages are checked with dpkg first: a machine that has
//! everything never runs apt (fast, and works offline).

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Needed to build the workspace (opus builds libopus with cmake; cpal links ALSA).
const BUILD: &[&str] = &[
    "cmake",
    "pkg-config",
    "libasound2-dev",
    "libssl-dev",
    // Slint: fonts for text rendering (xkbcommon and X11 are loaded at run time).
    "libfontconfig1-dev",
    "libfreetype-dev",
    "fonts-dejavu-core",
];
/// Needed to run the local stack.
const RUN: &[&str] = &["postgresql"];
/// Needed by the test suite: pgTAP and pg_prove; real speech (espeak-ng) and a real
/// sound server with a null sink (pulseaudio) for the client's voice tests.
const TEST: &[&str] = &[
    "pgtap",
    "libtap-parser-sourcehandler-pgtap-perl",
    "espeak-ng",
    "pulseaudio",
];

/// Which command is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Up,
    Test,
}

/// Installs whatever of the purpose's packages is missing.
pub fn ensure(purpose: Purpose) -> Result<()> {
    let mut wanted: Vec<&str> = BUILD.iter().chain(RUN).copied().collect();
    if purpose == Purpose::Test {
        wanted.extend(TEST);
    }
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing missing system packages: {}",
        missing.join(" ")
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let run = |args: &[&str]| -> Result<()> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        haven_devstack::process::default_signal_mask(&mut cmd);
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        let status = cmd
            .status()
            .context("running apt-get (is this Debian/Ubuntu, and are you root or a sudoer?)")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    run(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    run(&args)?;
    let still: Vec<&str> = missing.into_iter().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("packages still missing after apt-get: {}", still.join(" "));
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && o.stdout == b"installed")
        .unwrap_or(false)
}
