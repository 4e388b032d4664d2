-- Realtime events. The migrations' triggers call public.emit_event(kind, payload). Inside this
-- transaction we replace it with a recorder (tests.install_event_recorder) so the real triggers
-- fire for real writes and we can read what they emitted; the replacement is rolled back.
-- Also: the real emit_event swallows its own errors; payloads carry ids, never content.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(31);

-- The real emitter first --------------------------------------------------------------------
select lives_ok($$select public.emit_event('test.ping', jsonb_build_object('community_id', gen_random_uuid()))$$,
  'emit_event: a normal event is sent without error');
select lives_ok($$select public.emit_event('test.big', jsonb_build_object('pad', repeat('x', 9000)))$$,
  'emit_event: swallows pg_notify''s own error (payload over 8000 bytes)');

select tests.install_event_recorder();

-- messages ------------------------------------------------------------------------------------
select tests.set_id('msg:e1', tests.send_as('member_a', tests.ch('general'), 'event me'));
select is(tests.event_count('message.created', jsonb_build_object(
    'community_id', tests.community(), 'channel_id', tests.ch('general'),
    'message_id', tests.msg('e1'), 'author_id', tests.uid('member_a'))),
  1::bigint, 'message.created with community_id, channel_id, message_id, author_id');
select ok(not exists (select 1 from tests.events where payload::text like '%event me%'),
  'message events never carry the content');
select ok(not exists (select 1 from tests.events where kind like 'message.%' and payload ? 'content'),
  'message payloads have no content key');
select tests.exec_as('member_a', format($$select public.edit_message(%L, 'event me again')$$, tests.msg('e1')));
select is(tests.event_count('message.updated', jsonb_build_object('message_id', tests.msg('e1'), 'channel_id', tests.ch('general'))),
  1::bigint, 'message.updated on edit');
select ok(not exists (select 1 from tests.events where payload::text like '%event me again%'), 'message.updated carries no content');
select tests.exec_as('member_a', format($$select public.delete_message(%L)$$, tests.msg('e1')));
select is(tests.event_count('message.deleted', jsonb_build_object('message_id', tests.msg('e1'), 'community_id', tests.community())),
  1::bigint, 'message.deleted on (soft) delete');
select tests.set_id('msg:e2', tests.send_as('moderator', tests.ch('mods-only'), 'mods event'));
select is(tests.event_count('message.created', jsonb_build_object('message_id', tests.msg('e2'), 'channel_id', tests.ch('mods-only'))),
  1::bigint, 'message.created in mods-only carries the channel id the service filters on');

-- channels -----------------------------------------------------------------------------------
select tests.owner_channel('evented', 'text');
select is(tests.event_count('channel.created', jsonb_build_object('community_id', tests.community(), 'channel_id', tests.ch('evented'))),
  1::bigint, 'channel.created');
select tests.exec_as('owner', format($$select public.update_channel(%L, null, 'new topic', null)$$, tests.ch('evented')));
select is(tests.event_count('channel.updated', jsonb_build_object('channel_id', tests.ch('evented'))), 1::bigint, 'channel.updated');
select tests.role_ow(tests.ch('evented'), tests.role('@everyone'), false, null, null, null);
select is(tests.event_count('overwrite.changed', jsonb_build_object('channel_id', tests.ch('evented'), 'role_id', tests.role('@everyone'))),
  1::bigint, 'overwrite.changed with role_id for a role overwrite');
select tests.member_ow(tests.ch('evented'), 'member_a', true, null, null, null);
select is(tests.event_count('overwrite.changed', jsonb_build_object('channel_id', tests.ch('evented'), 'user_id', tests.uid('member_a'))),
  1::bigint, 'overwrite.changed with user_id for a member overwrite');
select tests.member_ow(tests.ch('evented'), 'member_a', null, null, null, null);
select is(tests.event_count('overwrite.changed', jsonb_build_object('channel_id', tests.ch('evented'), 'user_id', tests.uid('member_a'))),
  2::bigint, 'overwrite.changed when a member overwrite is cleared');
select tests.exec_as('owner', format($$select public.delete_channel(%L)$$, tests.ch('evented')));
select is(tests.event_count('channel.deleted', jsonb_build_object('community_id', tests.community(), 'channel_id', tests.ch('evented'))),
  1::bigint, 'channel.deleted');

-- roles --------------------------------------------------------------------------------------
select tests.owner_role('Evented', 20);
select is(tests.event_count('role.created', jsonb_build_object('community_id', tests.community(), 'role_id', tests.role('Evented'))),
  1::bigint, 'role.created');
