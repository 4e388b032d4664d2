//! The client protocol at the socket, against the real stack: token verification (each
//! refusal of issue 4 item 2), token refresh without reconnecting, bad input, rate limits,
//! `/healthz`, `/metrics` and graceful shutdown.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use haven_proto::client::{ClientRequest, ErrorCode, ServerEvent};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const HS_SECRET: &str = "legacy-project-jwt-secret-at-least-32-characters";

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn header(token: &str) -> serde_json::Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

async fn auth_reply(h: &Harness, token: &str) -> haven_proto::client::ServerMessage {
    let mut ws = Ws::connect(&h.ws_url()).await;
    ws.send_request(
        Some(1),
        ClientRequest::Auth {
            access_token: token.into(),
        },
    )
    .await;
    ws.reply(1).await
}

fn refused(m: &haven_proto::client::ServerMessage) -> (ErrorCode, String) {
    match &m.body {
        ServerEvent::Error { code, message } => (*code, message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_token_is_refused_with_its_own_error() {
    let h = Harness::start_with(|c| c.jwt_secret = Some(HS_SECRET.into())).await;
    let account = h.account("jwt").await;
    let good = account.token.clone();
    let claims = payload(&good);
    let kid = header(&good)["kid"].as_str().unwrap().to_string();
    let sig = good.split('.').nth(2).unwrap().to_string();

    // The real ES256 token from the auth server is accepted.
    assert!(matches!(
        auth_reply(&h, &good).await.body,
        ServerEvent::Ready { .. }
    ));

    // alg: none.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": kid})),
        b64(&claims)
    );
    let (code, msg) = refused(&auth_reply(&h, &none).await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(msg.contains("`none`"), "{msg}");

    // Wrong key type: an RS256 header naming the EC key.
    let rs = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "kid": kid})),
        b64(&claims),
        sig
    );
    let (code, msg) = refused(&auth_reply(&h, &rs).await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(msg.contains("RS256"), "{msg}");

    // Bad signature: someone else's claims under the real signature.
    let mut forged_claims = claims.clone();
    forged_claims["sub"] = json!(uuid::Uuid::new_v4());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&forged_claims), parts[2]);
    let (code, msg) = refused(&auth_reply(&h, &forged).await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(msg.contains("signature"), "{msg}");

    // Unknown kid: a key the project never published (one JWKS refetch, then refused).
    let refreshes_before = metric(&h, "haven_signaling_jwks_refreshes_total");
    let foreign = haven_proto::grant::GrantSigner::generate().unwrap();
    let mut head = Header::new(Algorithm::ES256);
    head.kid = Some("rotated-away".into());
    let pem = foreign.to_pkcs8_pem();
    let unknown = jsonwebtoken::encode(
        &head,
        &claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let (code, msg) = refused(&auth_reply(&h, &unknown).await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(msg.contains("rotated-away"), "{msg}");
    let (code, _) = refused(&auth_reply(&h, &unknown).await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert_eq!(
        metric(&h, "haven_signaling_jwks_refreshes_total"),
        refreshes_before + 1,
        "unknown kids refetch the JWKS at most once per cooldown"
    );

    // Expired (HS256 with the legacy project secret, which this instance also accepts).
    let hs = |c: &serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let now = haven_signaling::voice::unix_now() as i64;
    let mut legacy = claims.clone();
    legacy["exp"] = json!(now + 600);
    assert!(matches!(
        auth_reply(&h, &hs(&legacy)).await.body,
        ServerEvent::Ready { .. }
    ));
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 120);
    let (code, _) = refused(&auth_reply(&h, &hs(&expired)).await);
    assert_eq!(code, ErrorCode::TokenExpired);

    // Wrong audience and issuer.
    let mut aud = legacy.clone();
    aud["aud"] = json!("anon");
    assert!(refused(&auth_reply(&h, &hs(&aud)).await)
        .1
        .contains("audience"));
    let mut iss = legacy.clone();
    iss["iss"] = json!("https://elsewhere.example/auth/v1");
    assert!(refused(&auth_reply(&h, &hs(&iss)).await)
        .1
        .contains("issuer"));
    // A forged HS256 token (wrong secret).
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &legacy,
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    assert!(refused(&auth_reply(&h, &wrong).await)
        .1
        .contains("signature"));
    h.server.shutdown();
}

fn metric(h: &Harness, name: &str) -> u64 {
    h.server
        .app
        .metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .map(|v| v.parse().unwrap())
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_replaces_the_old_one_without_reconnecting() {
    let h = Harness::start().await;
    let email = format!("refresh-{}@signaling.test", uuid::Uuid::new_v4().simple());
    h.service
        .create_user(&email, "signaling-test-password", None)
        .await
        .unwrap();
    let session = h
        .client
        .sign_in_with_password(&email, "signaling-test-password")
        .await
        .unwrap();
    let mut ws = Ws::connect(&h.ws_url()).await;
    ws.send_request(
        Some(1),
        ClientRequest::Auth {
            access_token: session.access_token.clone(),
        },
    )
    .await;
    assert!(matches!(ws.reply(1).await.body, ServerEvent::Ready { .. }));

    let refreshed = h
        .client
        .refresh_session(&session.refresh_token)
        .await
        .unwrap();
    ws.send_request(
        Some(2),
        ClientRequest::Auth {
            access_token: refreshed.access_token.clone(),
        },
    )
    .await;
    assert!(matches!(ws.reply(2).await.body, ServerEvent::Ready { .. }));

    // Another user's token cannot take over the connection.
    let other = h.account("other").await;
    ws.send_request(
        Some(3),
        ClientRequest::Auth {
            access_token: other.token,
        },
    )
    .await;
    assert_eq!(refused(&ws.reply(3).await).0, ErrorCode::Unauthenticated);
    ws.send_request(Some(4), ClientRequest::Ping).await;
    assert_eq!(ws.reply(4).await.body, ServerEvent::Pong);
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_the_connection_stays_up() {
    let h = Harness::start().await;
    let account = h.account("input").await;
    let mut ws = Ws::connect(&h.ws_url()).await;
    ws.send_request(Some(1), ClientRequest::Leave).await;
    assert_eq!(refused(&ws.reply(1).await).0, ErrorCode::Unauthenticated);
    ws.send_request(
        Some(2),
        ClientRequest::Auth {
            access_token: account.token.clone(),
        },
    )
    .await;
    assert!(matches!(ws.reply(2).await.body, ServerEvent::Ready { .. }));

    let cases = [
        ("{not json", ErrorCode::BadMessage),
        (r#"{"v":1,"id":5,"type":"launch"}"#, ErrorCode::BadMessage),
        (
            r#"{"v":1,"id":6,"type":"mute","muted":"loud"}"#,
            ErrorCode::BadMessage,
        ),
        (
            r#"{"v":1,"id":7,"type":"join","channel_id":"not-a-uuid","sdp":"v=0"}"#,
            ErrorCode::BadMessage,
        ),
        (
            r#"{"v":9,"id":8,"type":"ping"}"#,
            ErrorCode::UnsupportedVersion,
        ),
        (r#"[1,2,3]"#, ErrorCode::BadMessage),
    ];
    for (text, want) in cases {
        ws.send_text(text).await;
        let m = ws.recv().await;
        assert_eq!(refused(&m).0, want, "{text}");
    }
    let big = format!(
        r#"{{"v":1,"id":9,"type":"join","channel_id":"00000000-0000-4000-8000-000000000001","sdp":"{}"}}"#,
        "a".repeat(100_000)
    );
    ws.send_text(&big).await;
    assert_eq!(refused(&ws.recv().await).0, ErrorCode::TooLarge);
    ws.stream
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2, 3,
        ]))
        .await
        .unwrap();
    assert_eq!(refused(&ws.recv().await).0, ErrorCode::BadMessage);
    ws.send_request(Some(10), ClientRequest::Mute { muted: true })
        .await;
    assert_eq!(refused(&ws.reply(10).await).0, ErrorCode::NotInVoice);
    ws.send_request(Some(11), ClientRequest::Ping).await;
    assert_eq!(ws.reply(11).await.body, ServerEvent::Pong);
    h.server.shutdown();
}

use futures_util::SinkExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_and_the_connection_survives() {
    let h = Harness::start_with(|c| {
        c.ws_burst = 10;
        c.ws_rate = 5.0;
        c.join_burst = 2;
        c.join_rate = 0.1;
    })
    .await;
    let c = h.community().await;
    let mut ws = h.connect(&c.member).await;
    for i in 0..30 {
        ws.send_request(Some(100 + i), ClientRequest::Ping).await;
    }
    let replies = ws.drain(Duration::from_millis(500)).await;
    let limited = replies
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                ServerEvent::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .count();
    let pongs = replies
        .iter()
        .filter(|m| m.body == ServerEvent::Pong)
        .count();
    assert!(
        limited >= 15 && pongs >= 8,
        "limited {limited}, pongs {pongs}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    // Joins have their own, tighter bucket (no node: each join fails fast, but is counted).
    let mut codes = Vec::new();
    for i in 0..4 {
        ws.send_request(
            Some(200 + i),
            ClientRequest::Join {
                channel_id: c.lounge,
                sdp: OFFER_SDP.into(),
            },
        )
        .await;
        codes.push(refused(&ws.reply(200 + i).await).0);
    }
    assert_eq!(
        &codes[..2],
        &[ErrorCode::Unavailable, ErrorCode::Unavailable]
    );
    assert!(
        codes[2..].iter().all(|c| *c == ErrorCode::RateLimited),
        "{codes:?}"
    );
    ws.send_request(Some(300), ClientRequest::Ping).await;
    assert_eq!(ws.reply(300).await.body, ServerEvent::Pong);
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_graceful_shutdown() {
    let h = Harness::start().await;
    let _node = h.fake_node("sfu-health").await;
    let http = reqwest::Client::new();
    let health: serde_json::Value = http
        .get(format!("http://{}/healthz", h.server.http_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["sfu_nodes"][0]["id"], "sfu-health");
    let metrics = http
        .get(format!("http://{}/metrics", h.server.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("haven_signaling_sfu_nodes 1"), "{metrics}");
    assert!(metrics.contains("# TYPE haven_signaling_join_authorization_seconds histogram"));

    let account = h.account("shutdown").await;
    let mut ws = h.connect(&account).await;
    let server = h.server;
    server.shutdown();
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        use futures_util::StreamExt;
        while let Some(f) = ws.stream.next().await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = f {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert_eq!(close, Some(1001), "going away");
    tokio::time::timeout(Duration::from_secs(11), server.wait())
        .await
        .expect("every task stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_database_and_api_give_clear_errors_not_a_crash() {
    // A real token first (the local auth server is up), then a signaling instance whose
    // database and Supabase API are unreachable.
    let account = Harness::start().await.account("deaddb").await;
    let h = Harness::start_with(|c| {
        c.database_url = "postgres://postgres:postgres@127.0.0.1:9/nowhere".into();
        c.supabase_url = "http://127.0.0.1:9".into();
    })
    .await;
    let _node = h.fake_node("sfu-deaddb").await;
    let health = reqwest::get(format!("http://{}/healthz", h.server.http_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["database"], "unreachable");

    // Tokens are still verified (locally, with the JWKS from the auth server); the
    // memberships cannot be loaded, which is logged, not fatal.
    let mut ws = Ws::connect(&h.ws_url()).await;
    ws.send_request(
        Some(1),
        ClientRequest::Auth {
            access_token: account.token.clone(),
        },
    )
    .await;
    assert!(matches!(ws.reply(1).await.body, ServerEvent::Ready { .. }));
    // Joining needs the API: a clear, retryable error.
    ws.send_request(
        Some(3),
        ClientRequest::Join {
            channel_id: uuid::Uuid::new_v4(),
            sdp: OFFER_SDP.into(),
        },
    )
    .await;
    assert_eq!(refused(&ws.reply(3).await).0, ErrorCode::Unavailable);
    ws.send_request(Some(2), ClientRequest::Ping).await;
    assert_eq!(ws.reply(2).await.body, ServerEvent::Pong);
    // The listener keeps retrying with backoff.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(metric(&h, "haven_signaling_db_listener_reconnects_total") >= 2);
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_fail_cleanly_when_the_api_is_down() {
    // Keys come from a live JWKS; the REST API used for authorization is down.
    let live = Harness::start().await;
    let c = live.community().await;
    let h = Harness::start_with(|cfg| {
        cfg.jwks_url = live.stack.jwks_url.clone();
        cfg.supabase_url = "http://127.0.0.1:9".into();
        cfg.jwt_issuer = live.stack.issuer.clone();
    })
    .await;
    let _node = h.fake_node("sfu-apidown").await;
    let mut ws = h.connect(&c.member).await;
    ws.send_request(
        Some(1),
        ClientRequest::Join {
            channel_id: c.lounge,
            sdp: OFFER_SDP.into(),
        },
    )
    .await;
    let (code, msg) = refused(&ws.reply(1).await);
    assert_eq!(code, ErrorCode::Unavailable, "{msg}");
    ws.send_request(Some(2), ClientRequest::Ping).await;
    assert_eq!(ws.reply(2).await.body, ServerEvent::Pong);
    h.server.shutdown();
    live.server.shutdown();
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_haven-signaling"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for env in [
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_JWT_SECRET",
        "SUPABASE_JWKS_URL",
        "DATABASE_URL",
        "HAVEN_NODE_SECRET",
        "HAVEN_GRANT_KEY_FILE",
        "HAVEN_LOG_JSON",
    ] {
        assert!(text.contains(env), "--help mentions {env}:\n{text}");
    }
}
