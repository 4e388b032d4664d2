-- Messages: send (validation, derived fields, replies), edit (author only, content only),
-- delete (author, owner, manage_messages; soft), direct writes refused, read rules.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(50);

-- send_message -----------------------------------------------------------------------------------
select tests.as_user('member_a');
select lives_ok($$select tests.set_id('msg:m1', (public.send_message(tests.ch('general'), '  hi there  ')).id)$$,
  'send: member_a sends in general');
select tests.reset_role();
select is((tests.message(tests.msg('m1'))).content, 'hi there', 'send: content stored trimmed');
select is((tests.message(tests.msg('m1'))).author_id, tests.uid('member_a'), 'send: author = caller');
select is((tests.message(tests.msg('m1'))).community_id, tests.community(), 'send: community_id = the channel''s community');
select is((tests.message(tests.msg('m1'))).channel_id, tests.ch('general'), 'send: channel_id stored');
select ok((select edited_at is null and deleted_at is null and not is_hidden and created_at is not null
             from tests.message(tests.msg('m1'))), 'send: fresh message is not edited, deleted or hidden');

select tests.as_user('member_a');
select throws_ok($$select public.send_message(tests.ch('general'), '   ')$$, '22023', null, 'send: blank content = 22023');
select throws_ok($$select public.send_message(tests.ch('general'), '')$$, '22023', null, 'send: empty content = 22023');
select throws_ok($$select public.send_message(tests.ch('general'), repeat('x', 4001))$$, '22001', null, 'send: 4001 characters = 22001');
select lives_ok($$select public.send_message(tests.ch('general'), repeat('x', 4000))$$, 'send: 4000 characters accepted');
select lives_ok($$select public.send_message(tests.ch('general'), '   ' || repeat('y', 4000) || '   ')$$, 'send: length is checked after trimming');
select throws_ok($$select public.send_message(gen_random_uuid(), 'hello?')$$, '42501', null, 'send: nonexistent channel = 42501');
select tests.as_user('outsider');
select throws_ok($$select public.send_message(tests.ch('general'), 'let me in')$$, '42501', null, 'send: non-member = 42501');
select tests.as_anon();
select throws_ok($$select public.send_message(tests.ch('general'), 'anon')$$, '42501', null, 'send: anon = 42501');

-- replies
select tests.as_user('member_b');
select lives_ok($$select tests.set_id('msg:reply', (public.send_message(tests.ch('general'), 'a reply', tests.msg('m1'))).id)$$,
  'send: reply to a visible message in the same channel');
select tests.reset_role();
select is((tests.message(tests.msg('reply'))).reply_to, tests.msg('m1'), 'send: reply_to stored');
select tests.as_user('moderator');
select throws_ok($$select public.send_message(tests.ch('general'), 'cross reply', tests.msg('mod_modsonly'))$$, null, null,
  'send: reply_to a message of another channel is refused');
select throws_ok($$select public.send_message(tests.ch('general'), 'ghost reply', gen_random_uuid())$$, null, null,
  'send: reply_to a nonexistent message is refused');
select tests.as_user('member_b');
select throws_ok($$select public.send_message(tests.ch('general'), 'hidden reply', tests.msg('banned_general'))$$, null, null,
  'send: reply_to a ban-hidden message the sender cannot see is refused');

-- edit_message -------------------------------------------------------------------------------------
select tests.as_user('member_a');
select is((public.edit_message(tests.msg('m1'), '  edited text  ')).content, 'edited text', 'edit: author edits; returns the trimmed content');
select tests.reset_role();
select ok((tests.message(tests.msg('m1'))).edited_at is not null, 'edit: edited_at set');
select is((tests.message(tests.msg('m1'))).author_id, tests.uid('member_a'), 'edit: author unchanged');
select tests.as_user('member_b');
select throws_ok($$select public.edit_message(tests.msg('m1'), 'not yours')$$, '42501', null, 'edit: another member refused');
select tests.as_user('owner');
select throws_ok($$select public.edit_message(tests.msg('m1'), 'owner edit')$$, '42501', null, 'edit: even the owner cannot edit others'' messages');
select tests.as_user('moderator');
select throws_ok($$select public.edit_message(tests.msg('m1'), 'mod edit')$$, '42501', null, 'edit: manage_messages does not allow editing');
select tests.as_user('member_a');
select throws_ok($$select public.edit_message(tests.msg('m1'), '  ')$$, '22023', null, 'edit: blank content = 22023');
select throws_ok($$select public.edit_message(tests.msg('m1'), repeat('z', 4001))$$, '22001', null, 'edit: 4001 characters = 22001');
select tests.reset_role();
select is((tests.message(tests.msg('m1'))).content, 'edited text', 'edit: refused edits changed nothing');

