//! `cargo xtask test`: every test the project has, against real services.
//!
//! Order: system packages, one build of every target, a throw-away stack on free ports,
//! the pgTAP suite, the migration reproducibility check, then `cargo test --workspace`
//! with `HAVEN_STACK_FILE` pointing at the stack. Everything started is stopped at the
//! end, pass or fail.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use haven_devstack::{PgCluster, SupabaseProject, STACK_FILE_ENV};

use crate::{apt, cargo, signals};
use haven_devstack::{LocalStack, StackOptions};

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let cargo_extra: Vec<&str> = match args.split_first() {
        None => Vec::new(),
        Some((first, rest)) if first == "--" => rest.iter().map(String::as_str).collect(),
        Some((other, _)) => bail!("unknown option `{other}` for test (pass cargo args after --)"),
    };
    let started = Instant::now();
    apt::ensure(apt::Purpose::Test)?;
    // `cargo xtask test -- -p X` builds and tests only X (a developer's inner loop);
    // the default, and CI, is the whole workspace.
    let packages = package_args(&cargo_extra);
    let mut build = vec!["build", "--all-targets"];
    if packages.is_empty() {
        build.push("--workspace");
    } else {
        build.extend(&packages);
    }
    cargo::run(root, &build, &[])?;

    // A throw-away stack: never touches the developer's `cargo xtask up` state.
    let state_dir = std::env::temp_dir().join(format!("haven-test-{}", std::process::id()));
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir)?;
    }
    // Ctrl-C must still run the drops below, which stop Postgres and the services.
    signals::block_shutdown_signals();
    std::thread::spawn(|| {
        let sig = signals::wait_for_shutdown();
        eprintln!("xtask: {sig} received; children stop with us");
        std::process::exit(130);
    });
    let result = (|| -> Result<()> {
        let free = haven_devstack::ports::free_port;
        let stack = LocalStack::start(
            root,
            &StackOptions {
                state_dir: state_dir.clone(),
                pg_port: Some(free()?),
                api_port: Some(free()?),
                signaling_port: Some(free()?),
                seed: true,
            },
        )?;
        pgtap(root, &stack.pg)?;
        migrations_reproducible(root, &stack.pg)?;
        let mut args = vec!["test"];
        if packages.is_empty() {
            args.push("--workspace");
        }
        args.extend(&cargo_extra);
        cargo::run(
            root,
            &args,
            &[(STACK_FILE_ENV, stack.info_path().display().to_string())],
        )?;
        drop(stack);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&state_dir);
    result?;
    eprintln!(
        "xtask: all tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The pgTAP suite, exactly as `supabase test db` runs it, on a database of its own.
fn pgtap(root: &Path, pg: &PgCluster) -> Result<()> {
    const DB: &str = "haven_pgtap";
    pg.drop_database(DB)?;
    SupabaseProject::at(root.join("supabase")).apply(pg, DB, false)?;
    pg.psql(
        DB,
        &[
            "-c",
            "create extension if not exists pgtap with schema extensions",
        ],
    )?;
    eprintln!("xtask: pg_prove --ext .sql -r supabase/tests");
    let mut pg_prove = Command::new("pg_prove");
    haven_devstack::process::default_signal_mask(&mut pg_prove);
    let status = pg_prove
        .current_dir(root)
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", "postgres", "-d", DB])
        .args(["--ext", ".sql", "-r", "supabase/tests"])
        .env("PGPASSWORD", haven_devstack::postgres::LOCAL_PASSWORD)
        .status()
        .context("running pg_prove (apt-get install libtap-parser-sourcehandler-pgtap-perl)")?;
    if !status.success() {
        bail!("pgTAP suite failed ({status})");
    }
    Ok(())
}

/// Applying the migrations from scratch twice must give the same schema, and
/// re-applying to an up-to-date database must change nothing.
fn migrations_reproducible(root: &Path, pg: &PgCluster) -> Result<()> {
    let project = SupabaseProject::at(root.join("supabase"));
    let mut dumps = Vec::new();
    for db in ["haven_check_a", "haven_check_b"] {
        pg.drop_database(db)?;
        project.apply(pg, db, true)?;
        dumps.push(comparable(&pg.dump_schema(db)?));
    }
    let again = project.apply(pg, "haven_check_a", true)?;
    if !again.applied.is_empty() {
        bail!("re-applying migrations applied {:?} again", again.applied);
    }
    if dumps[0] != dumps[1] {
        let diff: Vec<String> = dumps[0]
            .lines()
            .zip(dumps[1].lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        bail!(
            "two from-scratch applications of the migrations differ:\n{}",
            diff.join("\n")
        );
    }
    if dumps[0] != comparable(&pg.dump_schema("haven_check_a")?) {
        bail!("re-applying seed/migrations to an up-to-date database changed its schema");
    }
    for db in ["haven_check_a", "haven_check_b"] {
        pg.drop_database(db)?;
    }
    eprintln!("xtask: migrations apply reproducibly (identical schema dumps, idempotent re-run)");
    Ok(())
}

/// pg_dump (since 15.14) brackets its output with `\\restrict KEY` lines whose key is
/// random per run; they are not schema.
fn comparable(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `-p X` / `--package X` pairs among the extra cargo arguments.
fn package_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        if *a == "-p" || *a == "--package" {
            if let Some(p) = it.next() {
                out.extend([*a, *p]);
            }
        } else if a.starts_with("--package=") {
            out.push(*a);
        }
    }
    out
}
