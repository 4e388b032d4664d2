//! `/rest/v1` end to end: postrust behind the wrapper, with real tokens from `/auth/v1`, against
//! the migrations. Covers the acceptance checks (voice grant for a member, 403/42501 for an
//! outsider), PostgREST response shapes, the three wrapper fixes, and bad input.

mod common;

use std::time::Duration;

use common::{access_token, LocalApi};
use serde_json::{json, Value};

/// A user who owns a fresh community; returns (token, community id, Lounge id, general id).
async fn owner_with_community(api: &LocalApi) -> (String, String, String, String) {
    let (_, session) = api.sign_up_fresh("owner-password").await;
    let token = access_token(&session);
    let (status, community) = api
        .rpc(
            "create_community",
            &token,
            &json!({"p_name": "Test Community"}),
        )
        .await;
    assert_eq!(status, 200, "{community}");
    let community = community
        .as_str()
        .expect("create_community returns a bare uuid")
        .to_string();
    let (status, channels) = api
        .rpc(
            "list_channels",
            &token,
            &json!({"p_community_id": community}),
        )
        .await;
    assert_eq!(status, 200, "{channels}");
    let id_of = |name: &str| {
        channels
            .as_array()
            .expect("list_channels returns an array")
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("no {name} in {channels}"))
            .to_string()
    };
    let (lounge, general) = (id_of("Lounge"), id_of("general"));
    (token, community, lounge, general)
}

#[tokio::test]
async fn a_member_gets_a_voice_grant_and_an_outsider_gets_403_42501() {
    let api = LocalApi::start(&[]);
    let (owner, community, lounge, general) = owner_with_community(&api).await;

    let (status, grant) = api
        .rpc(
            "authorize_voice_join",
            &owner,
            &json!({"p_channel_id": lounge}),
        )
        .await;
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["channel_id"], lounge.as_str());
    assert_eq!(grant["community_id"], community.as_str());
    assert_eq!(grant["can_speak"], true);
    assert!(
        grant["room"].is_string() && grant["display_name"].is_string(),
        "{grant}"
    );

    let (_, outsider) = api.sign_up_fresh("outsider-password").await;
    let (status, body) = api
        .rpc(
            "authorize_voice_join",
            &access_token(&outsider),
            &json!({"p_channel_id": lounge}),
        )
        .await;
    assert_eq!((status, &body["code"]), (403, &json!("42501")), "{body}");

    // Without a user token (anon key only) PostgREST says 401 for the same SQLSTATE.
    let (status, body) = api
        .post(
            "/rest/v1/rpc/authorize_voice_join",
            None,
            &json!({"p_channel_id": lounge}),
        )
        .await;
    assert_eq!((status, &body["code"]), (401, &json!("42501")), "{body}");

    // A text channel is invalid input with a machine-readable hint.
    let (status, body) = api
        .rpc(
            "authorize_voice_join",
            &owner,
            &json!({"p_channel_id": general}),
        )
        .await;
    assert_eq!(
        (status, &body["code"], &body["hint"]),
        (400, &json!("22023"), &json!("not_voice_channel")),
        "{body}"
    );
}

#[tokio::test]
async fn the_seeded_demo_community_grants_members_and_refuses_the_outsider() {
    let api = LocalApi::start(&[]);
    let (status, demo) = api.sign_in("demo@haven.local", "haven-demo-password").await;
    if status != 200 {
        common::note(&format!(
            "skipped: the demo users are not seeded in this stack ({demo})"
        ));
        return;
    }
    let demo = access_token(&demo);
    let (status, rows) = api
        .get(
            "/rest/v1/communities?select=id&name=eq.Haven+Demo",
            Some(&demo),
        )
        .await;
    assert_eq!(status, 200, "{rows}");
    let community = rows[0]["id"]
        .as_str()
        .expect("demo sees Haven Demo")
        .to_string();
    let (_, lounge) = api
        .get(
            &format!("/rest/v1/channels?select=id&community_id=eq.{community}&name=eq.Lounge"),
            Some(&demo),
        )
        .await;
    let lounge = lounge[0]["id"]
        .as_str()
        .expect("Haven Demo has a Lounge")
        .to_string();

    for member in ["demo@haven.local", "alice@haven.local", "bob@haven.local"] {
        let (_, session) = api.sign_in(member, "haven-demo-password").await;
        let (status, grant) = api
            .rpc(
                "authorize_voice_join",
                &access_token(&session),
                &json!({"p_channel_id": lounge}),
            )
            .await;
        assert_eq!(status, 200, "{member}: {grant}");
        assert_eq!(grant["channel_id"], lounge.as_str());
    }
    let (_, outsider) = api
        .sign_in("outsider@haven.local", "haven-demo-password")
        .await;
    let (status, body) = api
        .rpc(
            "authorize_voice_join",
            &access_token(&outsider),
            &json!({"p_channel_id": lounge}),
        )
        .await;
    assert_eq!((status, &body["code"]), (403, &json!("42501")), "{body}");
}

