//! `/auth/v1` end to end, through the real binary and database: the GoTrue subset's flows,
//! claims and error shapes, and that bad input is refused without hurting the server.

mod common;

use std::time::Duration;

use common::{access_token, claims, LocalApi};
use serde_json::json;

#[tokio::test]
async fn signup_returns_a_gotrue_session_and_creates_the_profile() {
    let api = LocalApi::start(&[]);
    let (email, session) = api.sign_up_fresh("signup-password").await;
    assert_eq!(session["token_type"], "bearer");
    assert_eq!(session["expires_in"], 3600);
    assert!(session["refresh_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 40));
    let user = &session["user"];
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["aud"], "authenticated");
    assert_eq!(user["role"], "authenticated");
    assert_eq!(user["app_metadata"]["provider"], "email");
    assert!(
        user["email_confirmed_at"].is_string(),
        "autoconfirm: {user}"
    );

    let token = access_token(&session);
    let c = claims(&token);
    for claim in [
        "sub",
        "aud",
        "role",
        "exp",
        "iat",
        "iss",
        "email",
        "app_metadata",
        "user_metadata",
        "session_id",
        "aal",
        "amr",
        "is_anonymous",
    ] {
        assert!(c.get(claim).is_some(), "claim {claim} missing from {c}");
    }
    assert_eq!(c["iss"], api.issuer.as_str());
    assert_eq!(c["sub"], user["id"]);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600,
        "expiry follows --jwt-expiry-secs"
    );

    // The profile trigger on auth.users ran: the user can read their own profile over REST.
    let username = user["user_metadata"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, rows) = api
        .get(
            &format!(
                "/rest/v1/profiles?select=username&id=eq.{}",
                user["id"].as_str().unwrap()
            ),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows, json!([{"username": username}]));
}