select tests.exec_as('owner', format($$select public.update_role(%L, 'Evented2', null, null)$$, tests.role('Evented')));
select is(tests.event_count('role.updated', jsonb_build_object('role_id', tests.role('Evented'))), 1::bigint, 'role.updated');
select tests.exec_as('owner', format($$select public.set_role_permissions(%L, array['manage_messages'])$$, tests.role('Evented')));
select is(tests.event_count('role.permissions_changed', jsonb_build_object('role_id', tests.role('Evented'))), 1::bigint, 'role.permissions_changed');
select tests.everyone_perms(array['view_channels', 'send_messages', 'speak']);
select ok(tests.event_count('role.permissions_changed', jsonb_build_object('role_id', tests.role('@everyone'))) >= 1,
  'role.permissions_changed when @everyone loses connect_voice (voice revocation)');
select tests.exec_as('owner', format($$select public.assign_role(%L, %L, %L)$$, tests.community(), tests.uid('member_b'), tests.role('Evented')));
select ok(tests.event_count('member.roles_changed', jsonb_build_object('community_id', tests.community(), 'user_id', tests.uid('member_b'))) >= 1,
  'member.roles_changed on assign_role');
delete from tests.events where kind = 'member.roles_changed';
select tests.exec_as('owner', format($$select public.remove_role(%L, %L, %L)$$, tests.community(), tests.uid('member_b'), tests.role('Evented')));
select ok(tests.event_count('member.roles_changed', jsonb_build_object('user_id', tests.uid('member_b'))) >= 1,
  'member.roles_changed on remove_role');
select tests.exec_as('owner', format($$select public.delete_role(%L)$$, tests.role('Evented')));
select is(tests.event_count('role.deleted', jsonb_build_object('community_id', tests.community(), 'role_id', tests.role('Evented'))), 1::bigint, 'role.deleted');

-- membership ---------------------------------------------------------------------------------
select tests.create_user('newcomer');
do $$ begin perform tests.redeem_as('newcomer', tests.val('invite_code')); end $$;
select ok(tests.event_count('member.joined', jsonb_build_object('community_id', tests.community(), 'user_id', tests.uid('newcomer'))) >= 1,
  'member.joined on redeem_invite');
select tests.exec_as('newcomer', format($$select public.leave_community(%L)$$, tests.community()));
select ok(tests.event_count('member.left', jsonb_build_object('community_id', tests.community(), 'user_id', tests.uid('newcomer'))) >= 1,
  'member.left on leave_community');
select tests.exec_as('admin', format($$select public.kick_member(%L, %L)$$, tests.community(), tests.uid('member_b')));
select ok(tests.event_count('member.kicked', jsonb_build_object('community_id', tests.community(), 'user_id', tests.uid('member_b'))) >= 1,
  'member.kicked on kick_member');
select tests.exec_as('owner', format($$select public.ban_member(%L, %L, 'bye')$$, tests.community(), tests.uid('member_a')));
select ok(tests.event_count('member.banned', jsonb_build_object('community_id', tests.community(), 'user_id', tests.uid('member_a'))) >= 1,
  'member.banned on ban_member');
select tests.exec_as('owner', format($$select public.unban_member(%L, %L)$$, tests.community(), tests.uid('member_a')));
select ok(tests.event_count('member.unbanned', jsonb_build_object('community_id', tests.community(), 'user_id', tests.uid('member_a'))) >= 1,
  'member.unbanned on unban_member');

-- community ---------------------------------------------------------------------------------
select tests.exec_as('admin', format($$select public.update_community(%L, 'Evented Haven', null)$$, tests.community()));
select ok(tests.event_count('community.updated', jsonb_build_object('community_id', tests.community())) >= 1, 'community.updated on update_community');

select tests.exec_as('outsider', $$select tests.set_id('club', public.create_community('Event Club'))$$);
select tests.exec_as('outsider', format($$select public.delete_community(%L)$$, tests.id('club')));
select ok(tests.event_count('community.deleted', jsonb_build_object('community_id', tests.id('club'))) >= 1, 'community.deleted on delete_community');

-- every payload is small and id-only --------------------------------------------------------------
select ok(not exists (select 1 from tests.events e, jsonb_each(e.payload) kv
                       where kv.key <> 'kind' and (kv.key !~ '_id$' or jsonb_typeof(kv.value) not in ('string', 'null'))),
  'payloads carry only ids (and the kind)');
select ok((select coalesce(max(length(payload::text)), 0) < 1000 from tests.events), 'payloads are small');

select * from finish();
rollback;
