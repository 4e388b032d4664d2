-- authorize_voice_join for every fixture user on a text channel, Lounge and Stage; one 42501
-- for "no such channel", "not a member" and "hidden"; 22023 (hint not_voice_channel) only for
-- callers who can see the text channel. authorize_voice_moderation.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(42);

-- Text channel `general` ------------------------------------------------------------------------
select is(tests.voice_join(u, tests.ch('general')) ->> 'error', '22023', 'general (text): ' || u || ' gets 22023')
  from unnest(array['owner', 'admin', 'moderator', 'member_a', 'member_b']) u;
select is(tests.voice_join('member_a', tests.ch('general')) ->> 'hint', 'not_voice_channel', 'general (text): hint = not_voice_channel');
select is(tests.voice_join(u, tests.ch('general')) ->> 'error', '42501', 'general (text): ' || u || ' gets 42501 (no existence oracle)')
  from unnest(array['outsider', 'banned']) u;
select is(tests.voice_join('member_a', tests.ch('mods-only')) ->> 'error', '42501',
  'mods-only (hidden text channel): member_a gets 42501, not 22023');

-- Lounge (voice) -----------------------------------------------------------------------------------
select is(
  (select jsonb_build_object('community_id', r->'community_id', 'channel_id', r->'channel_id', 'user_id', r->'user_id', 'can_speak', r->'can_speak')
     from tests.voice_join(u, tests.ch('Lounge')) r),
  jsonb_build_object('community_id', tests.community(), 'channel_id', tests.ch('Lounge'), 'user_id', tests.uid(u), 'can_speak', true),
  'Lounge: ' || u || ' may join and speak')
  from unnest(array['owner', 'admin', 'moderator', 'member_a', 'member_b']) u;
select is(tests.voice_join(u, tests.ch('Lounge')) ->> 'error', '42501', 'Lounge: ' || u || ' gets 42501')
  from unnest(array['outsider', 'banned']) u;
select is(tests.voice_join('anon', tests.ch('Lounge')) ->> 'error', '42501', 'Lounge: anon gets 42501');
select is(
  (select count(distinct tests.voice_join(u, tests.ch('Lounge')) ->> 'room') from unnest(array['owner', 'member_a', 'member_b']) u),
  1::bigint, 'Lounge: every member gets the same room key');
select ok(nullif(tests.voice_join('member_a', tests.ch('Lounge')) ->> 'room', '') is not null, 'Lounge: room is a non-empty key');
select isnt(tests.voice_join('member_a', tests.ch('Lounge')) ->> 'room', tests.voice_join('member_a', tests.ch('Stage')) ->> 'room',
  'rooms differ between voice channels');
select is(tests.voice_join('member_a', tests.ch('Lounge')) ->> 'room', tests.voice_join('member_a', tests.ch('Lounge')) ->> 'room',
  'room is stable across calls');

-- Stage (voice; @everyone deny speak, Moderator allow speak) ------------------------------------------
select is(
  (select jsonb_build_object('channel_id', r->'channel_id', 'can_speak', r->'can_speak') from tests.voice_join(u, tests.ch('Stage')) r),
  jsonb_build_object('channel_id', tests.ch('Stage'), 'can_speak', s),
  'Stage: ' || u || ' may join with can_speak = ' || s)
  from (values ('owner', true), ('admin', false), ('moderator', true), ('member_a', false), ('member_b', false)) v(u, s);
select is(tests.voice_join(u, tests.ch('Stage')) ->> 'error', '42501', 'Stage: ' || u || ' gets 42501')
  from unnest(array['outsider', 'banned']) u;

