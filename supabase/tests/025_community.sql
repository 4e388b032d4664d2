-- Communities: creation seeds (roles, permissions, owner, channels, settings), validation,
-- update, leave, transfer_ownership (exactly one owner), nickname, delete; profiles.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(54);

-- create_community seeds ----------------------------------------------------------------------
select tests.as_user('outsider');
select lives_ok($$select tests.set_id('club', public.create_community('  Outsiders Club  ', 'desc'))$$,
  'create_community: any authenticated user can create a community');
select tests.reset_role();

select is((select name::text from public.communities where id = tests.id('club')), 'Outsiders Club', 'create_community: name stored trimmed');
select is((select created_by from public.communities where id = tests.id('club')), tests.uid('outsider'), 'create_community: created_by = caller');
select is(
  (select array_agg(name::text || ':' || position order by position) from public.roles where community_id = tests.id('club')),
  array['@everyone:0', 'Moderator:80', 'Admin:90', 'Owner:100'],
  'create_community: seeds @everyone 0, Moderator 80, Admin 90, Owner 100');
select is(
  (select array_agg(name::text) from public.roles where community_id = tests.id('club') and is_default),
  array['@everyone'], 'create_community: exactly one default role, @everyone');
select is(
  (select count(*) from public.roles where community_id = tests.id('club') and is_system),
  4::bigint, 'create_community: the four seeded roles are system roles');
select is(
  tests.sorted(array(select rp.permission_key::text from public.role_permissions rp join public.roles r on r.id = rp.role_id
                      where r.community_id = tests.id('club') and r.is_default)),
  tests.sorted(array['view_channels', 'send_messages', 'connect_voice', 'speak']),
  'create_community: @everyone = view_channels, send_messages, connect_voice, speak');
select is(
  tests.sorted(array(select rp.permission_key::text from public.role_permissions rp join public.roles r on r.id = rp.role_id
                      where r.community_id = tests.id('club') and (r.is_default or r.name = 'Moderator'))),
  tests.sorted(array['view_channels', 'send_messages', 'connect_voice', 'speak', 'manage_messages', 'mute_members', 'move_members']),
  'create_community: Moderator adds manage_messages, mute_members, move_members');
select is(
  tests.sorted(array(select rp.permission_key::text from public.role_permissions rp join public.roles r on r.id = rp.role_id
                      where r.community_id = tests.id('club') and (r.is_default or r.name = 'Admin'))),
  tests.sorted(array(select k from unnest(tests.all_keys()) k where k not in ('manage_bans', 'view_ban_hidden'))),
  'create_community: Admin has every key except manage_bans and view_ban_hidden');
select is(
  tests.sorted(array(select rp.permission_key::text from public.role_permissions rp join public.roles r on r.id = rp.role_id
                      where r.community_id = tests.id('club') and r.name = 'Owner')),
  tests.all_keys(), 'create_community: Owner role has every key');
select is(
  (select array_agg(user_id) from public.community_members where community_id = tests.id('club') and is_owner),
  array[tests.uid('outsider')], 'create_community: the creator is the single owner member');
select ok(
  exists (select 1 from public.member_roles mr join public.roles r on r.id = mr.role_id
           where mr.member_id = tests.member_id('outsider', tests.id('club')) and r.name = 'Owner'),
  'create_community: the owner membership holds the Owner role');
select is(
  (select array_agg(lower(name::text) || ':' || kind::text order by lower(name::text)) from public.channels where community_id = tests.id('club')),
  array['general:text', 'lounge:voice'], 'create_community: seeds a general text channel and a Lounge voice channel');
select is((select allow_invites from public.community_settings where community_id = tests.id('club')), true,
  'create_community: settings row with allow_invites = true');

select tests.as_user('outsider');
select throws_ok($$select public.create_community('   ')$$, '22023', null, 'create_community: blank name = 22023');
select throws_ok($$select public.create_community(repeat('n', 101))$$, '22001', null, 'create_community: 101-character name = 22001');
select lives_ok($$select public.create_community(repeat('n', 100))$$, 'create_community: 100-character name accepted');
select tests.as_anon();
select throws_ok($$select public.create_community('anon club')$$, '42501', null, 'create_community: anon refused');
select tests.reset_role();

-- update_community / settings ------------------------------------------------------------------
select tests.as_user('admin');
select lives_ok($$select public.update_community(tests.community(), 'Renamed Haven', null)$$, 'update_community: manage_server holder (admin) may rename');
select is((select name::text from public.communities where id = tests.community()), 'Renamed Haven', 'update_community: name stored');
select tests.as_user('moderator');
select throws_ok($$select public.update_community(tests.community(), 'Mod Haven', null)$$, '42501', null, 'update_community: moderator refused');
select throws_ok($$select public.update_community_settings(tests.community(), false)$$, '42501', null, 'update_community_settings: moderator refused');
select tests.as_user('admin');
select lives_ok($$select public.update_community_settings(tests.community(), false)$$, 'update_community_settings: admin may disable invites');
select tests.reset_role();
select is((select allow_invites from public.community_settings where community_id = tests.community()), false, 'update_community_settings: stored');

