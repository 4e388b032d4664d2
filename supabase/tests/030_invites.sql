-- Invites: create (manage_invites, validation), redeem (joined, already member without using a
-- use, case-insensitive code, invalid, expired, used up, revoked, banned, disabled), revoke,
-- and the failed-attempt counter (returned, recorded, PT429 after the limit).
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(51);

select tests.create_user(n) from unnest(array['joiner1', 'joiner2', 'joiner3', 'joiner4', 'joiner5', 'brute', 'brute2']) n;

-- create_invite -----------------------------------------------------------------------------
select tests.as_user('owner');
select lives_ok($$select tests.set_id('inv:plain', (public.create_invite(tests.community())).id)$$,
  'create_invite: owner creates an invite with the defaults');
select tests.reset_role();
insert into tests.vals (key, val) select 'code:plain', code from public.invites where id = tests.id('inv:plain');
select is((select length(code) from public.invites where id = tests.id('inv:plain')), 10, 'create_invite: code is 10 characters');
select is((select uses from public.invites where id = tests.id('inv:plain')), 0, 'create_invite: uses starts at 0');
select is((select max_uses from public.invites where id = tests.id('inv:plain')), null, 'create_invite: max_uses defaults to null (unlimited)');
select ok((select expires_at between now() + interval '23 hours 59 minutes' and now() + interval '24 hours 1 minute'
             from public.invites where id = tests.id('inv:plain')), 'create_invite: expires in 24 hours by default');
select is((select created_by from public.invites where id = tests.id('inv:plain')), tests.uid('owner'), 'create_invite: created_by = caller');

select tests.as_user('admin');
select lives_ok($$select tests.set_id('inv:forever', (public.create_invite(tests.community(), 5, null)).id)$$,
  'create_invite: admin (manage_invites) creates a never-expiring invite');
select tests.reset_role();
select ok((select expires_at is null and max_uses = 5 from public.invites where id = tests.id('inv:forever')),
  'create_invite: expires_in_hours null = never; max_uses stored');
select tests.as_user('admin');
select throws_ok($$select public.create_invite(tests.community(), 0)$$, '22023', null, 'create_invite: max_uses 0 = 22023');
select throws_ok($$select public.create_invite(tests.community(), -3)$$, '22023', null, 'create_invite: negative max_uses = 22023');
select tests.as_user('moderator');
select throws_ok($$select public.create_invite(tests.community())$$, '42501', null, 'create_invite: moderator (no manage_invites) refused');
select tests.as_user('member_a');
select throws_ok($$select public.create_invite(tests.community())$$, '42501', null, 'create_invite: plain member refused');
select tests.as_user('outsider');
select throws_ok($$select public.create_invite(tests.community())$$, '42501', null, 'create_invite: non-member refused');
select tests.as_anon();
select throws_ok($$select public.redeem_invite('ABCDEFGHIJ')$$, '42501', null, 'redeem_invite: anon refused');
select tests.reset_role();

-- redeem: joined / already member / case-insensitive ---------------------------------------------
select is(tests.redeem_try('joiner1', lower(tests.val('code:plain'))),
  jsonb_build_object('status', 'joined', 'community_id', tests.community(), 'joined', true),
  'redeem_invite: lower-cased code joins ({status: joined, community_id, joined: true})');
select is(tests.is_member('joiner1'), true, 'redeem_invite: joiner1 is a member');
select tests.as_user('joiner1');
select is(tests.sorted(public.my_permissions(tests.community())), tests.sorted(array['view_channels', 'send_messages', 'connect_voice', 'speak']),
  'redeem_invite: joins with @everyone only');
select is(public.member_rank(tests.community(), tests.uid('joiner1')), 0, 'redeem_invite: new member ranks 0');
select tests.reset_role();
select is((select uses from public.invites where id = tests.id('inv:plain')), 1, 'redeem_invite: the use is counted');
select is(tests.redeem_try('joiner2', upper(tests.val('code:plain'))) ->> 'status', 'joined', 'redeem_invite: upper-cased code joins');

select is((select jsonb_build_object('status', r->'status', 'joined', r->'joined') from tests.redeem_try('joiner1', tests.val('code:plain')) r),
  jsonb_build_object('status', 'already_member', 'joined', false),
  'redeem_invite: a member redeeming again gets already_member, joined = false');
select is(tests.redeem_try('member_a', tests.val('code:plain')) ->> 'status', 'already_member', 'redeem_invite: fixture member gets already_member');
select is((select uses from public.invites where id = tests.id('inv:plain')), 2, 'redeem_invite: already_member does not consume a use');

-- invalid ----------------------------------------------------------------------------------------
select is(tests.redeem_try('joiner3', 'NOPE000000'),
  jsonb_build_object('status', 'invalid', 'community_id', null, 'joined', false),
  'redeem_invite: unknown code = {status: invalid, community_id: null, joined: false}');

-- expired ----------------------------------------------------------------------------------------
select tests.exec_as('owner', $$select tests.set_id('inv:exp', (public.create_invite(tests.community())).id)$$);
select tests.backdate_invite(tests.id('inv:exp'), now() - interval '1 minute');
select is(tests.redeem_status('joiner3', (select code from public.invites where id = tests.id('inv:exp'))), 'expired',
  'redeem_invite: expired invite = expired (returned, not raised)');
