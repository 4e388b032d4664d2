-- list_channel_messages: newest first, keyset paging on (created_at, id), limit clamped to
-- 1..100 (default 50), deleted excluded, unauthorised = 42501.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(20);

select tests.owner_channel('paging', 'text');
create temp table paged (n int primary key, id uuid not null) on commit drop;
grant all on paged to public;
insert into paged (n, id)
  select i, tests.send_as('member_a', tests.ch('paging'), 'p' || lpad(i::text, 2, '0')) from generate_series(1, 12) i order by i;

-- pages of 5 -------------------------------------------------------------------------------
select tests.as_user('member_b');
create temp table page1 on commit drop as select * from public.list_channel_messages(tests.ch('paging'), 5);
select is(array(select id from page1), array(select id from paged where n between 8 and 12 order by n desc),
  'page 1: the 5 newest messages, newest first');
select is((select bool_and(community_id = tests.community() and channel_id = tests.ch('paging')) from page1),
  true, 'page 1: rows carry the channel and its community');
create temp table page2 on commit drop as
  select * from public.list_channel_messages(tests.ch('paging'), 5,
    (select created_at from page1 order by created_at asc, id asc limit 1),
    (select id from page1 order by created_at asc, id asc limit 1));
select is(array(select id from page2), array(select id from paged where n between 3 and 7 order by n desc),
  'page 2: the next 5 after the keyset of page 1''s last row, no overlap, no gap');
create temp table page3 on commit drop as
  select * from public.list_channel_messages(tests.ch('paging'), 5,
    (select created_at from page2 order by created_at asc, id asc limit 1),
    (select id from page2 order by created_at asc, id asc limit 1));
select is(array(select id from page3), array(select id from paged where n in (1, 2) order by n desc),
  'page 3: the last 2 messages');
select is(
  (select count(*) from public.list_channel_messages(tests.ch('paging'), 5,
     (select created_at from page3 order by created_at asc, id asc limit 1),
     (select id from page3 order by created_at asc, id asc limit 1))),
  0::bigint, 'page 4: empty after the oldest message');
select is(array(select content from page1), array['p12', 'p11', 'p10', 'p09', 'p08'], 'page 1: contents in newest-first order');

-- limit clamp -------------------------------------------------------------------------------
select is((select count(*) from public.list_channel_messages(tests.ch('paging'), 0)), 1::bigint, 'limit 0 is clamped to 1');
select is((select id from public.list_channel_messages(tests.ch('paging'), 0)), (select id from paged where n = 12), 'limit clamped to 1 returns the newest');
select is((select count(*) from public.list_channel_messages(tests.ch('paging'), -5)), 1::bigint, 'negative limit is clamped to 1');
select tests.reset_role();
insert into paged (n, id)
  select i, tests.send_as('member_b', tests.ch('paging'), 'q' || i) from generate_series(13, 112) i order by i;
select tests.as_user('member_a');
select is((select count(*) from public.list_channel_messages(tests.ch('paging'), 1000)), 100::bigint, 'limit 1000 is clamped to 100');
select is((select count(*) from public.list_channel_messages(tests.ch('paging'), 101)), 100::bigint, 'limit 101 is clamped to 100');
select is((select count(*) from public.list_channel_messages(tests.ch('paging'))), 50::bigint, 'default limit is 50');
select is(array(select id from public.list_channel_messages(tests.ch('paging'), 100)),
  array(select id from paged where n between 13 and 112 order by n desc), 'limit 100 returns the 100 newest in order');
select tests.reset_role();

-- deleted messages do not take a slot ---------------------------------------------------------------
select tests.exec_as('member_b', format('select public.delete_message(%L)', (select id from paged where n = 111)));
select tests.as_user('member_a');
select is(array(select id from public.list_channel_messages(tests.ch('paging'), 3)),
  array(select id from paged where n in (112, 110, 109) order by n desc), 'a deleted message is skipped and the page is still full');
select tests.reset_role();

-- keyset ties: equal created_at are ordered by id desc and split by (created_at, id) < (before) -------
do $$
declare
  v_t timestamptz;
begin
  select created_at into v_t from public.messages where id = (select id from paged where n = 6);
  perform tests.set_message_created_at(array(select id from paged where n in (5, 6, 7)), v_t);
exception when others then
  raise warning 'could not create equal created_at values (%); tie test runs without ties', sqlerrm;
end
$$;
create temp table tie on commit drop as
  select m.id, m.created_at from public.messages m where m.id in (select id from paged where n in (5, 6, 7));
grant all on tie to public;
select tests.as_user('member_a');
select is(
  array(select id from public.list_channel_messages(tests.ch('paging'), 4,
          (select created_at from tie order by created_at desc, id desc limit 1 offset 1),
          (select id from tie order by created_at desc, id desc limit 1 offset 1))),
  array(select m.id from public.messages m
         where m.channel_id = tests.ch('paging') and m.deleted_at is null
           and (m.created_at, m.id) < ((select created_at from tie order by created_at desc, id desc limit 1 offset 1),
                                       (select id from tie order by created_at desc, id desc limit 1 offset 1))
         order by m.created_at desc, m.id desc limit 4),
  'keyset: with equal timestamps, rows strictly after (created_at, id) in (created_at desc, id desc) order');
select is(
  (select count(*) from public.list_channel_messages(tests.ch('paging'), 100,
     (select created_at from tie order by created_at desc, id desc limit 1 offset 1),
     (select id from tie order by created_at desc, id desc limit 1 offset 1))
    where id = (select id from tie order by created_at desc, id desc limit 1 offset 1)),
  0::bigint, 'keyset: the cursor row itself is excluded');
select ok(
  (select bool_and(c = 1) from (select count(*) c from (
      select id from public.list_channel_messages(tests.ch('paging'), 100)
      union all
      select id from public.list_channel_messages(tests.ch('paging'), 100,
        (select created_at from public.list_channel_messages(tests.ch('paging'), 100) order by created_at asc, id asc limit 1),
        (select id from public.list_channel_messages(tests.ch('paging'), 100) order by created_at asc, id asc limit 1))) u
    group by id) g),
  'keyset: consecutive pages never repeat a message');
select tests.reset_role();

-- unauthorised callers get 42501, not an empty page -----------------------------------------------
select tests.role_ow(tests.ch('paging'), tests.role('@everyone'), false, null, null, null);
select tests.as_user('member_a');
select throws_ok($$select * from public.list_channel_messages(tests.ch('paging'))$$, '42501', null,
  'a member who lost view gets 42501');
select tests.as_user('owner');
select is((select count(*) from public.list_channel_messages(tests.ch('paging'), 100)), 100::bigint, 'the owner still pages the channel');
select tests.as_user('outsider');
select throws_ok($$select * from public.list_channel_messages(tests.ch('paging'), 5)$$, '42501', null, 'a non-member gets 42501');
select tests.reset_role();

select * from finish();
rollback;
