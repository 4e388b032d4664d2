-- data-model.md, "Must not have": one test per hole of the reference product, proving it is
-- closed. Every description starts with the hole's number.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(33);

-- Hole 1: a manage_members holder making themselves owner by updating their membership row ------
select tests.as_user('admin');
select is(public.user_has_permission(tests.community(), 'manage_members'), true, 'hole 1: (precondition) admin holds manage_members');
select ok(tests.write_refused(format($$update public.community_members set is_owner = true where id = %L$$, tests.member_id('admin'))),
  'hole 1: a manage_members holder cannot set is_owner on its own membership row');
select ok(tests.write_refused(format($$update public.community_members set is_owner = false where id = %L$$, tests.member_id('owner'))),
  'hole 1: ... nor clear the owner''s is_owner');
select tests.reset_role();
select is(
  (select array_agg(user_id) from public.community_members where community_id = tests.community() and is_owner),
  array[tests.uid('owner')], 'hole 1: the owner is still the only owner');

-- Hole 2: deleting the owner's (or a higher member's) membership row directly ---------------------
select tests.as_user('admin');
select ok(tests.write_refused(format($$delete from public.community_members where id = %L$$, tests.member_id('owner'))),
  'hole 2: admin cannot delete the owner''s membership row');
select tests.as_user('moderator');
select ok(tests.write_refused(format($$delete from public.community_members where id = %L$$, tests.member_id('admin'))),
  'hole 2: moderator cannot delete a higher member''s (admin''s) membership row');
select tests.reset_role();
select ok(tests.is_member('owner') and tests.is_member('admin'), 'hole 2: owner and admin are still members');

-- Hole 3: inserting membership rows for other users -------------------------------------------------
select tests.as_user('admin');
select ok(tests.write_refused(format($$insert into public.community_members (community_id, user_id) values (%L, %L)$$,
    tests.community(), tests.uid('outsider'))),
  'hole 3: admin cannot insert a membership row for the outsider');
select tests.as_user('member_a');
select ok(tests.write_refused(format($$insert into public.community_members (community_id, user_id, is_owner) values (%L, %L, true)$$,
    tests.community(), tests.uid('banned'))),
  'hole 3: a member cannot insert a membership row for the banned user');
select tests.reset_role();
select ok(not tests.is_member('outsider') and not tests.is_member('banned'), 'hole 3: no membership was created');

-- Hole 4: an author spoofing display fields or filing a message under another community -----------
select tests.exec_as('outsider', $$select tests.set_id('other', public.create_community('Other Place'))$$);
select tests.as_user('member_a');
select ok(tests.write_refused(format($$insert into public.messages (community_id, channel_id, author_id, content) values (%L, %L, %L, 'misfiled')$$,
    tests.id('other'), tests.ch('general'), tests.uid('member_a'))),
  'hole 4: a client cannot insert a message filed under another community');
select is((public.send_message(tests.ch('general'), 'filed correctly')).community_id, tests.community(),
  'hole 4: send_message derives community_id from the channel');
select ok(tests.write_refused(format($$update public.messages set community_id = %L where id = %L$$, tests.id('other'), tests.msg('a_general'))),
  'hole 4: an author cannot move a message to another community');
select tests.reset_role();
select ok(
  coalesce(tests.sqlstate_of(format($$insert into public.messages (community_id, channel_id, author_id, content) values (%L, %L, %L, 'db-level misfile')$$,
             tests.id('other'), tests.ch('general'), tests.uid('member_a'))) is not null, false)
  or not exists (select 1 from public.messages where content = 'db-level misfile' and community_id <> tests.community()),
  'hole 4: even a privileged insert cannot file a message under a community other than its channel''s');
select is(
  (select count(*) from information_schema.columns
    where table_schema = 'public' and table_name = 'messages'
      and column_name ~ '(username|display|avatar|nickname|author_name)'),
  0::bigint, 'hole 4: messages store no author display fields to spoof (they come from profiles/membership)');

-- Hole 5: granting a permission one does not hold ---------------------------------------------------
select tests.as_user('admin');
select throws_ok($$select public.create_role(tests.community(), 'Escalate', null, 10, array['manage_bans'])$$, '42501', null,
  'hole 5: admin cannot create a role with manage_bans, which it lacks');
select lives_ok($$select tests.set_id('role:Low', public.create_role(tests.community(), 'Low', null, 10, '{}'))$$, 'hole 5: (setup) admin creates an empty role');
select throws_ok($$select public.set_role_permissions(tests.role('Low'), array['view_ban_hidden'])$$, '42501', null,
  'hole 5: admin cannot add view_ban_hidden, which it lacks, to a role');
select throws_ok($$select public.set_channel_member_overwrite(tests.ch('mods-only'), tests.uid('member_a'), true, null, null, null)$$, '42501', null,
  'hole 5: admin cannot grant view on a channel it cannot view itself');
select tests.reset_role();
-- proxy escalation: a low role carrying a key the admin lacks, handed to a member the admin controls
select tests.owner_role('BanHammer', 10, array['manage_bans']);
select tests.as_user('admin');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('member_a'), tests.role('BanHammer'))$$, '42501', null,
  'hole 5: admin cannot assign a role carrying manage_bans (which it lacks) to a member (proxy escalation)');
