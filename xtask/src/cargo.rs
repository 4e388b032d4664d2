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
