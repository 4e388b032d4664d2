-- can_view_channel: every tier of the evaluation (data-model.md, "Evaluation"):
-- not a member / owner, member overwrite, non-default role overwrites (deny beats allow within
-- the tier, positions do not matter), @everyone overwrite, base permission `view_channels`.
-- Also the fixture's mods-only channel and the service-role variant.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(38);

-- Scratch channel and two custom roles held by member_a (Hi above Lo); member_b has @everyone only.
select tests.owner_channel('perm-view', 'text');
select tests.owner_role('Hi', 50);
select tests.owner_role('Lo', 10);
select tests.owner_assign('member_a', 'Hi');
select tests.owner_assign('member_a', 'Lo');

-- Tier 1: membership and ownership -----------------------------------------------------------
select is(tests.can('outsider', 'view', tests.ch('general')), false, 'view: a non-member cannot view general');
select is(tests.can('banned', 'view', tests.ch('general')), false, 'view: a banned (removed) user cannot view general');
select is(tests.can('member_b', 'view', tests.ch('general')), true, 'view: a plain member can view general');
select ok(not coalesce(tests.can('member_a', 'view', gen_random_uuid()), false), 'view: a nonexistent channel is not viewable');

select tests.as_anon();
select throws_ok($$select public.can_view_channel(tests.ch('general'))$$, '42501', null,
  'view: anon cannot call can_view_channel');
select tests.reset_role();

-- The fixture's mods-only channel: @everyone deny view, Moderator allow view
select is(tests.can('owner', 'view', tests.ch('mods-only')), true, 'mods-only: owner can view (owner passes every check)');
select is(tests.can('moderator', 'view', tests.ch('mods-only')), true, 'mods-only: Moderator allow beats @everyone deny');
select is(tests.can('admin', 'view', tests.ch('mods-only')), false, 'mods-only: Admin (no overwrite, no administrator key) is denied by @everyone');
select is(tests.can('member_a', 'view', tests.ch('mods-only')), false, 'mods-only: member_a is denied');
select is(tests.can('member_b', 'view', tests.ch('mods-only')), false, 'mods-only: member_b is denied');

-- Tier 5: base permission ------------------------------------------------------------------
select is(tests.can('member_b', 'view', tests.ch('perm-view')), true, 'base: @everyone holds view_channels, so no overwrite = visible');
select tests.everyone_perms(array['send_messages', 'connect_voice', 'speak']);
select is(tests.can('member_b', 'view', tests.ch('perm-view')), false, 'base: without view_channels on @everyone, member_b cannot view');
select is(tests.can('member_a', 'view', tests.ch('perm-view')), false, 'base: custom roles without view_channels do not grant it');
select is(tests.can('owner', 'view', tests.ch('perm-view')), true, 'base: owner still views without view_channels on @everyone');

-- Tier 4: @everyone overwrite -----------------------------------------------------------------
select tests.role_ow(tests.ch('perm-view'), tests.role('@everyone'), true, null, null, null);
select is(tests.can('member_b', 'view', tests.ch('perm-view')), true, '@everyone: allow overwrite beats a missing base permission');
select tests.everyone_perms(array['view_channels', 'send_messages', 'connect_voice', 'speak']);
select tests.role_ow(tests.ch('perm-view'), tests.role('@everyone'), false, null, null, null);
select is(tests.can('member_b', 'view', tests.ch('perm-view')), false, '@everyone: deny overwrite beats the base permission');
select is(tests.can('member_a', 'view', tests.ch('perm-view')), false, '@everyone: deny applies to members whose roles have no overwrite');
select is(tests.can('owner', 'view', tests.ch('perm-view')), true, '@everyone: deny does not affect the owner');

-- Tier 3: non-default role overwrites -----------------------------------------------------------
select tests.role_ow(tests.ch('perm-view'), tests.role('Lo'), true, null, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), true, 'role: allow on a held role beats @everyone deny');
select is(tests.can('member_b', 'view', tests.ch('perm-view')), false, 'role: the allow does not leak to members without the role');

select tests.role_ow(tests.ch('perm-view'), tests.role('@everyone'), true, null, null, null);
select tests.role_ow(tests.ch('perm-view'), tests.role('Lo'), false, null, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), false, 'role: deny on a held role beats @everyone allow');
select is(tests.can('member_b', 'view', tests.ch('perm-view')), true, 'role: @everyone allow still applies to member_b');