#[tokio::test]
async fn rpc_results_have_postgrest_shapes() {
    let api = LocalApi::start(&[]);
    let (owner, community, _, general) = owner_with_community(&api).await;

    // Scalar boolean, text[] and int.
    let (status, v) = api
        .rpc(
            "user_has_permission",
            &owner,
            &json!({"p_community_id": community, "p_key": "manage_roles"}),
        )
        .await;
    assert_eq!((status, v), (200, json!(true)));
    let (status, v) = api
        .rpc(
            "my_permissions",
            &owner,
            &json!({"p_community_id": community}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        v.as_array()
            .is_some_and(|keys| keys.contains(&json!("speak"))),
        "{v}"
    );
    // Composite row → object.
    let (status, message) = api
        .rpc(
            "send_message",
            &owner,
            &json!({"p_channel_id": general, "p_content": "  hello  "}),
        )
        .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["content"], "hello", "trimmed by the RPC");
    // Table → array.
    let (status, page) = api
        .rpc(
            "list_channel_messages",
            &owner,
            &json!({"p_channel_id": general, "p_limit": 10}),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page[0]["id"], message["id"]);
    // Void → no content.
    let response = api
        .request(reqwest::Method::POST, "/rest/v1/rpc/set_nickname")
        .bearer_auth(&owner)
        .json(&json!({"p_community_id": community, "p_nickname": "Boss"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let text = response.text().await.unwrap();
    assert!(text.is_empty() || text == "null", "void RPC body: {text:?}");
}

#[tokio::test]
async fn plus_in_a_query_value_means_space() {
    let api = LocalApi::start(&[]);
    let (_, session) = api.sign_up_fresh("plus-password").await;
    let token = access_token(&session);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("Plus Club {suffix}");
    let (status, _) = api
        .rpc("create_community", &token, &json!({"p_name": name}))
        .await;
    assert_eq!(status, 200);
    let (status, rows) = api
        .get(
            &format!("/rest/v1/communities?select=name&name=eq.Plus+Club+{suffix}"),
            Some(&token),
        )
        .await;
    assert_eq!((status, rows), (200, json!([{"name": name}])));
}

#[tokio::test]
async fn bad_rest_input_gets_clear_errors_and_the_stack_keeps_serving() {
    let mut api = LocalApi::start(&[]);
    let (owner, _, lounge, general) = owner_with_community(&api).await;

    let (status, body) = api
        .post_raw(
            "/rest/v1/rpc/create_community",
            Some(&owner),
            b"{\"p_name\":".to_vec(),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("PGRST102")),
        "malformed JSON: {body}"
    );
    let (status, body) = api
        .rpc("authorize_voice_join", &owner, &json!({"p_channel_id": 42}))
        .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("22P02")),
        "wrong type: {body}"
    );
    let (status, body) = api
        .rpc(
            "authorize_voice_join",
            &owner,
            &json!({"p_channel": lounge}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("PGRST202")),
        "wrong argument name: {body}"
    );
    let (status, body) = api
        .rpc(
            "create_community",
            &owner,
            &json!({"p_name": "x".repeat(101)}),
        )
        .await;
    assert_eq!(status, 400, "name too long: {body}");

    // 1 MB of message text: inside the HTTP limit, refused by the database's 4000-char rule.
    let (status, body) = api
        .rpc(
            "send_message",
            &owner,
            &json!({"p_channel_id": general, "p_content": "x".repeat(1_000_000)}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("22001")),
        "1 MB message: {body}"
    );
    // Over the 1 MiB body limit: refused before it is read.
    let (status, body) = api
        .rpc(
            "send_message",
            &owner,
            &json!({"p_channel_id": general, "p_content": "x".repeat(2 << 20)}),
        )
        .await;
    assert_eq!(status, 413, "2 MiB body: {body}");

    api.assert_alive();
    let (status, grant) = api
        .rpc(
            "authorize_voice_join",
            &owner,
            &json!({"p_channel_id": lounge}),
        )
        .await;
    assert_eq!(status, 200, "still serving after bad input: {grant}");
}

