//! Auth contract: what the desktop client and signaling rely on from Supabase Auth, checked
//! through `haven_supabase` against the local stand-in (always) and a hosted project (when
//! configured).

mod common;

use std::time::Duration;

use haven_supabase::{Error, HavenClient, ProjectConfig, SignOutScope};

/// Sign in the target's account, or create one locally.
async fn account(target: &common::Target) -> (String, String) {
    if let Some(account) = &target.account {
        return account.clone();
    }
    let (email, username) = common::fresh_email("auth");
    let password = "contract-password".to_string();
    target
        .service
        .as_ref()
        .expect("local target has a service client")
        .create_user(&email, &password, Some(&username))
        .await
        .expect("create user");
    (email, password)
}

#[tokio::test]
async fn sign_in_refresh_and_sign_out() {
    for target in common::targets("sign_in_refresh_and_sign_out") {
        let t = target.name;
        let (email, password) = account(&target).await;
        let client = &target.client;

        let session = client
            .sign_in_with_password(&email, &password)
            .await
            .expect("sign in");
        assert_eq!(session.token_type.to_lowercase(), "bearer", "{t}");
        assert_eq!(
            session.user.email.as_deref(),
            Some(email.to_lowercase().as_str()),
            "{t}"
        );
        let user = client
            .get_user(&session.access_token)
            .await
            .expect("get user");
        assert_eq!(user.id, session.user.id, "{t}");

        let refreshed = client
            .refresh_session(&session.refresh_token)
            .await
            .expect("refresh");
        assert_ne!(
            refreshed.refresh_token, session.refresh_token,
            "{t}: refresh tokens rotate"
        );
        assert_eq!(refreshed.user.id, session.user.id, "{t}");

        // Hosted projects forgive a reuse within `refresh_token_reuse_interval` (10 s in
        // config.toml); the stand-in never does. Past the interval both refuse it.
        if !target.is_local() {
            tokio::time::sleep(Duration::from_secs(11)).await;
        }
        let reused = client
            .refresh_session(&session.refresh_token)
            .await
            .unwrap_err();
        assert!(
            matches!(reused, Error::SessionExpired(_)),
            "{t}: {reused:?}"
        );
        assert_eq!(reused.code(), Some("refresh_token_already_used"), "{t}");

        // A fresh session for the sign-out checks (the reuse above revoked the previous one).
        let session = client
            .sign_in_with_password(&email, &password)
            .await
            .expect("sign in again");
        client
            .sign_out(&session.access_token, SignOutScope::Local)
            .await
            .expect("sign out");
        let after = client
            .refresh_session(&session.refresh_token)
            .await
            .unwrap_err();
        assert!(matches!(after, Error::SessionExpired(_)), "{t}: {after:?}");
    }
}

#[tokio::test]
async fn wrong_credentials_and_bad_tokens_are_typed() {
    for target in common::targets("wrong_credentials_and_bad_tokens_are_typed") {
        let t = target.name;
        let (email, _) = account(&target).await;
        let client = &target.client;
        let wrong = client
            .sign_in_with_password(&email, "definitely-wrong")
            .await
            .unwrap_err();
        assert!(
            matches!(wrong, Error::InvalidCredentials(_)),
            "{t}: {wrong:?}"
        );
        assert_eq!(wrong.status(), Some(400), "{t}");

        let garbage = client.get_user("not-a-jwt").await.unwrap_err();
        assert!(
            matches!(garbage, Error::Unauthenticated(_)),
            "{t}: {garbage:?}"
        );
        let garbage = client
            .as_user("not-a-jwt")
            .can_view_channel(uuid::Uuid::new_v4())
            .await
            .unwrap_err();
        assert!(
            matches!(garbage, Error::Unauthenticated(_)),
            "{t}: {garbage:?}"
        );
        // A token that cannot even be a header value is refused before any request.
        let newline = client
            .as_user("a\nb")
            .can_view_channel(uuid::Uuid::new_v4())
            .await
            .unwrap_err();
        assert!(
            matches!(newline, Error::Unauthenticated(_)),
            "{t}: {newline:?}"
        );

        let bogus = client
            .refresh_session("no-such-refresh-token")
            .await
            .unwrap_err();
        assert!(matches!(bogus, Error::SessionExpired(_)), "{t}: {bogus:?}");
    }
}

#[tokio::test]
async fn sign_up_signs_in_and_refuses_duplicates() {
    // Hosted projects may rate-limit or require confirmation for signups; the account used
    // there already exists, so this one is local only.
    let target = common::local();
    let (email, username) = common::fresh_email("signup");
    let session = target
        .client
        .sign_up(
            &email,
            "signup-password",
            Some(serde_json::json!({"username": username})),
        )
        .await
        .expect("sign up");
    assert_eq!(session.user.user_metadata["username"], username.as_str());
    let again = target
        .client
        .sign_up(&email, "signup-password", None)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Conflict(_)), "{again:?}");
    let weak = target
        .client
        .sign_up("weak@example.test", "123", None)
        .await
        .unwrap_err();
    assert!(matches!(weak, Error::InvalidInput(_)), "{weak:?}");
    assert_eq!(weak.code(), Some("weak_password"));
}

#[tokio::test]
async fn a_wrong_anon_key_is_refused_by_the_gateway() {
    for target in common::targets("a_wrong_anon_key_is_refused_by_the_gateway") {
        let client = HavenClient::new(
            ProjectConfig::new(target.client.config().url(), "wrong-key").expect("config"),
        )
        .expect("client");
        let err = client
            .sign_in_with_password("x@example.test", "whatever-password")
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Unauthenticated(_)),
            "{}: {err:?}",
            target.name
        );
        assert_eq!(err.status(), Some(401), "{}", target.name);
    }
}
