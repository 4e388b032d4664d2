//! Running cargo from xtask, with the same flags everywhere so that shared
//! dependencies are never rebuilt with another feature set (setup-facts.md).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `cargo <args>` in the workspace root; fails when cargo fails.
pub fn run(root: &Path, args: &[&str], envs: &[(&str, String)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(args);
    haven_devstack::process::default_signal_mask(&mut cmd);
    if is_ci() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        // A CI clone is built once and thrown away: incremental caches would only cost
        // disk (gigabytes across ~40 test binaries) and time.
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `CI` set to anything but empty, `0` or `false` (how CI services announce themselves).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}