#[tokio::test]
async fn a_notify_after_a_migration_reloads_the_schema_cache() {
    let api = LocalApi::start(&[]);
    let (_, session) = api.sign_up_fresh("reload-password").await;
    let token = access_token(&session);
    let function = format!("haven_reload_probe_{}", uuid::Uuid::new_v4().simple());
    let (status, _) = api.rpc(&function, &token, &json!({})).await;
    assert_eq!(status, 404, "not there yet");

    let db = common::database();
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .arg(&db.owner_url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!(
        "create function public.{function}() returns int language sql as 'select 7'; \
         grant execute on function public.{function}() to authenticated; \
         notify pgrst, 'reload schema';"
    ));
    let mut answer = Value::Null;
    for _ in 0..50 {
        let (status, body) = api.rpc(&function, &token, &json!({})).await;
        if status == 200 {
            answer = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    psql(&format!(
        "drop function public.{function}(); notify pgrst, 'reload schema';"
    ));
    assert_eq!(
        answer,
        json!(7),
        "the new function is served after NOTIFY pgrst"
    );
}

#[tokio::test]
async fn json_null_arguments_mean_sql_null() {
    let api = LocalApi::start(&[]);
    let (owner, community, lounge, general) = owner_with_community(&api).await;

    // Defaults to NULL: forwarded to postrust without the key.
    let (status, invite) = api
        .rpc(
            "create_invite",
            &owner,
            &json!({"p_community_id": community, "p_max_uses": null}),
        )
        .await;
    assert_eq!(status, 200, "{invite}");
    assert!(
        invite["expires_at"].is_string(),
        "default expiry applies: {invite}"
    );
    // Non-NULL default: NULL itself ("never expires"), not the default.
    let (status, invite) = api
        .rpc(
            "create_invite",
            &owner,
            &json!({"p_community_id": community, "p_expires_in_hours": null}),
        )
        .await;
    assert_eq!(status, 200, "{invite}");
    assert_eq!(invite["expires_at"], Value::Null, "{invite}");
    // No default, non-text types: tri-state "inherit" flags and "ungroup".
    let (status, roles) = api
        .get(
            &format!("/rest/v1/roles?select=id&community_id=eq.{community}&is_default=is.true"),
            Some(&owner),
        )
        .await;
    assert_eq!(status, 200, "{roles}");
    let everyone = roles[0]["id"].as_str().expect("@everyone").to_string();
    let (status, body) = api
        .rpc(
            "set_channel_role_overwrite",
            &owner,
            &json!({"p_channel_id": lounge, "p_role_id": everyone,
                    "p_can_view": null, "p_can_send": null, "p_can_connect": null, "p_can_speak": false}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = api
        .rpc(
            "set_channel_group",
            &owner,
            &json!({"p_channel_id": general, "p_group_id": null}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // Errors on this path look like every other REST error.
    let (_, outsider) = api.sign_up_fresh("null-outsider").await;
    let (status, body) = api
        .rpc(
            "set_channel_group",
            &access_token(&outsider),
            &json!({"p_channel_id": general, "p_group_id": null}),
        )
        .await;
    assert_eq!((status, &body["code"]), (403, &json!("42501")), "{body}");
    let (status, body) = api
        .rpc(
            "set_channel_group",
            &owner,
            &json!({"p_channel_id": "zz", "p_group_id": null}),
        )
        .await;
    assert_eq!((status, &body["code"]), (400, &json!("22P02")), "{body}");
    let (status, body) = api
        .rpc(
            "set_channel_group",
            "forged.token.value",
            &json!({"p_channel_id": general, "p_group_id": null}),
        )
        .await;
    assert_eq!((status, &body["code"]), (401, &json!("PGRST301")), "{body}");
}
