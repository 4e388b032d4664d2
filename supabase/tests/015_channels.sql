-- Channels, groups and overwrite management: who may create/update/delete channels, input
-- validation, and the rules for setting overwrites (manage_channel_permissions, target strictly
-- below the caller, a non-owner may only set `true` on flags it has in that channel).
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(41);

-- create_channel ------------------------------------------------------------------------------
select tests.as_user('admin');
select lives_ok($$select tests.set_id('channel:admin-made', public.create_channel(tests.community(), 'admin-made'))$$,
  'create_channel: admin (create_channels) creates a channel');
select tests.reset_role();
select is((select kind::text from public.channels where id = tests.ch('admin-made')), 'text', 'create_channel: kind defaults to text');
select is((select community_id from public.channels where id = tests.ch('admin-made')), tests.community(), 'create_channel: belongs to the community');
select is((select created_by from public.channels where id = tests.ch('admin-made')), tests.uid('admin'), 'create_channel: created_by = caller');
select tests.as_user('moderator');
select throws_ok($$select public.create_channel(tests.community(), 'mod-made')$$, '42501', null, 'create_channel: moderator (no create_channels) refused');
select tests.as_user('member_a');
select throws_ok($$select public.create_channel(tests.community(), 'a-made')$$, '42501', null, 'create_channel: plain member refused');
select tests.as_user('outsider');
select throws_ok($$select public.create_channel(tests.community(), 'o-made')$$, '42501', null, 'create_channel: non-member refused');
select tests.as_user('admin');
select throws_ok($$select public.create_channel(tests.community(), 'video-room', 'video')$$, '22023', null, 'create_channel: unknown kind = 22023');
select throws_ok($$select public.create_channel(tests.community(), '  ')$$, '22023', null, 'create_channel: blank name = 22023');
select throws_ok($$select public.create_channel(tests.community(), repeat('c', 81))$$, '22001', null, 'create_channel: 81-character name = 22001');
select throws_ok($$select public.create_channel(tests.community(), 'GENERAL')$$, '23505', null, 'create_channel: name unique case-insensitively = 23505');

-- update_channel / delete_channel ------------------------------------------------------------------
select lives_ok($$select public.update_channel(tests.ch('admin-made'), null, 'a topic', null)$$, 'update_channel: admin (manage_channels) sets a topic');
select tests.reset_role();
select is((select topic from public.channels where id = tests.ch('admin-made')), 'a topic', 'update_channel: topic stored');
select tests.as_user('admin');
select throws_ok($$select public.update_channel(tests.ch('admin-made'), 'lounge', null, null)$$, '23505', null, 'update_channel: renaming onto an existing name = 23505');
select tests.as_user('member_a');
select throws_ok($$select public.update_channel(tests.ch('general'), 'hijacked', null, null)$$, '42501', null, 'update_channel: plain member refused');
select throws_ok($$select public.delete_channel(tests.ch('admin-made'))$$, '42501', null, 'delete_channel: plain member refused');
select tests.as_user('admin');
select lives_ok($$select public.delete_channel(tests.ch('admin-made'))$$, 'delete_channel: admin deletes');
select tests.reset_role();
select is((select count(*) from public.channels where id = tests.ch('admin-made')), 0::bigint, 'delete_channel: channel is gone');

-- groups ----------------------------------------------------------------------------------------
select tests.as_user('admin');
select lives_ok($$select tests.set_id('group:voice', public.create_channel_group(tests.community(), 'Voice rooms'))$$, 'create_channel_group: admin creates a group');
select lives_ok($$select public.set_channel_group(tests.ch('Lounge'), tests.id('group:voice'))$$, 'set_channel_group: admin groups Lounge');
select tests.reset_role();
select is((select group_id from public.channels where id = tests.ch('Lounge')), tests.id('group:voice'), 'set_channel_group: group stored');
select tests.as_user('member_a');
select throws_ok($$select public.set_channel_group(tests.ch('Lounge'), null)$$, '42501', null, 'set_channel_group: plain member refused');
select throws_ok($$select public.create_channel_group(tests.community(), 'mine')$$, '42501', null, 'create_channel_group: plain member refused');
select tests.as_user('admin');
select lives_ok($$select public.set_channel_group(tests.ch('Lounge'), null)$$, 'set_channel_group: null ungroups');
select tests.reset_role();
select is((select group_id from public.channels where id = tests.ch('Lounge')), null, 'set_channel_group: ungrouped');

