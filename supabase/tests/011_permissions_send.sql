-- can_send_in_channel at every tier, and "send requires view"; send_message obeys it.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(30);

select tests.owner_channel('perm-send', 'text');
select tests.owner_role('Hi', 50);
select tests.owner_role('Lo', 10);
select tests.owner_assign('member_a', 'Hi');
select tests.owner_assign('member_a', 'Lo');

-- Tier 1 -----------------------------------------------------------------------------------
select is(tests.can('outsider', 'send', tests.ch('general')), false, 'send: a non-member cannot send in general');
select is(tests.can('banned', 'send', tests.ch('general')), false, 'send: a banned user cannot send in general');
select is(tests.can('owner', 'send', tests.ch('mods-only')), true, 'send: owner can send in mods-only');

-- Tier 5: base --------------------------------------------------------------------------------
select is(tests.can('member_b', 'send', tests.ch('perm-send')), true, 'base: @everyone holds send_messages');
select tests.everyone_perms(array['view_channels', 'connect_voice', 'speak']);
select is(tests.can('member_b', 'send', tests.ch('perm-send')), false, 'base: without send_messages on @everyone, member_b cannot send');
select tests.as_user('member_b');
select is(public.user_has_permission(tests.community(), 'send_messages'), false, 'user_has_permission reflects the removed key');
select tests.reset_role();

-- Tier 4: @everyone ------------------------------------------------------------------------------
select tests.role_ow(tests.ch('perm-send'), tests.role('@everyone'), null, true, null, null);
select is(tests.can('member_b', 'send', tests.ch('perm-send')), true, '@everyone: send allow beats the missing base permission');
select tests.everyone_perms(array['view_channels', 'send_messages', 'connect_voice', 'speak']);
select tests.role_ow(tests.ch('perm-send'), tests.role('@everyone'), null, false, null, null);
select is(tests.can('member_b', 'send', tests.ch('perm-send')), false, '@everyone: send deny beats the base permission');
select is(tests.can('member_b', 'view', tests.ch('perm-send')), true, '@everyone: a send deny leaves view alone');
select is(tests.can('owner', 'send', tests.ch('perm-send')), true, '@everyone: send deny does not affect the owner');

-- Tier 3: roles ---------------------------------------------------------------------------------
select tests.role_ow(tests.ch('perm-send'), tests.role('Lo'), null, true, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), true, 'role: send allow beats @everyone deny');
select is(tests.can('member_b', 'send', tests.ch('perm-send')), false, 'role: member_b without the role stays denied');
select tests.role_ow(tests.ch('perm-send'), tests.role('@everyone'), null, true, null, null);
select tests.role_ow(tests.ch('perm-send'), tests.role('Lo'), null, false, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), false, 'role: send deny beats @everyone allow');
select tests.role_ow(tests.ch('perm-send'), tests.role('Hi'), null, true, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), false, 'role tier: Lo deny beats Hi allow');
select tests.role_ow(tests.ch('perm-send'), tests.role('Hi'), null, false, null, null);
select tests.role_ow(tests.ch('perm-send'), tests.role('Lo'), null, true, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), false, 'role tier: Hi deny beats Lo allow');

-- Tier 2: member ---------------------------------------------------------------------------------
select tests.member_ow(tests.ch('perm-send'), 'member_a', null, true, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), true, 'member: own send allow beats role deny');
select tests.role_ow(tests.ch('perm-send'), tests.role('Hi'), null, true, null, null);
select tests.member_ow(tests.ch('perm-send'), 'member_a', null, false, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), false, 'member: own send deny beats role allow');

-- send_message obeys the evaluation
select tests.as_user('member_a');
select throws_ok($$select public.send_message(tests.ch('perm-send'), 'denied')$$, '42501', null,
  'send_message: refused when can_send_in_channel is false');
select tests.as_user('member_b');
select lives_ok($$select public.send_message(tests.ch('perm-send'), 'allowed')$$,
  'send_message: allowed when can_send_in_channel is true');
select tests.reset_role();

-- Dependent flag: send requires view ------------------------------------------------------------
select tests.member_ow(tests.ch('perm-send'), 'member_a', false, true, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), false, 'send requires view: own view deny + own send allow = cannot send');
select tests.member_ow(tests.ch('perm-send'), 'member_a', null, true, null, null);
select tests.role_ow(tests.ch('perm-send'), tests.role('Hi'), false, null, null, null);
select is(tests.can('member_a', 'send', tests.ch('perm-send')), false, 'send requires view: role view deny + own send allow = cannot send');
select tests.as_user('member_a');
select throws_ok($$select public.send_message(tests.ch('perm-send'), 'blind')$$, '42501', null,
  'send_message: refused in a channel the sender cannot view, despite a send allow');
select tests.reset_role();

select is(tests.can('member_a', 'send', tests.ch('mods-only')), false, 'mods-only: member_a cannot send');
select is(tests.can('moderator', 'send', tests.ch('mods-only')), true, 'mods-only: moderator can send (view via role, send via base)');
select is(tests.can('admin', 'send', tests.ch('mods-only')), false, 'mods-only: admin cannot send where it cannot view');

-- list_channels reports can_send for the caller ----------------------------------------------------
select tests.as_user('member_b');
select is((select can_send from public.list_channels(tests.community()) where id = tests.ch('general')), true,
  'list_channels: can_send true for member_b in general');
select tests.reset_role();
select tests.role_ow(tests.ch('general'), tests.role('@everyone'), null, false, null, null);
select tests.as_user('member_b');
select is((select can_send from public.list_channels(tests.community()) where id = tests.ch('general')), false,
  'list_channels: can_send false after @everyone send deny');
select tests.reset_role();

-- Service-role variant
select is(tests.can_as('member_a', 'send', tests.ch('mods-only')), false, 'can_send_in_channel_as: member_a cannot send in mods-only');
select is(tests.can_as('moderator', 'send', tests.ch('mods-only')), true, 'can_send_in_channel_as: moderator can send in mods-only');
select tests.as_user('moderator');
select throws_ok($$select public.can_send_in_channel_as(tests.uid('member_a'), tests.ch('general'))$$, '42501', null,
  'can_send_in_channel_as is refused to authenticated users');
select tests.reset_role();

select * from finish();
rollback;
