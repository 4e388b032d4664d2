//! RPC contract through `haven_supabase`: typed results for the calls the product makes, and
//! errors mapped by SQLSTATE, against the local stand-in (always) and a hosted project (when
//! configured).

mod common;

use haven_supabase::{
    ChannelKind, Error, InviteExpiry, NewChannel, NewRole, OverwriteFlags, RedeemStatus, Session,
    VoiceModerationAction,
};
use uuid::Uuid;

async fn sign_in(target: &common::Target, label: &str) -> Session {
    let (email, password) = match &target.account {
        Some(account) => account.clone(),
        None => {
            let (email, username) = common::fresh_email(label);
            target
                .service
                .as_ref()
                .expect("local target has a service client")
                .create_user(&email, "contract-password", Some(&username))
                .await
                .expect("create user");
            (email, "contract-password".to_string())
        }
    };
    target
        .client
        .sign_in_with_password(&email, &password)
        .await
        .expect("sign in")
}

#[tokio::test]
async fn community_channels_voice_and_messages() {
    for target in common::targets("community_channels_voice_and_messages") {
        let t = target.name;
        let session = sign_in(&target, "owner").await;
        let me = target.client.as_user(&session.access_token);

        let community = me
            .create_community("Contract Test", Some("made by a contract test"))
            .await
            .expect("create");
        let channels = me.list_channels(community).await.expect("list channels");
        let lounge = channels
            .iter()
            .find(|c| c.name == "Lounge" && c.kind == ChannelKind::Voice)
            .unwrap_or_else(|| panic!("{t}: no Lounge in {channels:?}"));
        let general = channels
            .iter()
            .find(|c| c.kind == ChannelKind::Text)
            .expect("a text channel");
        assert!(
            me.my_permissions(community)
                .await
                .expect("perms")
                .contains(&"speak".to_string()),
            "{t}"
        );
        assert_eq!(
            me.member_rank(community, session.user.id)
                .await
                .expect("rank"),
            Some(i32::MAX),
            "{t}"
        );

        let grant = me
            .authorize_voice_join(lounge.id)
            .await
            .expect("voice grant");
        assert_eq!(
            (grant.channel_id, grant.community_id, grant.user_id),
            (lounge.id, community, session.user.id),
            "{t}"
        );
        assert!(grant.can_speak && !grant.room.is_empty(), "{t}");

        let text = me.authorize_voice_join(general.id).await.unwrap_err();
        assert!(matches!(text, Error::InvalidInput(_)), "{t}: {text:?}");
        assert_eq!(
            (text.code(), text.hint()),
            (Some("22023"), Some("not_voice_channel")),
            "{t}"
        );
        // No existence oracle: a channel that does not exist is "not permitted", 403 with a token.
        let missing = me.authorize_voice_join(Uuid::new_v4()).await.unwrap_err();
        assert!(
            matches!(missing, Error::PermissionDenied(_)),
            "{t}: {missing:?}"
        );
        assert_eq!(
            (missing.code(), missing.status()),
            (Some("42501"), Some(403)),
            "{t}"
        );

        let sent = me
            .send_message(general.id, "  first  ", None)
            .await
            .expect("send");
        assert_eq!(sent.content, "first", "{t}: trimmed");
        let reply = me
            .send_message(general.id, "second", Some(sent.id))
            .await
            .expect("reply");
        let page = me
            .list_channel_messages(general.id, Some(1), None)
            .await
            .expect("page 1");
        assert_eq!(
            page.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![reply.id],
            "{t}"
        );
        let older = me
            .list_channel_messages(general.id, Some(10), Some(page[0].cursor()))
            .await
            .expect("page 2");
        assert_eq!(
            older.first().map(|m| m.id),
            Some(sent.id),
            "{t}: keyset paging"
        );
        let edited = me
            .edit_message(sent.id, "first, edited")
            .await
            .expect("edit");
        assert!(edited.edited_at.is_some(), "{t}");
        me.delete_message(reply.id).await.expect("delete message");

        let too_long = me
            .send_message(general.id, &"x".repeat(4001), None)
            .await
            .unwrap_err();
        assert!(
            matches!(too_long, Error::InvalidInput(_)),
            "{t}: {too_long:?}"
        );
        assert_eq!(too_long.code(), Some("22001"), "{t}");
        let voice_channel = me
            .create_channel(community, &NewChannel::new("Stage Two", ChannelKind::Voice))
            .await;
        assert!(voice_channel.is_ok(), "{t}: {voice_channel:?}");

        // Roles and the calls where JSON null means SQL NULL ("inherit", "ungroup", "clear").
        let role = me
            .create_role(
                community,
                &NewRole {
                    name: "Listeners".into(),
                    permissions: vec!["view_channels".into()],
                    ..Default::default()
                },
            )
            .await
            .expect("create role");
        me.set_channel_role_overwrite(
            lounge.id,
            role,
            OverwriteFlags {
                can_speak: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("overwrite with inherit flags");
        me.set_channel_role_overwrite(lounge.id, role, OverwriteFlags::default())
            .await
            .expect("all-null flags delete the overwrite");
        let group = me
            .create_channel_group(community, "Voice rooms", None)
            .await
            .expect("group");
        let groups = me.list_channel_groups(community).await.expect("groups");
        assert_eq!(
            groups.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![group],
            "{t}"
        );
        let mine = me.list_my_communities().await.expect("my communities");
        assert!(
            mine.iter()
                .any(|c| c.id == community && c.name == "Contract Test"),
            "{t}"
        );
        me.set_channel_group(lounge.id, Some(group))
            .await
            .expect("group it");
        me.set_channel_group(lounge.id, None)
            .await
            .expect("ungroup");
        me.set_nickname(community, Some("Chief"))
            .await
            .expect("nickname");
        me.set_nickname(community, None)
            .await
            .expect("clear nickname");
        let unknown_key = me
            .set_role_permissions(role, &["fly".to_string()])
            .await
            .unwrap_err();
        assert!(
            matches!(unknown_key, Error::InvalidInput(_)),
            "{t}: {unknown_key:?}"
        );
        me.delete_role(role).await.expect("delete role");

        let leave = me.leave_community(community).await.unwrap_err();
        assert_eq!(leave.hint(), Some("owner_cannot_leave"), "{t}: {leave:?}");
        me.delete_community(community)
            .await
            .expect("delete community");
        let gone = me.list_channels(community).await;
        assert!(gone.as_ref().map_or(true, Vec::is_empty), "{t}: {gone:?}");
    }
}

#[tokio::test]
async fn outsiders_invites_and_service_role_checks() {
    // Needs several accounts, so local only (a hosted run would need the service-role key).
    let target = common::local();
    let service = target.service.as_ref().expect("service client");
    let owner = sign_in(&target, "owner").await;
    let outsider = sign_in(&target, "outsider").await;
    let owner_api = target.client.as_user(&owner.access_token);
    let outsider_api = target.client.as_user(&outsider.access_token);

    let community = owner_api
        .create_community("Invite Test", None)
        .await
        .expect("create");
    let lounge = owner_api
        .find_voice_channel(community, "Lounge")
        .await
        .expect("list")
        .expect("Lounge");

    let denied = outsider_api
        .authorize_voice_join(lounge.id)
        .await
        .unwrap_err();
    assert!(matches!(denied, Error::PermissionDenied(_)), "{denied:?}");
    assert_eq!(denied.status(), Some(403));
    let denied = outsider_api.my_permissions(community).await.unwrap_err();
    assert!(matches!(denied, Error::PermissionDenied(_)), "{denied:?}");
    let access = service
        .voice_access_as(outsider.user.id, lounge.id)
        .await
        .expect("as");
    assert!(!access.can_connect, "outsiders have no voice access");

    let invite = owner_api
        .create_invite(community, Some(1), InviteExpiry::Never)
        .await
        .expect("invite");
    assert_eq!(invite.expires_at, None);
    let outcome = outsider_api
        .redeem_invite(&invite.code.to_uppercase())
        .await
        .expect("redeem");
    assert_eq!(outcome.status, RedeemStatus::Joined);
    assert_eq!(outcome.community_id, Some(community));
    let grant = outsider_api
        .authorize_voice_join(lounge.id)
        .await
        .expect("member now");
    assert_eq!(grant.user_id, outsider.user.id);
    let access = service
        .voice_access_as(outsider.user.id, lounge.id)
        .await
        .expect("as");
    assert!(access.can_connect && access.can_speak);
    assert!(service
        .can_view_channel_as(outsider.user.id, lounge.id)
        .await
        .expect("as"));
    let used = owner_api
        .redeem_invite(&invite.code)
        .await
        .expect("owner redeems");
    assert_eq!(used.status, RedeemStatus::AlreadyMember);

    // Moderation: the owner may disconnect the new member; not the other way round.
    let moderation = owner_api
        .authorize_voice_moderation(
            lounge.id,
            outsider.user.id,
            VoiceModerationAction::Disconnect,
        )
        .await
        .expect("owner moderates");
    assert_eq!(moderation.target_user_id, outsider.user.id);
    let refused = outsider_api
        .authorize_voice_moderation(lounge.id, owner.user.id, VoiceModerationAction::Mute)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::PermissionDenied(_)), "{refused:?}");

    owner_api
        .ban_member(community, outsider.user.id, Some("contract test"))
        .await
        .expect("ban");
    let banned = outsider_api
        .authorize_voice_join(lounge.id)
        .await
        .unwrap_err();
    assert!(
        matches!(banned, Error::PermissionDenied(_)),
        "a ban revokes voice: {banned:?}"
    );
    assert_eq!(owner_api.list_bans(community).await.expect("bans").len(), 1);
    assert!(
        !service
            .voice_access_as(outsider.user.id, lounge.id)
            .await
            .expect("as")
            .can_connect
    );

    owner_api
        .delete_community(community)
        .await
        .expect("cleanup");
    for user in [owner.user.id, outsider.user.id] {
        service.delete_user(user).await.expect("delete user");
    }
}