-- leave_community ---------------------------------------------------------------------------------
select tests.as_user('owner');
select throws_ok($$select public.leave_community(tests.community())$$, '22023', null, 'leave_community: owner cannot leave (22023)');
select is(tests.error_hint($$select public.leave_community(tests.community())$$), 'owner_cannot_leave', 'leave_community: hint = owner_cannot_leave');
select tests.as_user('member_b');
select lives_ok($$select public.leave_community(tests.community())$$, 'leave_community: a member can leave');
select tests.reset_role();
select is(tests.is_member('member_b'), false, 'leave_community: membership removed');
select is(tests.can('member_b', 'view', tests.ch('general')), false, 'leave_community: former member can no longer view general');

-- transfer_ownership -----------------------------------------------------------------------------------
select tests.as_user('admin');
select throws_ok($$select public.transfer_ownership(tests.community(), tests.uid('admin'))$$, '42501', null,
  'transfer_ownership: only the owner may transfer');
select tests.as_user('owner');
select throws_ok($$select public.transfer_ownership(tests.community(), tests.uid('outsider'))$$, null, null,
  'transfer_ownership: the target must be a member');
select lives_ok($$select public.transfer_ownership(tests.community(), tests.uid('admin'))$$,
  'transfer_ownership: owner transfers to admin');
select tests.reset_role();
select is(
  (select array_agg(user_id) from public.community_members where community_id = tests.community() and is_owner),
  array[tests.uid('admin')], 'transfer_ownership: exactly one owner, the new one');
select ok(
  exists (select 1 from public.member_roles mr where mr.member_id = tests.member_id('admin') and mr.role_id = tests.role('Owner'))
  and not exists (select 1 from public.member_roles mr where mr.member_id = tests.member_id('owner') and mr.role_id = tests.role('Owner')),
  'transfer_ownership: the Owner role moves with ownership');
select tests.as_user('member_a');
select is(public.member_rank(tests.community(), tests.uid('admin')), 2147483647, 'transfer_ownership: new owner ranks max int');
select ok(public.member_rank(tests.community(), tests.uid('owner')) < 2147483647, 'transfer_ownership: old owner no longer ranks as owner');
select tests.as_user('owner');
select lives_ok($$select public.leave_community(tests.community())$$, 'transfer_ownership: the former owner can now leave');
select tests.reset_role();

-- exactly one owner is a schema guarantee, not just an RPC habit
select throws_ok(
  $$update public.community_members set is_owner = true where community_id = tests.community() and user_id = tests.uid('member_a')$$,
  null, null, 'community_members: a second owner row is impossible even for the database owner');

-- set_nickname ------------------------------------------------------------------------------------
select tests.as_user('member_a');
select lives_ok($$select public.set_nickname(tests.community(), '  Ace  ')$$, 'set_nickname: own nickname');
select tests.reset_role();
select is((select nickname from public.community_members where id = tests.member_id('member_a')), 'Ace', 'set_nickname: stored trimmed');
select tests.as_user('member_a');
select throws_ok($$select public.set_nickname(tests.community(), repeat('x', 33))$$, '22001', null, 'set_nickname: 33 characters = 22001');
select lives_ok($$select public.set_nickname(tests.community(), null)$$, 'set_nickname: null clears');
select tests.reset_role();
select is((select nickname from public.community_members where id = tests.member_id('member_a')), null, 'set_nickname: cleared');

-- profiles ----------------------------------------------------------------------------------------
select is((select username::text from public.profiles where id = tests.uid('member_a')), 'pgtap_member_a',
  'profiles: created from signup metadata username');
insert into auth.users (id, email, raw_user_meta_data) values ('0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d', 'nometa2@pgtap.test', '{}');
select matches((select username::text from public.profiles where id = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'),
  '^user_[0-9a-f]{12}$', 'profiles: without metadata, username = user_ + 12 hex chars');
select tests.as_user('member_a');
select is(tests.visible_count($$select 1 from public.profiles where id = tests.uid('moderator')$$), 1::bigint,
  'profiles: a member reads the profile of someone sharing a community');
select is(tests.visible_count($$select 1 from public.profiles where id = tests.uid('outsider')$$), 0::bigint,
  'profiles: a member cannot read a stranger''s profile');
select lives_ok($$update public.profiles set avatar_url = 'https://example.test/a.png' where id = tests.uid('member_a')$$,
  'profiles: a user can update their own profile');
select is((select avatar_url from public.profiles where id = tests.uid('member_a')), 'https://example.test/a.png',
  'profiles: own update stored');
select ok(tests.write_refused($$update public.profiles set avatar_url = 'https://example.test/x.png' where id = tests.uid('moderator')$$),
  'profiles: a user cannot update someone else''s profile');
select throws_ok($$update public.profiles set username = 'PGTAP_MODERATOR' where id = tests.uid('member_a')$$, '23505', null,
  'profiles: usernames are unique case-insensitively');

-- delete_community ------------------------------------------------------------------------------------
select throws_ok($$select public.delete_community(tests.community())$$, '42501', null, 'delete_community: a non-owner member is refused');
select tests.as_user('outsider');
select lives_ok($$select public.delete_community(tests.id('club'))$$, 'delete_community: owner deletes');
select tests.reset_role();
select is((select count(*) from public.channels where community_id = tests.id('club')), 0::bigint,
  'delete_community: its channels are gone');

select * from finish();
rollback;
