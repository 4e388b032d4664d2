//! `cargo xtask pgo`: a profile-guided build of `haven-sfu`, the one to deploy.
//!
//! At voice packet rates the node's own CPU goes mostly to cache misses on code: at 10
//! participants every packet is a wake-up of its own, and its path (demux, SRTP open,
//! speaker selection, rewrite and seal per subscriber, str0m's timers) runs on a cold core.
//! Profile-guided optimisation lays that path out together, away from setup and error code,
//! and inlines by what runs. Measured with the load harness: docs/benchmarks.md.
//!
//! Steps, all under `<target>/pgo/`:
//! 1. the load harness, as `cargo build --release` builds it;
//! 2. an instrumented `haven-sfu` (`-Cprofile-generate`, its own target directory);
//! 3. training: the harness's own scenarios (rooms of 5 at 10, 100 and 500 participants)
//!    against that node, which writes its profile when the harness stops it with SIGTERM;
//! 4. `llvm-profdata merge` (rustup's `llvm-tools` component, added when missing);
//! 5. `haven-sfu` built with `-Cprofile-use` into `optimized/` (rebuilt from scratch each
//!    time: cargo does not rebuild registry crates when only the profile's contents
//!    change), copied to `<target>/pgo/haven-sfu`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{apt, cargo};

/// Training runs: rooms of 5 participants and seconds of steady traffic, as
/// docs/benchmarks.md measures (10, 100 and 500 participants).
const TRAINING: [(u32, u32); 3] = [(2, 20), (20, 15), (100, 15)];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds: Option<u32> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a value")?;
                seconds = Some(
                    v.parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .with_context(|| format!("--seconds `{v}`: a whole number above 0"))?,
                );
            }
            other => bail!("unknown option `{other}` for pgo\n{}", crate::USAGE),
        }
    }
    apt::ensure(apt::Purpose::Up)?;
    let profdata_tool = llvm_profdata(root)?;
    let target = target_dir(root);
    let base = target.join("pgo");
    let raw = base.join("profiles");

    cargo::run(
        root,
        &[
            "build",
            "--release",
            "-p",
            "haven-loadtest",
            "--bin",
            "haven-loadtest",
        ],
        &[],
    )?;
    let harness = target.join("release").join("haven-loadtest");

    eprintln!("xtask: pgo: building the instrumented node");
    let instrumented_dir = base.join("instrumented");
    // Build scripts run instrumented too; their profiles go to a directory nobody reads.
    let generate = format!(
        "-Cprofile-generate={}",
        base.join("build-script-profiles").display()
    );
    build_node(root, &instrumented_dir, &[generate])?;
    let instrumented = instrumented_dir.join("release").join("haven-sfu");

    remove_if_present(&raw)?;
    std::fs::create_dir_all(&raw)?;
    for (rooms, secs) in TRAINING {
        let secs = seconds.unwrap_or(secs);
        eprintln!(
            "xtask: pgo: training with {} participants for {secs} s",
            rooms * 5
        );
        let before = profiles(&raw)?.len();
        let status = Command::new(&harness)
            .current_dir(root)
            .args([
                "--target",
                "haven-sfu",
                "--participants",
                "5",
                "--no-progress",
            ])
            .args([
                "--rooms",
                &rooms.to_string(),
                "--duration",
                &secs.to_string(),
            ])
            .env("HAVEN_SFU_BIN", &instrumented)
            // `%p`: one file per node process.
            .env("LLVM_PROFILE_FILE", raw.join("haven-sfu-%p.profraw"))
            .status()
            .with_context(|| format!("running {}", harness.display()))?;
        if !status.success() {
            bail!("the training run failed ({status})");
        }
        if profiles(&raw)?.len() <= before {
            bail!(
                "the instrumented node wrote no profile: it writes one only when it leaves \
                 through main (the harness stops it with SIGTERM; a killed node writes none)"
            );
        }
    }

    let profdata = base.join("haven-sfu.profdata");
    let status = Command::new(&profdata_tool)
        .arg("merge")
        .arg("-o")
        .arg(&profdata)
        .args(profiles(&raw)?)
        .status()
        .with_context(|| format!("running {}", profdata_tool.display()))?;
    if !status.success() {
        bail!("llvm-profdata merge failed ({status})");
    }

    eprintln!("xtask: pgo: building the optimised node");
    let optimized_dir = base.join("optimized");
    remove_if_present(&optimized_dir)?;
    let use_profile = [
        format!("-Cprofile-use={}", profdata.display()),
        // Functions the training never ran are expected (setup paths, other targets).
        "-Cllvm-args=-pgo-warn-missing-function=false".to_string(),
    ];
    build_node(root, &optimized_dir, &use_profile)?;
    let out = base.join("haven-sfu");
    std::fs::copy(optimized_dir.join("release").join("haven-sfu"), &out)
        .with_context(|| format!("copying the optimised node to {}", out.display()))?;
    println!("{}", out.display());
    eprintln!(
        "xtask: pgo: done. Deploy {} (or run the harness with HAVEN_SFU_BIN={0}).",
        out.display()
    );
    Ok(())
}

