-- Abuse limits enforced in the database: send_message 5 per 5 s per channel and user,
-- create_invite 20/h, create_community 10/day (failed redeem_invite is in 030_invites), PT429
-- with "retry after N seconds"; the settings table is live and only operators can change it.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

create function tests.try_as(p_user text, p_sql text) returns text
language plpgsql as $$
begin
  perform tests.exec_as(p_user, p_sql);
  return 'ok';
exception when others then
  return 'error:' || sqlstate;
end
$$;
grant execute on function tests.try_as(text, text) to public;

select plan(20);

select is(
  (select array_agg(action || ':' || max_events || ':' || window_seconds order by action)
     from public.rate_limit_settings where action in ('create_community', 'create_invite', 'redeem_invite_failed')),
  array['create_community:10:86400', 'create_invite:20:3600', 'redeem_invite_failed:20:3600'],
  'rate_limit_settings: documented defaults');

select is(tests.val('migration_default:send_message'), '5/5', 'rate_limit_settings: send_message default is 5 per 5 s (as migrated, before the fixture raised it)');
select tests.restore_rate_limit_defaults();

-- send_message: 5 per 5 s per channel -------------------------------------------------------------
select tests.owner_channel('rl-burst', 'text');
select tests.owner_channel('rl-other', 'text');
select is(
  (select array_agg(tests.try_as('member_a', format('select public.send_message(%L, %L)', tests.ch('rl-burst'), 'burst ' || i)) order by i)
     from generate_series(1, 6) i),
  array['ok', 'ok', 'ok', 'ok', 'ok', 'error:PT429'], 'send_message: the 6th message within 5 s = PT429');
select tests.as_user('member_a');
select matches(tests.error_detail(format('select public.send_message(%L, %L)', tests.ch('rl-burst'), 'again')), '^retry after [0-9]+ seconds?$',
  'send_message: PT429 detail = retry after N seconds');
select tests.reset_role();
select is(tests.try_as('member_a', format('select public.send_message(%L, %L)', tests.ch('rl-other'), 'elsewhere')), 'ok',
  'send_message: the limit is per channel');
select is(tests.try_as('member_b', format('select public.send_message(%L, %L)', tests.ch('rl-burst'), 'me too')), 'ok',
  'send_message: the limit is per user');

select tests.set_rate_limit('send_message', 7);
select is(
  (select array_agg(tests.try_as('member_a', format('select public.send_message(%L, %L)', tests.ch('rl-burst'), 'more ' || i)) order by i)
     from generate_series(1, 3) i),
  array['ok', 'ok', 'error:PT429'], 'send_message: raising the limit to 7 in rate_limit_settings takes effect');
select tests.set_rate_limit('send_message', 1);
select is(tests.try_as('member_b', format('select public.send_message(%L, %L)', tests.ch('rl-burst'), 'second')), 'error:PT429',
  'send_message: lowering the limit takes effect immediately');
select tests.restore_rate_limit_defaults();

-- create_invite: 20 per hour ------------------------------------------------------------------------
select is(
  (select count(*) from generate_series(1, 20) i
    where tests.try_as('admin', format('select public.create_invite(%L)', tests.community())) = 'ok'),
  20::bigint, 'create_invite: 20 invites within the hour are allowed');
select is(tests.try_as('admin', format('select public.create_invite(%L)', tests.community())), 'error:PT429',
  'create_invite: the 21st within the hour = PT429');

-- create_community: 10 per day -------------------------------------------------------------------------
select is(
  (select count(*) from generate_series(1, 10) i
    where tests.try_as('outsider', format('select public.create_community(%L)', 'Club ' || i)) = 'ok'),
  10::bigint, 'create_community: 10 communities within a day are allowed');
select is(tests.try_as('outsider', format('select public.create_community(%L)', 'Club 11')), 'error:PT429',
  'create_community: the 11th within a day = PT429');
select is(tests.try_as('member_b', format('select public.create_community(%L)', 'B club')), 'ok',
  'create_community: the limit is per user');

-- only operators change the limits --------------------------------------------------------------------
select tests.as_user('member_a');
select ok(tests.write_refused($$update public.rate_limit_settings set max_events = 1000000 where action = 'send_message'$$),
  'rate_limit_settings: authenticated cannot raise a limit');
select ok(tests.write_refused($$delete from public.rate_limit_settings where action = 'send_message'$$),
  'rate_limit_settings: authenticated cannot delete a limit');
select ok(tests.write_refused($$delete from public.rate_limit_events$$),
  'rate_limit_events: authenticated cannot erase its history');
select tests.as_anon();
select ok(tests.write_refused($$update public.rate_limit_settings set max_events = 1000000$$),
  'rate_limit_settings: anon cannot change limits');
select tests.reset_role();
select is((select max_events from public.rate_limit_settings where action = 'send_message'), 5, 'rate_limit_settings: unchanged by those attempts');
select tests.as_service();
select lives_ok($$update public.rate_limit_settings set max_events = 6 where action = 'send_message'$$,
  'rate_limit_settings: the service role may tune limits');
select tests.reset_role();
select is((select max_events from public.rate_limit_settings where action = 'send_message'), 6, 'rate_limit_settings: the service role''s change is stored');

select * from finish();
rollback;
