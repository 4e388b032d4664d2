//! Applies the Supabase project to a local database: shim, migrations, seed.
//!
//! Migrations are recorded in `supabase_migrations.schema_migrations`, the table the
//! Supabase CLI uses, so re-running applies only new files and a database set up here
//! looks like one managed by `supabase db push`. Each migration runs in one
//! transaction together with its bookkeeping row: a failing file changes nothing, and
//! psql's error names the file and line.

use std::fs;
use std::path::{Path, PathBuf};

use crate::postgres::{PgCluster, LOCAL_PASSWORD};
use crate::DevStackError;

/// The `supabase/` folder of the repository.
#[derive(Debug, Clone)]
pub struct SupabaseProject {
    root: PathBuf,
}

/// What applying the project did.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    /// Migration files applied by this call (already-applied ones are skipped).
    pub applied: Vec<String>,
    /// Whether seed.sql ran.
    pub seeded: bool,
}

impl SupabaseProject {
    /// The project at `root` (the folder holding `migrations/`).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        SupabaseProject { root: root.into() }
    }

    /// Path of the local-only shim.
    pub fn shim(&self) -> PathBuf {
        self.root.join("local-shim.sql")
    }

    /// Migration files in the order they apply (by file name, i.e. timestamp).
    pub fn migrations(&self) -> Result<Vec<PathBuf>, DevStackError> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.root.join("migrations"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Shim, pending migrations and (optionally) the seed, into `db` (created if needed).
    pub fn apply(
        &self,
        pg: &PgCluster,
        db: &str,
        seed: bool,
    ) -> Result<ApplyReport, DevStackError> {
        pg.create_database(db)?;
        run_file(pg, db, &self.shim(), &[])?;
        // Local only: hosted projects set this password themselves.
        pg.psql(
            db,
            &[
                "-c",
                &format!("alter role authenticator with login password '{LOCAL_PASSWORD}'"),
                "-c",
                "create schema if not exists supabase_migrations",
                "-c",
                "create table if not exists supabase_migrations.schema_migrations \
                 (version text primary key, statements text[], name text)",
            ],
        )?;
        let done = pg.psql(
            db,
            &[
                "-tA",
                "-c",
                "select version from supabase_migrations.schema_migrations",
            ],
        )?;
        let done: Vec<&str> = done.lines().map(str::trim).collect();
        let mut report = ApplyReport::default();
        for file in self.migrations()? {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| DevStackError::BadMigrationName(file.clone()))?;
            let (version, name) = stem
                .split_once('_')
                .filter(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| DevStackError::BadMigrationName(file.clone()))?;
            if done.contains(&version) {
                continue;
            }
            let record = format!(
                "insert into supabase_migrations.schema_migrations (version, name) \
                 values ('{version}', '{}')",
                name.replace('\'', "''")
            );
            run_file(pg, db, &file, &["-1", "-c", &record])?;
            report.applied.push(stem.to_string());
        }
        if seed {
            run_file(pg, db, &self.root.join("seed.sql"), &[])?;
            report.seeded = true;
        }
        // PostgREST (and postrust) cache the schema; tell them it changed.
        pg.psql(db, &["-c", "notify pgrst, 'reload schema'"])?;
        Ok(report)
    }
}

fn run_file(pg: &PgCluster, db: &str, file: &Path, extra: &[&str]) -> Result<(), DevStackError> {
    let mut cmd = pg.psql_command(db);
    // -1 must come before -f for psql to wrap everything in one transaction.
    cmd.args(extra.iter().take_while(|a| **a == "-1"));
    cmd.arg("-f").arg(file);
    cmd.args(extra.iter().skip_while(|a| **a == "-1"));
    // Quiet NOTICEs ("relation already exists, skipping") from idempotent files.
    cmd.env("PGOPTIONS", "-c client_min_messages=warning");
    crate::process::output_checked(&mut cmd, "psql").map_err(|e| match e {
        DevStackError::CommandFailed { stderr, .. } => DevStackError::Migration {
            file: file.to_path_buf(),
            stderr,
        },
        other => other,
    })?;
    Ok(())
}