select tests.as_user('member_a');
select is(public.user_has_permission(tests.community(), 'manage_bans'), false,
  'hole 5: member_a did not obtain manage_bans through the admin');
select tests.reset_role();

-- Hole 6: sending (or connecting) in a channel one cannot view ----------------------------------------
select tests.member_ow(tests.ch('mods-only'), 'member_a', null, true, null, null);
select tests.as_user('member_a');
select throws_ok($$select public.send_message(tests.ch('mods-only'), 'sneaky')$$, '42501', null,
  'hole 6: a send allow without view does not let member_a post in mods-only');
select tests.reset_role();
select tests.role_ow(tests.ch('Stage'), tests.role('@everyone'), false, null, null, null);
select tests.member_ow(tests.ch('Stage'), 'member_b', null, null, true, true);
select is(tests.voice_join_error('member_b', tests.ch('Stage')), '42501',
  'hole 6: a connect allow without view does not let member_b join a hidden voice channel');

-- Hole 7: message events delivered to members who cannot view the channel -----------------------------
select tests.install_event_recorder();
select tests.set_id('msg:secret', tests.send_as('moderator', tests.ch('mods-only'), 'eyes only'));
select is(
  (select array_agg(u order by u) from tests.events e, unnest(array['owner', 'admin', 'moderator', 'member_a', 'member_b']) u
    where e.kind = 'message.created' and e.payload ->> 'message_id' = tests.msg('secret')::text
      and tests.can_as(u, 'view', (e.payload ->> 'channel_id')::uuid)),
  array['moderator', 'owner'],
  'hole 7: the event names its channel, and the service filter (can_view_channel_as) admits only owner and moderator');
select ok(not exists (select 1 from tests.events where payload::text like '%eyes only%'),
  'hole 7: the event carries no content, so nothing leaks even if misrouted');

-- Hole 8: expired or used-up invites that still work, or whose deactivation is rolled back -------------
select tests.create_user(n) from unnest(array['late', 'first', 'second']) n;
select tests.exec_as('owner', $$select tests.set_id('inv:exp', (public.create_invite(tests.community())).id)$$);
select tests.backdate_invite(tests.id('inv:exp'), now() - interval '1 second');
select is(tests.redeem_status('late', (select code from public.invites where id = tests.id('inv:exp'))), 'expired',
  'hole 8: an expired invite answers expired (returned, not raised, so nothing is rolled back)');
select tests.exec_as('owner', $$select tests.set_id('inv:one', (public.create_invite(tests.community(), 1)).id)$$);
select is(
  array[tests.redeem_status('first', (select code from public.invites where id = tests.id('inv:one'))),
        tests.redeem_status('second', (select code from public.invites where id = tests.id('inv:one')))],
  array['joined', 'used_up'], 'hole 8: a single-use invite works once, then answers used_up');
select ok(not tests.is_member('late') and tests.is_member('first') and not tests.is_member('second')
          and (select uses from public.invites where id = tests.id('inv:one')) = 1,
  'hole 8: only the valid redemption joined; the use count stuck at max_uses');

-- Hole 9: ban list readable by every member ---------------------------------------------------------
select tests.as_user('member_b');
select is(tests.visible_count('select 1 from public.community_bans') <= 0, true, 'hole 9: a plain member reads no ban rows');
select throws_ok($$select * from public.list_bans(tests.community())$$, '42501', null, 'hole 9: list_bans refuses a plain member');
select tests.reset_role();

-- Hole 10: a voice grant that survives a ban, kick or loss of channel access ------------------------------
select tests.exec_as('admin', format($$select public.kick_member(%L, %L)$$, tests.community(), tests.uid('member_b')));
select tests.exec_as('owner', format($$select public.ban_member(%L, %L, 'hole 10')$$, tests.community(), tests.uid('member_a')));
select tests.role_ow(tests.ch('Lounge'), tests.role('Moderator'), null, null, false, null);
select is(
  array[tests.voice_join_error('member_b', tests.ch('Lounge')), tests.voice_join_error('member_a', tests.ch('Lounge')),
        tests.voice_join_error('moderator', tests.ch('Lounge'))],
  array['42501', '42501', '42501'], 'hole 10: after kick, ban and a connect deny, authorize_voice_join refuses all three');
select is(
  (select array_agg(coalesce(tests.voice_access_connect(u, tests.ch('Lounge'))::text, 'null') order by u)
     from unnest(array['member_a', 'member_b', 'moderator']) u),
  array['false', 'false', 'false'], 'hole 10: voice_access_as (what the voice service re-checks) says can_connect = false for all three');
select ok(
  tests.event_count('member.kicked', jsonb_build_object('user_id', tests.uid('member_b'))) >= 1
  and tests.event_count('member.banned', jsonb_build_object('user_id', tests.uid('member_a'))) >= 1
  and tests.event_count('overwrite.changed', jsonb_build_object('channel_id', tests.ch('Lounge'), 'role_id', tests.role('Moderator'))) >= 1,
  'hole 10: kick, ban and the overwrite change each emit the event the voice service acts on');

select * from finish();
rollback;