select tests.role_ow(tests.ch('perm-view'), tests.role('Hi'), true, null, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), false, 'role tier: lower role deny beats higher role allow (deny wins, positions ignored)');
select tests.role_ow(tests.ch('perm-view'), tests.role('Hi'), false, null, null, null);
select tests.role_ow(tests.ch('perm-view'), tests.role('Lo'), true, null, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), false, 'role tier: higher role deny beats lower role allow');
select tests.role_ow(tests.ch('perm-view'), tests.role('Hi'), true, null, null, null);
select tests.role_ow(tests.ch('perm-view'), tests.role('@everyone'), false, null, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), true, 'role tier: two allows and no deny = allow');

-- Tier 2: the member's own overwrite -------------------------------------------------------------
select tests.role_ow(tests.ch('perm-view'), tests.role('Hi'), false, null, null, null);
select tests.member_ow(tests.ch('perm-view'), 'member_a', true, null, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), true, 'member: own allow beats role deny and @everyone deny');

select tests.role_ow(tests.ch('perm-view'), tests.role('Hi'), true, null, null, null);
select tests.role_ow(tests.ch('perm-view'), tests.role('Lo'), true, null, null, null);
select tests.role_ow(tests.ch('perm-view'), tests.role('@everyone'), true, null, null, null);
select tests.member_ow(tests.ch('perm-view'), 'member_a', false, null, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), false, 'member: own deny beats role allow and @everyone allow');
select is(tests.can('member_b', 'view', tests.ch('perm-view')), true, 'member: an overwrite for member_a does not affect member_b');

-- null = inherit: the member overwrite row exists but says nothing about view
select tests.role_ow(tests.ch('perm-view'), tests.role('@everyone'), false, null, null, null);
select tests.member_ow(tests.ch('perm-view'), 'member_a', null, true, null, null);
select is(tests.can('member_a', 'view', tests.ch('perm-view')), true, 'member: null view inherits from the role tier (role allow)');
select ok(
  (select o.can_view is null and o.can_send from public.channel_member_overwrites o
    where o.channel_id = tests.ch('perm-view') and o.member_id = tests.member_id('member_a')),
  'member overwrite stores tri-state flags (view null, send true)'
);

-- all four null deletes the overwrite
select tests.member_ow(tests.ch('perm-view'), 'member_a', null, null, null, null);
select is(
  (select count(*) from public.channel_member_overwrites
    where channel_id = tests.ch('perm-view') and member_id = tests.member_id('member_a')),
  0::bigint, 'member overwrite with all four flags null is deleted');
select tests.role_ow(tests.ch('perm-view'), tests.role('Hi'), null, null, null, null);
select is(
  (select count(*) from public.channel_role_overwrites
    where channel_id = tests.ch('perm-view') and role_id = tests.role('Hi')),
  0::bigint, 'role overwrite with all four flags null is deleted');

-- Service-role variant ------------------------------------------------------------------------
select is(tests.can_as('member_a', 'view', tests.ch('mods-only')), false, 'can_view_channel_as: member_a cannot view mods-only');
select is(tests.can_as('moderator', 'view', tests.ch('mods-only')), true, 'can_view_channel_as: moderator can view mods-only');
select is(tests.can_as('outsider', 'view', tests.ch('general')), false, 'can_view_channel_as: outsider cannot view general');
select tests.as_user('member_a');
select throws_ok($$select public.can_view_channel_as(tests.uid('moderator'), tests.ch('mods-only'))$$, '42501', null,
  'can_view_channel_as is refused to authenticated users');
select tests.reset_role();

-- list_channels shows only viewable channels ------------------------------------------------------
select tests.as_user('member_a');
select is(
  (select array_agg(name::text order by name::text collate "C") from public.list_channels(tests.community())
    where name in ('general', 'Lounge', 'Stage', 'mods-only')),
  array['Lounge', 'Stage', 'general'], 'list_channels: member_a sees general, Lounge, Stage but not mods-only');
select tests.as_user('moderator');
select ok(
  exists (select 1 from public.list_channels(tests.community()) where id = tests.ch('mods-only')),
  'list_channels: moderator sees mods-only');
select tests.reset_role();

select * from finish();
rollback;
