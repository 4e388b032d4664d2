-- Row-level security on every table: RLS is on; an authenticated outsider and anon see nothing
-- of the community; members see what they should (and not hidden channels); direct INSERT /
-- UPDATE / DELETE from clients is refused everywhere (writes go through the RPCs).
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(16 + 2 + 15 + 15 + 7 + 30);

-- Extra rows so that every table has something to hide
select tests.exec_as('owner', $$select tests.set_id('group:g', public.create_channel_group(tests.community(), 'Group G'))$$);
select tests.member_ow(tests.ch('general'), 'member_b', null, true, null, null);

-- RLS is enabled ----------------------------------------------------------------------------
select ok((select c.relrowsecurity from pg_class c where c.oid = to_regclass('public.' || t)), 'RLS enabled on public.' || t)
  from unnest(array['profiles', 'communities', 'community_members', 'community_settings', 'roles',
                    'role_permissions', 'member_roles', 'channels', 'channel_groups',
                    'channel_role_overwrites', 'channel_member_overwrites', 'messages', 'invites',
                    'community_bans', 'rate_limit_settings', 'rate_limit_events']) t
 order by t;
select is(
  (select array_agg(c.relname::text order by c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity),
  null, 'RLS enabled on every table in public (none left without it)');
select is(
  (select array_agg(c.relname::text order by c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p')
      and (has_table_privilege('anon', c.oid, 'INSERT') or has_table_privilege('anon', c.oid, 'UPDATE')
           or has_table_privilege('anon', c.oid, 'DELETE') or has_table_privilege('anon', c.oid, 'TRUNCATE'))),
  null, 'anon holds no write privilege on any public table');

-- What each reader may see of the fixture community ------------------------------------------------
create temp table probes (t text primary key, q text not null) on commit drop;
grant select on probes to public;
insert into probes (t, q) values
  ('communities', format('select 1 from public.communities where id = %L', tests.community())),
  ('community_members', format('select 1 from public.community_members where community_id = %L', tests.community())),
  ('community_settings', format('select 1 from public.community_settings where community_id = %L', tests.community())),
  ('roles', format('select 1 from public.roles where community_id = %L', tests.community())),
  ('role_permissions', format('select 1 from public.role_permissions where role_id in (%L, %L)', tests.role('@everyone'), tests.role('Moderator'))),
  ('member_roles', format('select 1 from public.member_roles where member_id in (%L, %L)', tests.member_id('admin'), tests.member_id('moderator'))),
  ('channels', format('select 1 from public.channels where community_id = %L', tests.community())),
  ('channel_groups', format('select 1 from public.channel_groups where community_id = %L', tests.community())),
  ('channel_role_overwrites', format('select 1 from public.channel_role_overwrites where channel_id in (%L, %L)', tests.ch('mods-only'), tests.ch('Stage'))),
  ('channel_member_overwrites', format('select 1 from public.channel_member_overwrites where channel_id = %L', tests.ch('general'))),
  ('messages', format('select 1 from public.messages where community_id = %L', tests.community())),
  ('invites', format('select 1 from public.invites where community_id = %L', tests.community())),
  ('community_bans', format('select 1 from public.community_bans where community_id = %L', tests.community())),
  ('profiles', format('select 1 from public.profiles where id in (%L, %L)', tests.uid('owner'), tests.uid('member_a'))),
  ('rate_limit_events', 'select 1 from public.rate_limit_events');

select tests.as_user('outsider');
select ok(tests.visible_count(q) <= 0, 'outsider (authenticated, no membership) sees nothing in ' || t) from probes order by t;
select tests.as_anon();
select ok(tests.visible_count(q) <= 0, 'anon sees nothing in ' || t) from probes order by t;
select tests.reset_role();

-- Members see their community (RLS is not simply "deny all") ----------------------------------------
select tests.as_user('member_a');
select is(tests.visible_count(format('select 1 from public.communities where id = %L', tests.community())), 1::bigint, 'member sees its community');
select is(tests.visible_count(format('select 1 from public.community_members where community_id = %L', tests.community())), 5::bigint,
  'member sees the 5 current members (not the banned one)');
select is(tests.visible_count(format('select 1 from public.roles where community_id = %L', tests.community())), 4::bigint, 'member sees the 4 roles');
select is(
  (select array_agg(lower(name::text) order by lower(name::text)) from public.channels where community_id = tests.community()),
  array['general', 'lounge', 'stage'], 'member sees the channels it can view, not mods-only');
select is(tests.visible_count(format('select 1 from public.messages where id = %L', tests.msg('a_general'))), 1::bigint, 'member reads a message in general');
select is(tests.visible_count(format('select 1 from public.profiles where id = %L', tests.uid('owner'))), 1::bigint, 'member reads the owner''s profile');
select tests.as_user('moderator');
select is(tests.visible_count(format('select 1 from public.channels where id = %L', tests.ch('mods-only'))), 1::bigint, 'moderator sees the mods-only channel row');
select tests.reset_role();

-- Direct writes are refused ------------------------------------------------------------------------
select tests.as_user('member_a');
select ok(tests.write_refused(format($$insert into public.communities (name, description, created_by) values ('direct', null, %L)$$, tests.uid('member_a'))),
  'direct INSERT into communities refused');
select ok(tests.write_refused(format($$update public.communities set name = 'pwned' where id = %L$$, tests.community())),
  'direct UPDATE of communities refused');
select ok(tests.write_refused(format($$delete from public.communities where id = %L$$, tests.community())),
  'direct DELETE of communities refused');
select ok(tests.write_refused(format($$update public.community_members set nickname = 'direct' where id = %L$$, tests.member_id('member_a'))),
  'direct UPDATE of one''s own membership refused (set_nickname is the way)');
select ok(tests.write_refused(format($$delete from public.community_members where id = %L$$, tests.member_id('member_a'))),
  'direct DELETE of one''s own membership refused (leave_community is the way)');
select ok(tests.write_refused(format($$update public.community_settings set allow_invites = false where community_id = %L$$, tests.community())),
  'direct UPDATE of community_settings refused');
select ok(tests.write_refused(format($$insert into public.roles (community_id, name, position, is_default, is_system) values (%L, 'Direct', 1, false, false)$$, tests.community())),
  'direct INSERT into roles refused');
select ok(tests.write_refused(format($$update public.roles set position = 1000 where id = %L$$, tests.role('Moderator'))),
  'direct UPDATE of roles refused');
select ok(tests.write_refused(format($$delete from public.roles where id = %L$$, tests.role('Moderator'))),
  'direct DELETE of roles refused');
select ok(tests.write_refused(format($$insert into public.role_permissions (role_id, permission_key) values (%L, 'manage_bans')$$, tests.role('@everyone'))),
  'direct INSERT into role_permissions refused (no self-granted keys)');
select ok(tests.write_refused(format($$delete from public.role_permissions where role_id = %L$$, tests.role('@everyone'))),
  'direct DELETE from role_permissions refused');
select ok(tests.write_refused(format($$insert into public.member_roles (member_id, role_id) values (%L, %L)$$, tests.member_id('member_a'), tests.role('Admin'))),
  'direct INSERT into member_roles refused (no self-assigned Admin)');
select ok(tests.write_refused(format($$delete from public.member_roles where member_id = %L$$, tests.member_id('moderator'))),
  'direct DELETE from member_roles refused');
select ok(tests.write_refused(format($$insert into public.channels (community_id, name, kind, created_by) values (%L, 'direct', 'text', %L)$$, tests.community(), tests.uid('member_a'))),
  'direct INSERT into channels refused');
select ok(tests.write_refused(format($$update public.channels set name = 'renamed' where id = %L$$, tests.ch('general'))),
  'direct UPDATE of channels refused');
select ok(tests.write_refused(format($$delete from public.channels where id = %L$$, tests.ch('general'))),
  'direct DELETE of channels refused');
select ok(tests.write_refused(format($$insert into public.channel_groups (community_id, name, position) values (%L, 'direct', 0)$$, tests.community())),
  'direct INSERT into channel_groups refused');
select ok(tests.write_refused(format($$insert into public.channel_role_overwrites (channel_id, role_id, can_view) values (%L, %L, true)$$, tests.ch('Stage'), tests.role('@everyone'))),
  'direct INSERT into channel_role_overwrites refused');
select ok(tests.write_refused(format($$delete from public.channel_role_overwrites where channel_id = %L$$, tests.ch('mods-only'))),
  'direct DELETE from channel_role_overwrites refused (mods-only stays private)');
select ok(tests.write_refused(format($$insert into public.channel_member_overwrites (channel_id, member_id, can_view) values (%L, %L, true)$$, tests.ch('mods-only'), tests.member_id('member_a'))),
  'direct INSERT into channel_member_overwrites refused');
select ok(tests.write_refused(format($$insert into public.invites (community_id, code, created_by) values (%L, 'DIRECTCODE', %L)$$, tests.community(), tests.uid('member_a'))),
  'direct INSERT into invites refused');
select ok(tests.write_refused(format($$insert into public.community_bans (community_id, user_id, banned_by) values (%L, %L, %L)$$, tests.community(), tests.uid('member_b'), tests.uid('member_a'))),
  'direct INSERT into community_bans refused');
select ok(tests.write_refused(format($$insert into public.profiles (id, username) values (%L, 'directprofile')$$, gen_random_uuid())),
  'direct INSERT into profiles refused');
select ok(tests.write_refused(format($$delete from public.profiles where id = %L$$, tests.uid('member_a'))),
  'direct DELETE of one''s own profile refused');
select tests.as_user('owner');
select ok(tests.write_refused(format($$update public.invites set uses = 0, max_uses = null, revoked_at = null where id = %L$$, tests.id('invite'))),
  'owner: direct UPDATE of invites refused');
select ok(tests.write_refused(format($$update public.community_bans set revoked_at = now() where community_id = %L$$, tests.community())),
  'owner: direct UPDATE of community_bans refused (unban_member is the way)');
select ok(tests.write_refused(format($$delete from public.community_bans where community_id = %L$$, tests.community())),
  'owner: direct DELETE of community_bans refused (history kept)');
select ok(tests.write_refused(format($$update public.messages set is_hidden = false where id = %L$$, tests.msg('banned_general'))),
  'owner: direct UPDATE of messages refused');
select tests.as_anon();
select ok(tests.write_refused(format($$update public.messages set content = 'anon' where community_id = %L$$, tests.community())),
  'anon: direct UPDATE of messages refused');
select ok(tests.write_refused(format($$insert into public.communities (name, created_by) values ('anon', %L)$$, tests.uid('owner'))),
  'anon: direct INSERT into communities refused');
select tests.reset_role();

select * from finish();
rollback;