/// `cargo build --release -p haven-sfu` into `dir` with `flags` added to the caller's
/// compiler flags.
fn build_node(root: &Path, dir: &Path, flags: &[String]) -> Result<()> {
    cargo::run(
        root,
        &[
            "build",
            "--release",
            "-p",
            "haven-sfu",
            "--bin",
            "haven-sfu",
        ],
        &[
            ("CARGO_TARGET_DIR", dir.display().to_string()),
            // Encoded (0x1f between flags) so that a path with spaces stays one flag; cargo
            // prefers it to RUSTFLAGS.
            (
                "CARGO_ENCODED_RUSTFLAGS",
                encoded_rustflags(
                    std::env::var_os("CARGO_ENCODED_RUSTFLAGS"),
                    std::env::var_os("RUSTFLAGS"),
                    flags,
                ),
            ),
        ],
    )
}

/// The caller's flags (`CARGO_ENCODED_RUSTFLAGS`, else `RUSTFLAGS` split on whitespace, as
/// cargo reads them) followed by `flags`, in cargo's encoded form.
fn encoded_rustflags(
    encoded: Option<OsString>,
    plain: Option<OsString>,
    flags: &[String],
) -> String {
    let mut all: Vec<String> = match (encoded, plain) {
        (Some(e), _) if !e.is_empty() => e
            .to_string_lossy()
            .split('\x1f')
            .map(String::from)
            .collect(),
        (_, Some(p)) => p
            .to_string_lossy()
            .split_whitespace()
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    all.extend(flags.iter().cloned());
    all.join("\x1f")
}

/// Delete `dir` and everything in it, if it is there.
fn remove_if_present(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    Ok(())
}

/// `CARGO_TARGET_DIR`, else `<workspace>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The `.profraw` files in `dir`, sorted.
fn profiles(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "profraw") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The toolchain's `llvm-profdata` (rustup component `llvm-tools`), added when missing.
fn llvm_profdata(root: &Path) -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let text = |args: &[&str]| -> Result<String> {
        let out = Command::new(&rustc)
            .current_dir(root)
            .args(args)
            .output()
            .with_context(|| format!("running rustc {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("rustc {} failed ({})", args.join(" "), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sysroot = text(&["--print", "sysroot"])?;
    let version = text(&["-vV"])?;
    let host = host_triple(&version).context("rustc -vV names no host")?;
    let tool = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-profdata");
    if !tool.is_file() {
        eprintln!("xtask: pgo: adding the rustup component llvm-tools (for llvm-profdata)");
        let status = Command::new("rustup")
            .current_dir(root)
            .args(["component", "add", "llvm-tools"])
            .status();
        if !status.is_ok_and(|s| s.success()) || !tool.is_file() {
            bail!(
                "{} is missing and `rustup component add llvm-tools` did not provide it",
                tool.display()
            );
        }
    }
    Ok(tool)
}

/// The `host:` line of `rustc -vV`.
fn host_triple(verbose_version: &str) -> Option<&str> {
    verbose_version
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(str::trim)
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_triple_comes_from_rustc_verbose_version() {
        let v = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\n\
                 host: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(host_triple(v), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(host_triple("rustc 1.95.0\nhost: \n"), None);
        assert_eq!(host_triple(""), None);
    }

    #[test]
    fn profile_flags_follow_the_callers_flags_and_keep_spaces_in_paths() {
        let f = ["-Cprofile-use=/my repo/p.profdata".to_string()];
        assert_eq!(encoded_rustflags(None, None, &f), f[0]);
        assert_eq!(
            encoded_rustflags(Some("".into()), Some(" ".into()), &f),
            f[0]
        );
        assert_eq!(
            encoded_rustflags(None, Some(" -Ctarget-cpu=native  -g ".into()), &f),
            "-Ctarget-cpu=native\x1f-g\x1f-Cprofile-use=/my repo/p.profdata"
        );
        // Cargo prefers the encoded form when both are set, and so does this.
        assert_eq!(
            encoded_rustflags(
                Some("--cfg\x1ffoo bar".into()),
                Some("-Cignored".into()),
                &f
            ),
            "--cfg\x1ffoo bar\x1f-Cprofile-use=/my repo/p.profdata"
        );
    }

    #[test]
    fn only_raw_profiles_are_merged() {
        let dir = std::env::temp_dir().join(format!("xtask-pgo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b.profraw", "a.profraw", "merged.profdata", "notes.txt"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let found = profiles(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, vec![dir.join("a.profraw"), dir.join("b.profraw")]);
    }
}