#[tokio::test]
async fn the_seeded_demo_community_is_joinable_by_members_only() {
    let target = common::local();
    let client = &target.client;
    let Ok(demo) = client
        .sign_in_with_password("demo@haven.local", "haven-demo-password")
        .await
    else {
        common::note("skipped: the demo users are not seeded in this stack");
        return;
    };
    let service = target.service.as_ref().expect("service client");
    let rows = service
        .tables()
        .from("communities")
        .eq("name", "Haven Demo")
        .execute()
        .await
        .expect("service role reads communities");
    let community: Uuid = rows
        .iter()
        .find(|row| row["created_by"] == "11111111-1111-4111-8111-111111111111")
        .and_then(|row| row["id"].as_str())
        .and_then(|id| id.parse().ok())
        .expect("Haven Demo exists");
    let lounge = client
        .as_user(&demo.access_token)
        .find_voice_channel(community, "Lounge")
        .await
        .expect("list")
        .expect("Lounge");
    for member in ["demo@haven.local", "alice@haven.local", "bob@haven.local"] {
        let session = client
            .sign_in_with_password(member, "haven-demo-password")
            .await
            .expect(member);
        let grant = client
            .as_user(&session.access_token)
            .authorize_voice_join(lounge.id)
            .await;
        assert!(grant.is_ok(), "{member}: {grant:?}");
    }
    let outsider = client
        .sign_in_with_password("outsider@haven.local", "haven-demo-password")
        .await
        .expect("outsider");
    let err = client
        .as_user(&outsider.access_token)
        .authorize_voice_join(lounge.id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    assert_eq!((err.status(), err.code()), (Some(403), Some("42501")));
}

#[tokio::test]
async fn oversized_and_rate_limited_requests_are_typed() {
    let target = common::local();
    let session = sign_in(&target, "limits").await;
    let me = target.client.as_user(&session.access_token);
    let community = me.create_community("Limits", None).await.expect("create");
    let general = me
        .list_channels(community)
        .await
        .expect("list")
        .into_iter()
        .find(|c| c.kind == ChannelKind::Text)
        .expect("text channel");

    let huge = me
        .send_message(general.id, &"x".repeat(2 << 20), None)
        .await
        .unwrap_err();
    assert!(matches!(huge, Error::PayloadTooLarge(_)), "{huge:?}");

    // The per-channel send limit (default 5 per 5 s), read from the settings in case a test
    // raised it.
    let service = target.service.as_ref().expect("service client");
    let limit = service
        .tables()
        .from("rate_limit_settings")
        .eq("action", "send_message")
        .execute()
        .await
        .expect("read limits");
    let max = limit
        .first()
        .and_then(|row| row["max_events"].as_i64())
        .unwrap_or(5);
    if max > 20 {
        common::note(&format!(
            "rate limit check skipped: send_message allows {max} events"
        ));
    } else {
        let mut limited = None;
        for i in 0..=max {
            if let Err(e) = me
                .send_message(general.id, &format!("message {i}"), None)
                .await
            {
                limited = Some(e);
                break;
            }
        }
        match limited {
            Some(Error::RateLimited {
                retry_after,
                detail,
            }) => {
                assert_eq!(detail.code.as_deref(), Some("PT429"));
                assert!(retry_after.is_some(), "wait time parsed from {detail:?}");
            }
            other => panic!("expected RateLimited after {max} messages, got {other:?}"),
        }
    }
    me.delete_community(community).await.expect("cleanup");
}
