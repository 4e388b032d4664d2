-- can_connect_voice and can_speak_in_channel at every tier; connect requires view; speak
-- requires connect; the fixture's Stage; the service-role variants and voice_access_as.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(43);

select tests.owner_channel('perm-voice', 'voice');
select tests.owner_role('Hi', 50);
select tests.owner_role('Lo', 10);
select tests.owner_assign('member_a', 'Hi');
select tests.owner_assign('member_a', 'Lo');

-- Tier 1 -----------------------------------------------------------------------------------
select is(tests.can('member_b', 'connect', tests.ch('Lounge')), true, 'connect: a plain member can connect to Lounge');
select is(tests.can('outsider', 'connect', tests.ch('Lounge')), false, 'connect: a non-member cannot connect');
select is(tests.can('banned', 'connect', tests.ch('Lounge')), false, 'connect: a banned user cannot connect');
select is(tests.can('outsider', 'speak', tests.ch('Lounge')), false, 'speak: a non-member cannot speak');

-- Tier 5: base connect_voice ---------------------------------------------------------------------
select tests.everyone_perms(array['view_channels', 'send_messages', 'speak']);
select is(tests.can('member_b', 'connect', tests.ch('Lounge')), false, 'base: without connect_voice on @everyone, member_b cannot connect');
select is(tests.can('member_b', 'speak', tests.ch('Lounge')), false, 'speak requires connect: speak key held but connect missing = cannot speak');
select is(tests.can('owner', 'connect', tests.ch('Lounge')), true, 'base: owner connects without connect_voice on @everyone');

-- Tier 4 -------------------------------------------------------------------------------------
select tests.role_ow(tests.ch('perm-voice'), tests.role('@everyone'), null, null, true, null);
select is(tests.can('member_b', 'connect', tests.ch('perm-voice')), true, '@everyone: connect allow beats missing base permission');
select tests.everyone_perms(array['view_channels', 'send_messages', 'connect_voice', 'speak']);
select tests.role_ow(tests.ch('perm-voice'), tests.role('@everyone'), null, null, false, null);
select is(tests.can('member_b', 'connect', tests.ch('perm-voice')), false, '@everyone: connect deny beats the base permission');
select is(tests.can('member_b', 'speak', tests.ch('perm-voice')), false, 'speak requires connect: @everyone connect deny = cannot speak');
select is(tests.can('owner', 'connect', tests.ch('perm-voice')), true, '@everyone: connect deny does not affect the owner');

-- Tier 3 -------------------------------------------------------------------------------------
select tests.role_ow(tests.ch('perm-voice'), tests.role('Lo'), null, null, true, null);
select is(tests.can('member_a', 'connect', tests.ch('perm-voice')), true, 'role: connect allow beats @everyone deny');
select is(tests.can('member_b', 'connect', tests.ch('perm-voice')), false, 'role: member_b without the role stays denied');
select tests.role_ow(tests.ch('perm-voice'), tests.role('@everyone'), null, null, true, null);
select tests.role_ow(tests.ch('perm-voice'), tests.role('Lo'), null, null, false, null);
select is(tests.can('member_a', 'connect', tests.ch('perm-voice')), false, 'role: connect deny beats @everyone allow');
select tests.role_ow(tests.ch('perm-voice'), tests.role('Hi'), null, null, true, null);
select is(tests.can('member_a', 'connect', tests.ch('perm-voice')), false, 'role tier: Lo connect deny beats Hi connect allow');
select tests.role_ow(tests.ch('perm-voice'), tests.role('Hi'), null, null, false, null);
select tests.role_ow(tests.ch('perm-voice'), tests.role('Lo'), null, null, true, null);
select is(tests.can('member_a', 'connect', tests.ch('perm-voice')), false, 'role tier: Hi connect deny beats Lo connect allow');

-- Tier 2 -------------------------------------------------------------------------------------
select tests.member_ow(tests.ch('perm-voice'), 'member_a', null, null, true, null);
select is(tests.can('member_a', 'connect', tests.ch('perm-voice')), true, 'member: own connect allow beats role deny');
select tests.role_ow(tests.ch('perm-voice'), tests.role('Hi'), null, null, true, null);
select tests.member_ow(tests.ch('perm-voice'), 'member_a', null, null, false, null);
select is(tests.can('member_a', 'connect', tests.ch('perm-voice')), false, 'member: own connect deny beats role allow');

-- connect requires view
select tests.member_ow(tests.ch('perm-voice'), 'member_a', null, null, true, true);
select tests.role_ow(tests.ch('perm-voice'), tests.role('@everyone'), false, null, true, null);
select is(tests.can('member_a', 'connect', tests.ch('perm-voice')), false, 'connect requires view: @everyone view deny + own connect allow = cannot connect');
select is(tests.can('member_a', 'speak', tests.ch('perm-voice')), false, 'speak requires connect (via view): own speak allow is not enough');
select tests.role_ow(tests.ch('perm-voice'), tests.role('@everyone'), null, null, null, null);
select tests.member_ow(tests.ch('perm-voice'), 'member_a', null, null, null, null);
select tests.role_ow(tests.ch('perm-voice'), tests.role('Hi'), null, null, null, null);
select tests.role_ow(tests.ch('perm-voice'), tests.role('Lo'), null, null, null, null);