-- delete_message -------------------------------------------------------------------------------------
select tests.set_id('msg:a2', tests.send_as('member_a', tests.ch('general'), 'to be deleted by author'));
select tests.set_id('msg:b1', tests.send_as('member_b', tests.ch('general'), 'to be deleted by moderator'));
select tests.set_id('msg:b2', tests.send_as('member_b', tests.ch('general'), 'to be deleted by owner'));
select tests.as_user('member_b');
select throws_ok($$select public.delete_message(tests.msg('a2'))$$, '42501', null, 'delete: another plain member refused');
select tests.as_user('outsider');
select throws_ok($$select public.delete_message(tests.msg('a2'))$$, '42501', null, 'delete: non-member refused');
select tests.as_user('member_a');
select lives_ok($$select public.delete_message(tests.msg('a2'))$$, 'delete: the author deletes');
select throws_ok($$select public.edit_message(tests.msg('a2'), 'resurrect')$$, null, null, 'edit: a deleted message cannot be edited');
select throws_ok($$select public.send_message(tests.ch('general'), 'reply to nothing', tests.msg('a2'))$$, null, null,
  'send: reply_to a deleted message is refused');
select tests.as_user('moderator');
select lives_ok($$select public.delete_message(tests.msg('b1'))$$, 'delete: manage_messages holder deletes');
select tests.as_user('owner');
select lives_ok($$select public.delete_message(tests.msg('b2'))$$, 'delete: owner deletes');
select tests.reset_role();
select is((select count(*) from public.messages where id in (tests.msg('a2'), tests.msg('b1'), tests.msg('b2')) and deleted_at is not null),
  3::bigint, 'delete: soft delete (rows kept with deleted_at)');
select tests.as_user('owner');
select ok(not exists (select 1 from public.list_channel_messages(tests.ch('general'), 100) where id in (tests.msg('a2'), tests.msg('b1'), tests.msg('b2'))),
  'delete: deleted messages are excluded from list_channel_messages, even for the owner');

-- direct writes are refused --------------------------------------------------------------------------
select tests.as_user('member_a');
select ok(tests.write_refused(format(
  $$insert into public.messages (community_id, channel_id, author_id, content) values (%L, %L, %L, 'direct')$$,
  tests.community(), tests.ch('general'), tests.uid('member_a'))), 'direct INSERT into messages refused');
select ok(tests.write_refused(format($$update public.messages set content = 'tampered' where id = %L$$, tests.msg('m1'))),
  'direct UPDATE of one''s own message refused');
select ok(tests.write_refused(format($$delete from public.messages where id = %L$$, tests.msg('m1'))),
  'direct DELETE of one''s own message refused');
select tests.reset_role();
select is((tests.message(tests.msg('m1'))).content, 'edited text', 'direct writes changed nothing');

-- reading ------------------------------------------------------------------------------------------
select tests.as_user('member_b');
select is((select content from public.list_channel_messages(tests.ch('general'), 100) where id = tests.msg('m1')), 'edited text',
  'read: list_channel_messages returns the current content');
select is((select author_username from public.list_channel_messages(tests.ch('general'), 100) where id = tests.msg('m1')), tests.username('member_a'),
  'read: author_username is the author''s profile username');
select tests.exec_as('member_a', $$select public.set_nickname(tests.community(), 'Ace')$$);
select is((select author_display_name from public.list_channel_messages(tests.ch('general'), 100) where id = tests.msg('m1')), 'Ace',
  'read: author_display_name follows the author''s nickname');
select tests.as_user('member_a');
select is(tests.visible_count(format('select 1 from public.messages where id = %L', tests.msg('mod_modsonly'))), 0::bigint,
  'read: direct select hides messages of a channel the reader cannot view');
select throws_ok($$select * from public.list_channel_messages(tests.ch('mods-only'))$$, '42501', null,
  'read: list_channel_messages on a hidden channel = 42501 (not an empty page)');
select throws_ok($$select * from public.list_channel_messages(gen_random_uuid())$$, '42501', null,
  'read: list_channel_messages on a nonexistent channel = 42501');
select tests.as_user('moderator');
select is(tests.visible_count(format('select 1 from public.messages where id = %L', tests.msg('mod_modsonly'))), 1::bigint,
  'read: moderator reads mods-only messages directly');
select tests.as_user('outsider');
select throws_ok($$select * from public.list_channel_messages(tests.ch('general'))$$, '42501', null,
  'read: list_channel_messages for a non-member = 42501');
select tests.as_anon();
select throws_ok($$select * from public.list_channel_messages(tests.ch('general'))$$, '42501', null,
  'read: list_channel_messages for anon = 42501');
select tests.reset_role();

select * from finish();
rollback;
