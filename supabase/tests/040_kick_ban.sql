-- kick_member, ban_member, unban_member, list_bans, and ban-hidden messages (view_ban_hidden).
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(44);

-- kick ----------------------------------------------------------------------------------------
select tests.as_user('member_a');
select throws_ok($$select public.kick_member(tests.community(), tests.uid('member_b'))$$, '42501', null, 'kick: plain member refused');
select tests.as_user('moderator');
select throws_ok($$select public.kick_member(tests.community(), tests.uid('member_b'))$$, '42501', null, 'kick: moderator without manage_members refused');
select tests.as_user('outsider');
select throws_ok($$select public.kick_member(tests.community(), tests.uid('member_b'))$$, '42501', null, 'kick: non-member refused');
select tests.as_user('admin');
select throws_ok($$select public.kick_member(tests.community(), tests.uid('owner'))$$, '42501', null, 'kick: the owner cannot be kicked');
select throws_ok($$select public.kick_member(tests.community(), tests.uid('admin'))$$, '42501', null, 'kick: admin cannot kick itself (target not strictly below)');
select tests.reset_role();

-- moderator (80) gains manage_members and manage_bans from a low role
select tests.owner_role('Mgr', 5, array['manage_members', 'manage_bans']);
select tests.owner_assign('moderator', 'Mgr');
select tests.as_user('moderator');
select throws_ok($$select public.kick_member(tests.community(), tests.uid('admin'))$$, '42501', null, 'kick: moderator (80) cannot kick admin (90)');

select tests.as_user('admin');
select lives_ok($$select public.kick_member(tests.community(), tests.uid('member_b'))$$, 'kick: admin (manage_members) kicks member_b');
select tests.reset_role();
select is(tests.is_member('member_b'), false, 'kick: membership removed');
select is(tests.can('member_b', 'view', tests.ch('general')), false, 'kick: kicked user cannot view general');
select is(tests.redeem_try('member_b', tests.val('invite_code')) ->> 'status', 'joined', 'kick: a kicked user may rejoin (kick is not a ban)');
select tests.as_user('admin');
select throws_ok($$select public.kick_member(tests.community(), tests.uid('outsider'))$$, null, null, 'kick: a non-member cannot be kicked');

-- ban -----------------------------------------------------------------------------------------
select throws_ok($$select public.ban_member(tests.community(), tests.uid('member_a'), 'spam')$$, '42501', null, 'ban: admin (no manage_bans) refused');
select tests.as_user('member_a');
select throws_ok($$select public.ban_member(tests.community(), tests.uid('member_b'), null)$$, '42501', null, 'ban: plain member refused');
select tests.as_user('moderator');
select throws_ok($$select public.ban_member(tests.community(), tests.uid('admin'), null)$$, '42501', null, 'ban: moderator (80) cannot ban admin (90)');
select throws_ok($$select public.ban_member(tests.community(), tests.uid('owner'), null)$$, '42501', null, 'ban: the owner cannot be banned');
select tests.as_user('owner');
select throws_ok($$select public.ban_member(tests.community(), tests.uid('owner'), null)$$, null, null, 'ban: the owner cannot ban itself');
select lives_ok($$select public.ban_member(tests.community(), tests.uid('member_a'), 'spam')$$, 'ban: owner bans member_a');
select tests.reset_role();
select is(
  (select jsonb_build_object('banned_by', banned_by, 'reason', reason, 'active', revoked_at is null)
     from public.community_bans where community_id = tests.community() and user_id = tests.uid('member_a')),
  jsonb_build_object('banned_by', tests.uid('owner'), 'reason', 'spam', 'active', true),
  'ban: an active ban row records banned_by and reason');
select is(tests.is_member('member_a'), false, 'ban: membership removed');
select is((tests.message(tests.msg('a_general'))).is_hidden, true, 'ban: the banned user''s messages are hidden');
select is(tests.redeem_try('member_a', tests.val('invite_code')) ->> 'status', 'banned', 'ban: the banned user cannot rejoin');

select tests.as_user('owner');
do $$ begin perform tests.sqlstate_of($b$select public.ban_member(tests.community(), tests.uid('member_a'), 'again')$b$); end $$;
select tests.reset_role();
select is((select count(*) from public.community_bans
            where community_id = tests.community() and user_id = tests.uid('member_a') and revoked_at is null),
  1::bigint, 'ban: banning again never creates a second active ban');
select throws_ok(
  $$insert into public.community_bans (community_id, user_id, banned_by, reason)
    values (tests.community(), tests.uid('member_a'), tests.uid('owner'), 'dup')$$,
  '23505', null, 'ban: one active ban per user and community is a unique constraint');