-- speak: the fixture's Stage (@everyone deny speak, Moderator allow speak) ----------------------------
select is(tests.can('member_b', 'speak', tests.ch('Lounge')), true, 'speak: a plain member can speak in Lounge');
select is(tests.can('member_a', 'speak', tests.ch('Stage')), false, 'Stage: member_a cannot speak');
select is(tests.can('member_a', 'connect', tests.ch('Stage')), true, 'Stage: member_a can still connect (listen)');
select is(tests.can('member_b', 'speak', tests.ch('Stage')), false, 'Stage: member_b cannot speak');
select is(tests.can('moderator', 'speak', tests.ch('Stage')), true, 'Stage: Moderator allow beats @everyone deny');
select is(tests.can('owner', 'speak', tests.ch('Stage')), true, 'Stage: owner can speak');
select is(tests.can('admin', 'speak', tests.ch('Stage')), false, 'Stage: Admin has no overwrite, so @everyone deny applies');

-- speak tiers on the scratch voice channel
select tests.everyone_perms(array['view_channels', 'send_messages', 'connect_voice']);
select is(tests.can('member_b', 'speak', tests.ch('perm-voice')), false, 'base: without speak on @everyone, member_b cannot speak');
select is(tests.can('member_b', 'connect', tests.ch('perm-voice')), true, 'base: losing speak keeps connect');
select tests.role_ow(tests.ch('perm-voice'), tests.role('@everyone'), null, null, null, true);
select is(tests.can('member_b', 'speak', tests.ch('perm-voice')), true, '@everyone: speak allow beats missing base permission');
select tests.everyone_perms(array['view_channels', 'send_messages', 'connect_voice', 'speak']);
select tests.role_ow(tests.ch('perm-voice'), tests.role('Lo'), null, null, null, false);
select is(tests.can('member_a', 'speak', tests.ch('perm-voice')), false, 'role: speak deny beats @everyone allow');
select tests.role_ow(tests.ch('perm-voice'), tests.role('Hi'), null, null, null, true);
select is(tests.can('member_a', 'speak', tests.ch('perm-voice')), false, 'role tier: Lo speak deny beats Hi speak allow');
select tests.member_ow(tests.ch('perm-voice'), 'member_a', null, null, null, true);
select is(tests.can('member_a', 'speak', tests.ch('perm-voice')), true, 'member: own speak allow beats role speak deny');
select tests.member_ow(tests.ch('Stage'), 'moderator', null, null, null, false);
select is(tests.can('moderator', 'speak', tests.ch('Stage')), false, 'member: own speak deny beats the Moderator role allow on Stage');

-- Service-role variants and voice_access_as ---------------------------------------------------
select is(tests.can_as('member_a', 'connect', tests.ch('Stage')), true, 'can_connect_voice_as: member_a can connect to Stage');
select is(tests.can_as('member_a', 'speak', tests.ch('Stage')), false, 'can_speak_in_channel_as: member_a cannot speak on Stage');
select is(tests.can_as('owner', 'speak', tests.ch('Stage')), true, 'can_speak_in_channel_as: owner can speak on Stage');
select is(tests.can_as('outsider', 'connect', tests.ch('Lounge')), false, 'can_connect_voice_as: outsider cannot connect');

select tests.as_service();
select is(
  (select (v->>'can_connect')::boolean = true and (v->>'can_speak')::boolean = false
     from public.voice_access_as(tests.uid('member_a'), tests.ch('Stage')) v),
  true, 'voice_access_as(member_a, Stage) = {can_connect: true, can_speak: false}');
select is(
  (select (v->>'can_connect')::boolean from public.voice_access_as(tests.uid('outsider'), tests.ch('Lounge')) v),
  false, 'voice_access_as(outsider, Lounge).can_connect = false');
select tests.as_user('member_a');
select throws_ok($$select public.voice_access_as(tests.uid('member_a'), tests.ch('Lounge'))$$, '42501', null,
  'voice_access_as is refused to authenticated users');
select throws_ok($$select public.can_connect_voice_as(tests.uid('member_a'), tests.ch('Lounge'))$$, '42501', null,
  'can_connect_voice_as is refused to authenticated users');
select tests.as_anon();
select throws_ok($$select public.can_connect_voice(tests.ch('Lounge'))$$, '42501', null,
  'anon cannot call can_connect_voice');
select tests.reset_role();

select * from finish();
rollback;
