//! Where the contract tests run: always the local stand-in of the running stack, and a hosted
//! project too when `SUPABASE_URL`, `SUPABASE_ANON_KEY`, `HAVEN_TEST_EMAIL` and
//! `HAVEN_TEST_PASSWORD` are set (otherwise the hosted run is skipped with the reason printed).
//!
//! The same assertions run against both, so a difference between the stand-in and real
//! Supabase shows up as a failing test rather than a surprise in production.

#![allow(dead_code)] // each test file uses a different subset

use haven_supabase::{HavenClient, ProjectConfig, ServiceClient};

/// One project the tests run against.
pub struct Target {
    /// `local` or `hosted`, for assertion messages.
    pub name: &'static str,
    /// Anon-key client.
    pub client: HavenClient,
    /// Service-role client, when the key is known (always locally; hosted only with
    /// `SUPABASE_SERVICE_ROLE_KEY`).
    pub service: Option<ServiceClient>,
    /// An existing account (hosted: `HAVEN_TEST_EMAIL`/`HAVEN_TEST_PASSWORD`; local: none,
    /// tests create their own through the service client).
    pub account: Option<(String, String)>,
}

impl Target {
    pub fn is_local(&self) -> bool {
        self.name == "local"
    }
}

/// The local stand-in of the running stack; panics with instructions when there is none.
pub fn local() -> Target {
    let info = haven_devstack::StackInfo::from_env(&haven_devstack::workspace_root())
        .unwrap_or_else(|e| panic!("no local stack: {e}"));
    let url = info
        .api_url
        .expect("the stack runs haven-local-api (api_url in the stack file)");
    let anon = info.anon_key.expect("stack file has anon_key");
    let service_key = info
        .service_role_key
        .expect("stack file has service_role_key");
    Target {
        name: "local",
        client: HavenClient::new(ProjectConfig::new(&url, anon).expect("config")).expect("client"),
        service: Some(ServiceClient::new(&url, &service_key).expect("service client")),
        account: None,
    }
}

/// The hosted project, or why it is skipped.
pub fn hosted() -> Result<Target, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(url), Some(anon), Some(email), Some(password)) = (
        var("SUPABASE_URL"),
        var("SUPABASE_ANON_KEY"),
        var("HAVEN_TEST_EMAIL"),
        var("HAVEN_TEST_PASSWORD"),
    ) else {
        return Err(
            "set SUPABASE_URL, SUPABASE_ANON_KEY, HAVEN_TEST_EMAIL and HAVEN_TEST_PASSWORD \
                    to also run against a hosted project"
                .into(),
        );
    };
    let service = var("SUPABASE_SERVICE_ROLE_KEY")
        .map(|key| ServiceClient::new(&url, &key).map_err(|e| e.to_string()))
        .transpose()?;
    Ok(Target {
        name: "hosted",
        client: HavenClient::new(ProjectConfig::new(url, anon).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?,
        service,
        account: Some((email, password)),
    })
}

/// Every configured target: local always, hosted when configured (else the reason is printed).
pub fn targets(test: &str) -> Vec<Target> {
    let mut targets = vec![local()];
    match hosted() {
        Ok(hosted) => targets.push(hosted),
        Err(reason) => note(&format!("{test}: hosted run skipped: {reason}")),
    }
    targets
}

/// A unique address for a fresh local account.
pub fn fresh_email(label: &str) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let username = format!("{label}_{}", &id[..10]);
    (format!("{username}@example.test"), username)
}

/// Print past the test harness's output capture, so a skip reason shows in a passing run.
pub fn note(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "note: {message}");
}