-- list_bans -------------------------------------------------------------------------------------
select tests.as_user('owner');
select ok((select array_agg(user_id) from public.list_bans(tests.community())) @> array[tests.uid('member_a'), tests.uid('banned')],
  'list_bans: owner lists the active bans');
select tests.as_user('moderator');
select ok((select array_agg(user_id) from public.list_bans(tests.community())) @> array[tests.uid('member_a'), tests.uid('banned')],
  'list_bans: a manage_bans holder (moderator via role) lists bans');
select tests.as_user('admin');
select throws_ok($$select * from public.list_bans(tests.community())$$, '42501', null, 'list_bans: admin (no manage_bans) refused');
select tests.as_user('member_b');
select throws_ok($$select * from public.list_bans(tests.community())$$, '42501', null, 'list_bans: plain member refused');
select is(tests.visible_count($$select 1 from public.community_bans$$) <= 0, true, 'community_bans: a plain member reads no ban rows directly');

-- unban -----------------------------------------------------------------------------------------
select throws_ok($$select public.unban_member(tests.community(), tests.uid('member_a'))$$, '42501', null, 'unban: plain member refused');
select tests.as_user('admin');
select throws_ok($$select public.unban_member(tests.community(), tests.uid('member_a'))$$, '42501', null, 'unban: admin (no manage_bans) refused');
select tests.as_user('owner');
select lives_ok($$select public.unban_member(tests.community(), tests.uid('member_a'))$$, 'unban: owner unbans member_a');
select tests.reset_role();
select is(
  (select jsonb_build_object('revoked', revoked_at is not null, 'revoked_by', revoked_by)
     from public.community_bans where community_id = tests.community() and user_id = tests.uid('member_a')),
  jsonb_build_object('revoked', true, 'revoked_by', tests.uid('owner')),
  'unban: the ban row is kept, revoked_at and revoked_by set');
select tests.as_user('owner');
select ok(exists (select 1 from public.list_bans(tests.community()) where user_id = tests.uid('member_a') and revoked_at is not null),
  'list_bans: includes revoked bans (history kept)');
select tests.reset_role();
select is(tests.redeem_try('member_a', tests.val('invite_code')) ->> 'status', 'joined', 'unban: the user can rejoin');
select tests.as_user('moderator');
select lives_ok($$select public.ban_member(tests.community(), tests.uid('member_b'), null)$$, 'ban: moderator (80, manage_bans) bans member_b (0)');
select tests.reset_role();

-- ban-hidden messages: the fixture's banned user posted in general before the ban --------------
select is((tests.message(tests.msg('banned_general'))).is_hidden, true, 'hidden: banned user''s fixture message is hidden');
select tests.as_user('moderator');
select ok(not exists (select 1 from public.list_channel_messages(tests.ch('general'), 100) where id = tests.msg('banned_general')),
  'hidden: list_channel_messages hides it from a member without view_ban_hidden');
select tests.as_user('admin');
select ok(not exists (select 1 from public.list_channel_messages(tests.ch('general'), 100) where id = tests.msg('banned_general')),
  'hidden: admin (no view_ban_hidden) does not see it');
select is(tests.visible_count(format('select 1 from public.messages where id = %L', tests.msg('banned_general'))), 0::bigint,
  'hidden: direct select does not return it to admin');
select tests.as_user('owner');
select ok(exists (select 1 from public.list_channel_messages(tests.ch('general'), 100) where id = tests.msg('banned_general')),
  'hidden: the owner (every key) sees it in list_channel_messages');
select is(tests.visible_count(format('select 1 from public.messages where id = %L', tests.msg('banned_general'))), 1::bigint,
  'hidden: direct select returns it to the owner');
select tests.reset_role();
select tests.owner_role('Auditor', 5, array['view_ban_hidden']);
select tests.owner_assign('member_a', 'Auditor');
select tests.as_user('member_a');
select ok(exists (select 1 from public.list_channel_messages(tests.ch('general'), 100) where id = tests.msg('banned_general')),
  'hidden: a role with view_ban_hidden makes it visible to member_a');
select is(tests.visible_count(format('select 1 from public.messages where id = %L', tests.msg('banned_general'))), 1::bigint,
  'hidden: direct select follows view_ban_hidden too');
select tests.as_user('member_b');
select throws_ok($$select * from public.list_channel_messages(tests.ch('general'))$$, '42501', null,
  'hidden: the banned member_b gets 42501 from list_channel_messages');
select tests.reset_role();

select * from finish();
rollback;