select is(tests.is_member('joiner3'), false, 'redeem_invite: expired invite does not join');
select is((select uses from public.invites where id = tests.id('inv:exp')), 0, 'redeem_invite: expired invite uses unchanged');

-- used up, and already-member does not consume the single use ------------------------------------
select tests.exec_as('owner', $$select tests.set_id('inv:one', (public.create_invite(tests.community(), 1)).id)$$);
insert into tests.vals (key, val) select 'code:one', code from public.invites where id = tests.id('inv:one');
select is(tests.redeem_status('member_b', tests.val('code:one')), 'already_member', 'single-use invite: a member gets already_member');
select is(tests.redeem_status('joiner4', tests.val('code:one')), 'joined', 'single-use invite: its one use is still available');
select is(tests.redeem_status('joiner5', tests.val('code:one')), 'used_up', 'single-use invite: the next user gets used_up');
select is(tests.is_member('joiner5'), false, 'used_up: no membership');
select is((select uses from public.invites where id = tests.id('inv:one')), 1, 'used_up: uses stays at max_uses');

-- revoked ----------------------------------------------------------------------------------------
select tests.exec_as('owner', $$select tests.set_id('inv:rev', (public.create_invite(tests.community())).id)$$);
select tests.as_user('member_a');
select throws_ok($$select public.revoke_invite(tests.id('inv:rev'))$$, '42501', null, 'revoke_invite: plain member refused');
select tests.as_user('admin');
select lives_ok($$select public.revoke_invite(tests.id('inv:rev'))$$, 'revoke_invite: admin (manage_invites) revokes');
select tests.reset_role();
select ok((select revoked_at is not null from public.invites where id = tests.id('inv:rev')), 'revoke_invite: revoked_at set');
select is(tests.redeem_status('joiner5', (select code from public.invites where id = tests.id('inv:rev'))), 'revoked',
  'redeem_invite: revoked invite = revoked');

-- banned -------------------------------------------------------------------------------------------
select is((select jsonb_build_object('status', r->'status', 'joined', r->'joined') from tests.redeem_try('banned', tests.val('code:plain')) r),
  jsonb_build_object('status', 'banned', 'joined', false),
  'redeem_invite: a banned user gets banned, joined = false');
select is(tests.is_member('banned'), false, 'redeem_invite: banned user did not rejoin');

-- invites disabled -------------------------------------------------------------------------------
select tests.exec_as('owner', $$select public.update_community_settings(tests.community(), false)$$);
select is(tests.redeem_status('joiner5', tests.val('code:plain')), 'invites_disabled', 'redeem_invite: invites disabled = invites_disabled');
select is(tests.is_member('joiner5'), false, 'redeem_invite: disabled invites do not join');
select tests.as_user('owner');
select throws_ok($$select public.create_invite(tests.community())$$, null, null, 'create_invite: refused while invites are disabled');
select lives_ok($$select public.update_community_settings(tests.community(), true)$$, 're-enable invites');
select tests.reset_role();
select is(tests.redeem_status('joiner5', tests.val('code:plain')), 'joined', 'redeem_invite: works again once re-enabled');

-- failed-attempt counter ---------------------------------------------------------------------------
create temp table rl_snapshot on commit drop as select count(*) as n from public.rate_limit_events;
select is(tests.redeem_status('brute', 'BADCODE000'), 'invalid', 'failure counter: a failure is returned, not raised');
select ok((select count(*) from public.rate_limit_events) > (select n from rl_snapshot),
  'failure counter: the failed attempt is recorded in rate_limit_events');
select is(
  (select count(*) from generate_series(2, 20) i where tests.redeem_status('brute', 'BADCODE' || lpad(i::text, 3, '0')) = 'invalid'),
  19::bigint, 'failure counter: failures 2..20 within the hour are still answered');
select is(tests.redeem_status('brute', 'BADCODE021'), 'error:PT429', 'failure counter: the 21st attempt within the hour = PT429');
select is(tests.redeem_status('brute', tests.val('code:plain')), 'error:PT429',
  'failure counter: after the limit even a valid code is refused (no brute-force oracle)');
select tests.as_user('brute');
select matches(tests.error_detail($$select public.redeem_invite('BADCODE022')$$), '^retry after [0-9]+ seconds?$',
  'failure counter: PT429 detail = retry after N seconds');
select tests.reset_role();
select is(tests.redeem_status('joiner3', tests.val('code:plain')), 'joined', 'failure counter: per user (another user is unaffected)');

select tests.set_rate_limit('redeem_invite_failed', 3);
select is(
  (select array_agg(tests.redeem_status('brute2', 'NOPE' || lpad(i::text, 6, '0')) order by i) from generate_series(1, 4) i),
  array['invalid', 'invalid', 'invalid', 'error:PT429'],
  'failure counter: a lower limit in rate_limit_settings takes effect (4th of 3 = PT429)');

select * from finish();
rollback;