-- overwrite management ---------------------------------------------------------------------------
select tests.as_user('moderator');
select throws_ok($$select public.set_channel_role_overwrite(tests.ch('general'), tests.role('@everyone'), false, null, null, null)$$, '42501', null,
  'set_channel_role_overwrite: moderator (no manage_channel_permissions) refused');
select tests.as_user('member_a');
select throws_ok($$select public.set_channel_member_overwrite(tests.ch('general'), tests.uid('member_b'), false, null, null, null)$$, '42501', null,
  'set_channel_member_overwrite: plain member refused');
select tests.as_user('admin');
select lives_ok($$select public.set_channel_role_overwrite(tests.ch('general'), tests.role('Moderator'), null, false, null, null)$$,
  'set_channel_role_overwrite: admin (90) sets an overwrite on Moderator (80)');
select throws_ok($$select public.set_channel_role_overwrite(tests.ch('general'), tests.role('Admin'), null, false, null, null)$$, '42501', null,
  'set_channel_role_overwrite: admin cannot set an overwrite on a role AT its rank');
select throws_ok($$select public.set_channel_role_overwrite(tests.ch('general'), tests.role('Owner'), null, false, null, null)$$, '42501', null,
  'set_channel_role_overwrite: admin cannot set an overwrite on a role above it');
select lives_ok($$select public.set_channel_member_overwrite(tests.ch('general'), tests.uid('moderator'), null, false, null, null)$$,
  'set_channel_member_overwrite: admin sets an overwrite on a member below it');
select throws_ok($$select public.set_channel_member_overwrite(tests.ch('general'), tests.uid('owner'), null, false, null, null)$$, '42501', null,
  'set_channel_member_overwrite: admin cannot set an overwrite on the owner');
select throws_ok($$select public.set_channel_member_overwrite(tests.ch('general'), tests.uid('admin'), null, true, null, null)$$, '42501', null,
  'set_channel_member_overwrite: admin cannot set an overwrite on itself (not strictly below)');
select throws_ok($$select public.set_channel_member_overwrite(tests.ch('mods-only'), tests.uid('member_a'), true, null, null, null)$$, '42501', null,
  'set_channel_member_overwrite: admin cannot allow view on mods-only, which it cannot view itself');
select throws_ok($$select public.set_channel_member_overwrite(tests.ch('Stage'), tests.uid('member_a'), null, null, null, true)$$, '42501', null,
  'set_channel_member_overwrite: admin cannot allow speak on Stage, where it cannot speak');
select tests.as_user('owner');
select lives_ok($$select public.set_channel_member_overwrite(tests.ch('Stage'), tests.uid('member_a'), null, null, null, true)$$,
  'set_channel_member_overwrite: owner may allow anything');

-- list_channels order: by group, then position ----------------------------------------------------
select public.update_channel(tests.ch(n), null, null, p) from (values ('general', 3), ('Lounge', 2), ('mods-only', 1), ('Stage', 0)) v(n, p);
select is(array(select name::text from public.list_channels(tests.community())), array['Stage', 'mods-only', 'Lounge', 'general'],
  'list_channels: ungrouped channels ordered by position');
select tests.set_id('group:A', public.create_channel_group(tests.community(), 'A', 1));
select tests.set_id('group:B', public.create_channel_group(tests.community(), 'B', 0));
select public.update_channel(tests.ch(n), null, null, p) from (values ('general', 0), ('Lounge', 1), ('Stage', 2), ('mods-only', 3)) v(n, p);
select public.set_channel_group(tests.ch(n), tests.id('group:' || g)) from (values ('general', 'A'), ('Lounge', 'A'), ('Stage', 'B'), ('mods-only', 'B')) v(n, g);
select is(array(select name::text from public.list_channels(tests.community())), array['Stage', 'mods-only', 'general', 'Lounge'],
  'list_channels: ordered by group position first, then channel position');
select tests.as_user('member_a');
select throws_ok($$select public.delete_channel_group(tests.id('group:A'))$$, '42501', null, 'delete_channel_group: plain member refused');
select tests.as_user('admin');
select lives_ok($$select public.delete_channel_group(tests.id('group:A'))$$, 'delete_channel_group: admin (manage_channels) deletes a group');
select tests.reset_role();
select is((select count(*) from public.channels where id in (tests.ch('general'), tests.ch('Lounge'))), 2::bigint,
  'delete_channel_group: its channels survive');
select tests.reset_role();

select * from finish();
rollback;
