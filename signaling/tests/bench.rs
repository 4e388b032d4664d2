//! Measurements for the issue's closing note, run on demand (they take a while and print
//! numbers rather than assert tight bounds):
//!
//! ```sh
//! cargo test -p haven-signaling --test bench -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::*;
use haven_proto::client::{ClientRequest, ServerEvent};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn join_authorization_latency() {
    let h = Harness::start_with(|c| {
        c.join_burst = 10_000;
        c.join_rate = 10_000.0;
        c.ws_burst = 10_000;
        c.ws_rate = 10_000.0;
    })
    .await;
    let c = h.community().await;
    let _node = h.fake_node("sfu-bench").await;
    let n = 300;

    // The RPC itself, as signaling calls it (PostgREST with the user's JWT, RLS as the user).
    let api = h.client.as_user(&c.member.token);
    for _ in 0..20 {
        api.authorize_voice_join(c.lounge).await.unwrap();
    }
    let mut rpc = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        api.authorize_voice_join(c.lounge).await.unwrap();
        rpc.push(t.elapsed());
    }
    summary("authorize_voice_join RPC (as the user)", rpc);

    // The whole join through signaling: WS request → authorize → place → grant → offer to
    // the node and its answer → joined.
    let mut ws = h.connect(&c.member).await;
    let mut joins = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        ws.send_request(
            Some(i * 2 + 10),
            ClientRequest::Join {
                channel_id: c.lounge,
                sdp: OFFER_SDP.into(),
            },
        )
        .await;
        let reply = ws.reply(i * 2 + 10).await;
        joins.push(t.elapsed());
        assert!(
            matches!(reply.body, ServerEvent::Joined { .. }),
            "{reply:?}"
        );
        ws.send_request(Some(i * 2 + 11), ClientRequest::Leave)
            .await;
        ws.reply(i * 2 + 11).await;
    }
    summary("join through signaling (WS → joined, fake node)", joins);
    let text = h.server.app.metrics.render();
    for line in text
        .lines()
        .filter(|l| l.starts_with("haven_signaling_join_authorization_seconds_"))
    {
        println!("{line}");
    }
    h.server.shutdown();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn idle_connections_per_100_mb() {
    init_logs();
    let stack = stack();
    let state = temp_dir("bench-state");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_haven-signaling"))
        .env("HAVEN_SIGNALING_LISTEN", format!("127.0.0.1:{port}"))
        .env("HAVEN_NODE_LISTEN", "127.0.0.1:0")
        .env("SUPABASE_URL", stack.api_url.clone().unwrap())
        .env("SUPABASE_ANON_KEY", stack.anon_key.clone().unwrap())
        .env("SUPABASE_JWKS_URL", stack.jwks_url.clone().unwrap())
        .env("SUPABASE_JWT_ISSUER", stack.issuer.clone().unwrap())
        .env("DATABASE_URL", &stack.database_url)
        .env("HAVEN_NODE_SECRET", NODE_SECRET)
        .env("HAVEN_SIGNALING_STATE_DIR", &state)
        .env("HAVEN_MAX_CONNECTIONS_PER_USER", "1000000")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn haven-signaling");
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A real signed-in user whose connections sit idle after `ready`.
    let h_client = haven_supabase::HavenClient::new(
        haven_supabase::ProjectConfig::new(
            stack.api_url.clone().unwrap(),
            stack.anon_key.clone().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let service = haven_supabase::ServiceClient::new(
        stack.api_url.as_deref().unwrap(),
        stack.service_role_key.as_deref().unwrap(),
    )
    .unwrap();
    let email = format!("idle-{}@signaling.test", uuid::Uuid::new_v4().simple());
    service
        .create_user(&email, "signaling-test-password", None)
        .await
        .unwrap();
    let token = h_client
        .sign_in_with_password(&email, "signaling-test-password")
        .await
        .unwrap()
        .access_token;

    let pid = child.id();
    let mut conns = Vec::new();
    // Warm up allocator arenas and lazy statics with a first batch, then measure the slope.
    let open = |n: usize, conns: &mut Vec<Ws>| {
        let url = url.clone();
        let token = token.clone();
        let start = conns.len();
        async move {
            let _ = start;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let mut ws = Ws::connect(&url).await;
                ws.send_request(
                    Some(1),
                    ClientRequest::Auth {
                        access_token: token.clone(),
                    },
                )
                .await;
                let r = ws.recv().await;
                assert!(
                    matches!(r.body, ServerEvent::Ready { .. }),
                    "conn {i}: {r:?}"
                );
                out.push(ws);
            }
            out
        }
    };
    conns.extend(open(200, &mut Vec::new()).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let n = 3000;
    conns.extend(open(n, &mut Vec::new()).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per_conn_kib = (after - before) as f64 / n as f64;
    println!(
        "idle authenticated WebSockets: RSS {before} KiB → {after} KiB for {n} more; \
         {per_conn_kib:.1} KiB each → {:.0} connections per 100 MB",
        100.0 * 1024.0 / per_conn_kib
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn service_role_check_postgrest_vs_direct() {
    let h = Harness::start().await;
    let c = h.community().await;
    let user = haven_proto::UserId(c.member.id);
    let n = 300;
    for _ in 0..20 {
        h.service
            .can_view_channel_as(c.member.id, c.mods_only)
            .await
            .unwrap();
        h.server
            .app
            .db
            .can_view_channel_as(user, c.mods_only)
            .await
            .unwrap();
    }
    let mut rest = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        assert!(!h
            .service
            .can_view_channel_as(c.member.id, c.mods_only)
            .await
            .unwrap());
        rest.push(t.elapsed());
    }
    summary("can_view_channel_as via PostgREST (service key)", rest);
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        assert!(!h
            .server
            .app
            .db
            .can_view_channel_as(user, c.mods_only)
            .await
            .unwrap());
        direct.push(t.elapsed());
    }
    summary(
        "can_view_channel_as direct (prepared, SET ROLE service_role)",
        direct,
    );
    h.server.shutdown();
}