#[tokio::test]
async fn sign_in_user_and_errors_have_gotrue_shapes() {
    let api = LocalApi::start(&[]);
    let (email, _) = api.sign_up_fresh("right-password").await;

    let (status, body) = api.sign_in(&email.to_uppercase(), "right-password").await;
    assert_eq!(status, 200, "email is case-insensitive: {body}");
    let token = access_token(&body);
    let (status, user) = api.get("/auth/v1/user", Some(&token)).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["email"], email.as_str());
    assert!(user["last_sign_in_at"].is_string());

    let (status, body) = api.sign_in(&email, "wrong-password").await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("invalid_credentials")),
        "{body}"
    );
    assert_eq!(body["code"], 400);
    assert_eq!(body["msg"], "Invalid login credentials");
    // Unknown emails get the very same answer (no account-existence oracle).
    let (status, unknown) = api
        .sign_in("nobody-here@example.test", "whatever-password")
        .await;
    assert_eq!((status, unknown), (400, body));

    let (status, body) = api
        .post(
            "/auth/v1/signup",
            None,
            &json!({"email": email, "password": "another-password"}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (422, &json!("user_already_exists")),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/auth/v1/signup",
            None,
            &json!({"email": "short@example.test", "password": "12345"}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (422, &json!("weak_password")),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/auth/v1/signup",
            None,
            &json!({"email": "not-an-email", "password": "long-enough"}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("validation_failed")),
        "{body}"
    );
    let (status, body) = api
        .post("/auth/v1/token?grant_type=magic", None, &json!({}))
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("unsupported_grant_type")),
        "{body}"
    );
    let (status, body) = api.get("/auth/v1/user", None).await;
    assert_eq!(
        (status, &body["error_code"]),
        (401, &json!("no_authorization")),
        "{body}"
    );
    let (status, body) = api.get("/auth/v1/settings-nope", None).await;
    assert_eq!(
        (status, &body["error_code"]),
        (404, &json!("not_found")),
        "{body}"
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
    let api = LocalApi::start(&[]);
    let (_, session) = api.sign_up_fresh("rotate-password").await;
    let first = session["refresh_token"].as_str().unwrap().to_string();
    let session_id = claims(&access_token(&session))["session_id"].clone();

    let (status, refreshed) = api
        .post(
            "/auth/v1/token?grant_type=refresh_token",
            None,
            &json!({"refresh_token": first}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let second = refreshed["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(first, second, "refresh tokens rotate");
    assert_eq!(
        claims(&access_token(&refreshed))["session_id"],
        session_id,
        "same session"
    );

    // Reusing the spent token is refused in GoTrue's shape and revokes the session, so the
    // token that replaced it (possibly held by a thief) dies too.
    let (status, body) = api
        .post(
            "/auth/v1/token?grant_type=refresh_token",
            None,
            &json!({"refresh_token": first}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("refresh_token_already_used")),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/auth/v1/token?grant_type=refresh_token",
            None,
            &json!({"refresh_token": second}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("refresh_token_not_found")),
        "{body}"
    );
    let (status, body) = api
        .get("/auth/v1/user", Some(&access_token(&refreshed)))
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (403, &json!("session_not_found")),
        "{body}"
    );

    let (status, body) = api
        .post(
            "/auth/v1/token?grant_type=refresh_token",
            None,
            &json!({"refresh_token": "made-up"}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("refresh_token_not_found")),
        "{body}"
    );
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_succeed_exactly_once() {
    let api = LocalApi::start(&[]);
    let (_, session) = api.sign_up_fresh("race-password").await;
    let token = session["refresh_token"].as_str().unwrap().to_string();
    let body = json!({"refresh_token": token});
    let refresh = || api.post("/auth/v1/token?grant_type=refresh_token", None, &body);
    let (a, b, c, d) = tokio::join!(refresh(), refresh(), refresh(), refresh());
    let ok = [a.0, b.0, c.0, d.0].iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 1, "exactly one of the racing refreshes wins");
}

#[tokio::test]
async fn logout_ends_sessions_and_their_refresh_tokens() {
    let api = LocalApi::start(&[]);
    let (email, first) = api.sign_up_fresh("logout-password").await;
    let (_, second) = api.sign_in(&email, "logout-password").await;

    // scope=local ends only this session.
    let response = api
        .request(reqwest::Method::POST, "/auth/v1/logout?scope=local")
        .bearer_auth(access_token(&first))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let (status, _) = api.get("/auth/v1/user", Some(&access_token(&first))).await;
    assert_eq!(status, 403);
    let (status, _) = api.get("/auth/v1/user", Some(&access_token(&second))).await;
    assert_eq!(status, 200, "other sessions survive a local logout");

    // Default (global) ends the rest.
    let response = api
        .request(reqwest::Method::POST, "/auth/v1/logout")
        .bearer_auth(access_token(&second))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let (status, body) = api
        .post(
            "/auth/v1/token?grant_type=refresh_token",
            None,
            &json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("refresh_token_not_found")),
        "{body}"
    );
}

#[tokio::test]
async fn expired_and_forged_tokens_are_refused_by_auth_and_rest() {
    let mut api = LocalApi::start(&["--jwt-expiry-secs", "1"]);
    let (_, session) = api.sign_up_fresh("expiry-password").await;
    let token = access_token(&session);

    // Forged: same header and claims, signature from elsewhere.
    let forged = format!("{}.{}", token.rsplit_once('.').unwrap().0, "c2lnbmF0dXJl");
    let (status, body) = api.get("/auth/v1/user", Some(&forged)).await;
    assert_eq!(
        (status, &body["error_code"]),
        (403, &json!("bad_jwt")),
        "{body}"
    );
    let (status, body) = api
        .rpc("create_community", &forged, &json!({"p_name": "forged"}))
        .await;
    assert_eq!((status, &body["code"]), (401, &json!("PGRST301")), "{body}");
    let (status, body) = api
        .rpc(
            "create_community",
            "not.a.jwt",
            &json!({"p_name": "garbage"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = api.get("/auth/v1/user", Some(&token)).await;
    assert_eq!(
        (status, &body["error_code"]),
        (403, &json!("bad_jwt")),
        "{body}"
    );
    assert!(body["msg"].as_str().unwrap().contains("expired"), "{body}");
    let (status, body) = api
        .rpc("create_community", &token, &json!({"p_name": "late"}))
        .await;
    assert_eq!((status, &body["code"]), (401, &json!("PGRST303")), "{body}");

    // The refresh token still works after the access token expired.
    let (status, _) = api
        .post(
            "/auth/v1/token?grant_type=refresh_token",
            None,
            &json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200);
    api.assert_alive();
}

#[tokio::test]
async fn malformed_mistyped_and_oversized_auth_bodies_get_clear_errors() {
    let mut api = LocalApi::start(&[]);
    let (status, body) = api
        .post_raw("/auth/v1/signup", None, b"{\"email\":".to_vec())
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("bad_json")),
        "{body}"
    );
    let (status, body) = api
        .post_raw(
            "/auth/v1/signup",
            None,
            br#"{"email": 5, "password": []}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("bad_json")),
        "{body}"
    );
    let (status, body) = api
        .post_raw("/auth/v1/token?grant_type=password", None, Vec::new())
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("bad_json")),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/auth/v1/signup",
            None,
            &json!({"email": "meta@example.test", "password": "long-enough", "data": [1]}),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("validation_failed")),
        "{body}"
    );
    let big = format!(
        r#"{{"email":"big@example.test","password":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, body) = api
        .post_raw("/auth/v1/signup", None, big.into_bytes())
        .await;
    assert_eq!(
        (status, &body["error_code"]),
        (413, &json!("request_too_large")),
        "{body}"
    );

    // Still serving.
    api.assert_alive();
    let (status, _) = api.get("/auth/v1/health", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_apikey_is_required_except_for_the_jwks() {
    let api = LocalApi::start(&[]);
    let http = common::http();
    let (status, body) = common::send(http.get(format!("{}/rest/v1/profiles", api.url))).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "No API key found in request");
    let (status, body) = common::send(
        http.get(format!("{}/auth/v1/user", api.url))
            .header("apikey", "wrong"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Invalid API key");

    let (status, jwks) =
        common::send(http.get(format!("{}/auth/v1/.well-known/jwks.json", api.url))).await;
    assert_eq!(status, 200);
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str()),
        (Some("EC"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "no private key material");
    // Issued tokens and the API keys name that key.
    let (_, session) = api.sign_up_fresh("jwks-password").await;
    for token in [
        access_token(&session),
        api.anon_key.clone(),
        api.service_role_key.clone(),
    ] {
        let header = token.split('.').next().unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], key["kid"]);
        assert_eq!(header["alg"], "ES256");
    }
    assert_eq!(claims(&api.anon_key)["role"], "anon");
    assert_eq!(claims(&api.service_role_key)["role"], "service_role");
}

#[tokio::test]
async fn admin_users_need_the_service_role() {
    let api = LocalApi::start(&[]);
    let email = format!("admin-made-{}@example.test", uuid::Uuid::new_v4().simple());
    let body = json!({"email": email, "password": "admin-password", "email_confirm": true});

    let (_, session) = api.sign_up_fresh("not-admin-password").await;
    let (status, refused) = api
        .post("/auth/v1/admin/users", Some(&access_token(&session)), &body)
        .await;
    assert_eq!(
        (status, &refused["error_code"]),
        (403, &json!("not_admin")),
        "{refused}"
    );

    let http = common::http();
    let admin = |req: reqwest::RequestBuilder| {
        req.header("apikey", &api.service_role_key)
            .bearer_auth(&api.service_role_key)
    };
    let (status, user) =
        common::send(admin(http.post(format!("{}/auth/v1/admin/users", api.url))).json(&body))
            .await;
    assert_eq!(status, 200, "{user}");
    let (status, _) = api.sign_in(&email, "admin-password").await;
    assert_eq!(status, 200, "admin-created users can sign in");
    let id = user["id"].as_str().unwrap();
    let (status, _) = common::send(admin(
        http.delete(format!("{}/auth/v1/admin/users/{id}", api.url)),
    ))
    .await;
    assert_eq!(status, 200);
    let (status, _) = api.sign_in(&email, "admin-password").await;
    assert_eq!(status, 400, "deleted users cannot sign in");
}

#[tokio::test]
async fn the_seeded_demo_user_signs_in_with_its_pgcrypto_hash() {
    let api = LocalApi::start(&[]);
    let (status, body) = api.sign_in("demo@haven.local", "haven-demo-password").await;
    if status == 400 && body["error_code"] == "invalid_credentials" {
        // The stack was started without the seed (`seed: false`); nothing to check.
        common::note("skipped: the demo user is not seeded in this stack");
        return;
    }
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], "11111111-1111-4111-8111-111111111111");
}