-- One error for every kind of "no" ------------------------------------------------------------------
select is(tests.voice_join('member_a', gen_random_uuid()) ->> 'error', '42501', 'nonexistent channel: 42501');
select is(tests.voice_join('outsider', gen_random_uuid()) ->> 'error', '42501', 'nonexistent channel for a non-member: 42501');
select tests.as_user('outsider');
create temp table voice_errors on commit drop as select
  replace(tests.error_message(format('select public.authorize_voice_join(%L)', '00000000-0000-4000-8000-000000000000')),
          '00000000-0000-4000-8000-000000000000', '<id>') as missing,
  replace(tests.error_message(format('select public.authorize_voice_join(%L)', tests.ch('Lounge'))),
          tests.ch('Lounge')::text, '<id>') as not_member;
select tests.as_user('member_a');
select tests.role_ow(tests.ch('Stage'), tests.role('@everyone'), false, null, null, false);
insert into voice_errors (missing, not_member) select
  replace(tests.error_message(format('select public.authorize_voice_join(%L)', tests.ch('Stage'))), tests.ch('Stage')::text, '<id>'), null;
select tests.reset_role();
select is((select count(distinct e) from voice_errors, lateral (values (missing), (not_member)) v(e) where e is not null), 1::bigint,
  'the 42501 message is the same for "no such channel", "not a member" and "hidden"');
select is(tests.voice_join('member_a', tests.ch('Stage')) ->> 'error', '42501', 'hidden voice channel: member_a gets 42501');
select tests.role_ow(tests.ch('Stage'), tests.role('@everyone'), null, null, null, false);

-- connect denied but view allowed
select tests.member_ow(tests.ch('Lounge'), 'member_b', null, null, false, null);
select is(tests.voice_join('member_b', tests.ch('Lounge')) ->> 'error', '42501', 'connect denied: member_b gets 42501 for Lounge');
select tests.member_ow(tests.ch('Lounge'), 'member_b', null, null, null, null);

-- display_name ----------------------------------------------------------------------------------------
select tests.exec_as('member_a', $$select public.set_nickname(tests.community(), 'Voicey')$$);
select is(tests.voice_join('member_a', tests.ch('Lounge')) ->> 'display_name', 'Voicey', 'display_name is the caller''s nickname');
select ok(nullif(tests.voice_join('member_b', tests.ch('Lounge')) ->> 'display_name', '') is not null, 'display_name is present without a nickname');

-- authorize_voice_moderation ------------------------------------------------------------------------------
select tests.as_user('moderator');
select is(
  (select jsonb_build_object('target_user_id', r->'target_user_id', 'same_room', r->>'room' = tests.voice_join('member_a', tests.ch('Lounge')) ->> 'room')
     from public.authorize_voice_moderation(tests.ch('Lounge'), tests.uid('member_a'), 'mute') r),
  jsonb_build_object('target_user_id', tests.uid('member_a'), 'same_room', true),
  'voice moderation: moderator (mute_members) may mute member_a, for the Lounge room');
select lives_ok($$select public.authorize_voice_moderation(tests.ch('Lounge'), tests.uid('member_b'), 'disconnect')$$,
  'voice moderation: moderator (move_members) may disconnect member_b');
select throws_ok($$select public.authorize_voice_moderation(tests.ch('Lounge'), tests.uid('admin'), 'mute')$$, '42501', null,
  'voice moderation: moderator cannot mute admin (above)');
select throws_ok($$select public.authorize_voice_moderation(tests.ch('Lounge'), tests.uid('moderator'), 'mute')$$, '42501', null,
  'voice moderation: moderator cannot target itself (not strictly below)');
select tests.as_user('member_a');
select throws_ok($$select public.authorize_voice_moderation(tests.ch('Lounge'), tests.uid('member_b'), 'mute')$$, '42501', null,
  'voice moderation: plain member (no mute_members) refused');
select throws_ok($$select public.authorize_voice_moderation(tests.ch('Lounge'), tests.uid('member_b'), 'disconnect')$$, '42501', null,
  'voice moderation: plain member (no move_members) refused');
select tests.as_user('outsider');
select throws_ok($$select public.authorize_voice_moderation(tests.ch('Lounge'), tests.uid('member_b'), 'mute')$$, '42501', null,
  'voice moderation: non-member refused');
select tests.reset_role();

select * from finish();
rollback;
