-- Ranks, my_permissions, and the role hierarchy: create / edit / delete / grant / assign a role
-- above, at and below one's rank; system roles only by the owner; system role names never.
-- Fixture ranks: owner = max int, admin = 90, moderator = 80, members = 0.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

select plan(78);

-- Owner-made roles to act on: R50 below admin, R90 at admin's rank, R95 above it.
select tests.owner_role('R50', 50);
select tests.owner_role('R90', 90);
select tests.owner_role('R95', 95);

-- Ranks ---------------------------------------------------------------------------------------
select tests.as_user('member_a');
select is(public.member_rank(tests.community(), tests.uid('owner')), 2147483647, 'member_rank: owner = max int');
select is(public.member_rank(tests.community(), tests.uid('admin')), 90, 'member_rank: admin = 90');
select is(public.member_rank(tests.community(), tests.uid('moderator')), 80, 'member_rank: moderator = 80');
select is(public.member_rank(tests.community(), tests.uid('member_a')), 0, 'member_rank: plain member = 0');
select is(public.member_rank(tests.community(), tests.uid('outsider')), null, 'member_rank: non-member = null');

-- my_permissions ------------------------------------------------------------------------------
select tests.as_user('owner');
select is(tests.sorted(public.my_permissions(tests.community())), tests.all_keys(), 'my_permissions: owner has every key');
select tests.as_user('admin');
select is(tests.sorted(public.my_permissions(tests.community())),
  tests.sorted(array(select k from unnest(tests.all_keys()) k where k not in ('manage_bans', 'view_ban_hidden'))),
  'my_permissions: admin has every key except manage_bans and view_ban_hidden');
select tests.as_user('moderator');
select is(tests.sorted(public.my_permissions(tests.community())),
  tests.sorted(array['view_channels', 'send_messages', 'connect_voice', 'speak', 'manage_messages', 'mute_members', 'move_members']),
  'my_permissions: moderator = @everyone + manage_messages, mute_members, move_members');
select tests.as_user('member_a');
select is(tests.sorted(public.my_permissions(tests.community())),
  tests.sorted(array['view_channels', 'send_messages', 'connect_voice', 'speak']),
  'my_permissions: plain member = @everyone keys');
select tests.as_user('outsider');
select throws_ok($$select public.my_permissions(tests.community())$$, '42501', null, 'my_permissions: non-member gets 42501');
select tests.as_user('admin');
select is(public.user_has_permission(tests.community(), 'manage_bans'), false, 'user_has_permission: admin lacks manage_bans');
select is(public.user_has_permission(tests.community(), 'manage_roles'), true, 'user_has_permission: admin holds manage_roles');
select tests.as_user('owner');
select is(public.user_has_permission(tests.community(), 'manage_bans'), true, 'user_has_permission: owner passes every check');

-- create_role ------------------------------------------------------------------------------------
select tests.as_user('admin');
select lives_ok($$select tests.set_id('role:A89', public.create_role(tests.community(), 'A89', null, 89, '{}'))$$,
  'create_role: admin (90) creates a role below its rank (89)');
select is((select position from public.roles where id = tests.role('A89')), 89, 'create_role: position stored');
select throws_ok($$select public.create_role(tests.community(), 'A90', null, 90, '{}')$$, '42501', null,
  'create_role: admin cannot create a role AT its rank (90)');
select throws_ok($$select public.create_role(tests.community(), 'A91', null, 91, '{}')$$, '42501', null,
  'create_role: admin cannot create a role ABOVE its rank (91)');
select lives_ok($$select tests.set_id('role:Adef', public.create_role(tests.community(), 'Adef'))$$,
  'create_role: admin creates a role with the default position');
select ok((select position between 1 and 89 from public.roles where id = tests.role('Adef')),
  'create_role: the default position is below the caller''s rank and above @everyone');
select lives_ok($$select tests.set_id('role:Amsg', public.create_role(tests.community(), 'Amsg', null, 40, array['manage_messages']))$$,
  'create_role: admin grants a key it holds (manage_messages)');
select throws_ok($$select public.create_role(tests.community(), 'Abans', null, 40, array['manage_bans'])$$, '42501', null,
  'create_role: admin cannot grant a key it lacks (manage_bans)');
select throws_ok($$select public.create_role(tests.community(), 'Abogus', null, 40, array['administrator'])$$, '22023', null,
  'create_role: unknown permission key = 22023');
select throws_ok($$select public.create_role(tests.community(), 'moderator', null, 40, '{}')$$, '23505', null,
  'create_role: name unique case-insensitively (moderator vs Moderator) = 23505');
select throws_ok($$select public.create_role(tests.community(), '   ', null, 40, '{}')$$, '22023', null,
  'create_role: blank name = 22023');
select throws_ok($$select public.create_role(tests.community(), repeat('r', 51), null, 40, '{}')$$, '22001', null,
  'create_role: 51-character name = 22001');
select lives_ok($$select tests.set_id('role:Trim', public.create_role(tests.community(), '  Trim Me  ', null, 30, '{}'))$$,
  'create_role: padded name accepted');
select is((select name::text from public.roles where id = tests.role('Trim')), 'Trim Me', 'create_role: name is stored trimmed');
select tests.as_user('moderator');
select throws_ok($$select public.create_role(tests.community(), 'M1', null, 10, '{}')$$, '42501', null,
  'create_role: moderator (no manage_roles) is refused');
select tests.as_user('outsider');
select throws_ok($$select public.create_role(tests.community(), 'O1', null, 1, '{}')$$, '42501', null,
  'create_role: non-member is refused');

-- update_role ------------------------------------------------------------------------------------
select tests.as_user('admin');
select lives_ok($$select public.update_role(tests.role('R50'), 'R50 renamed', '#112233', null)$$,
  'update_role: admin edits a role below its rank');
select is((select name::text from public.roles where id = tests.role('R50')), 'R50 renamed', 'update_role: rename stored');
select throws_ok($$select public.update_role(tests.role('R90'), 'nope', null, null)$$, '42501', null,
  'update_role: admin cannot edit a role AT its rank');
select throws_ok($$select public.update_role(tests.role('R95'), 'nope', null, null)$$, '42501', null,
  'update_role: admin cannot edit a role ABOVE its rank');
select throws_ok($$select public.update_role(tests.role('R50'), null, null, 90)$$, '42501', null,
  'update_role: admin cannot move a role up to its own rank');
select lives_ok($$select public.update_role(tests.role('R50'), null, null, 89)$$,
  'update_role: admin can move a role to just below its rank');
select throws_ok($$select public.update_role(tests.role('Moderator'), null, '#ff0000', null)$$, '42501', null,
  'update_role: system role Moderator (below admin) can be changed only by the owner');
select tests.as_user('owner');
select lives_ok($$select public.update_role(tests.role('Moderator'), null, '#ff0000', null)$$,
  'update_role: owner can change a system role''s color');
select throws_ok($$select public.update_role(tests.role('Moderator'), 'Mods', null, null)$$, null, null,
  'update_role: not even the owner can rename a system role');
select is((select name::text from public.roles where id = tests.role('Moderator')), 'Moderator', 'update_role: system role name unchanged');
select throws_ok($$select public.update_role(tests.role('@everyone'), 'everyone', null, null)$$, null, null,
  'update_role: @everyone cannot be renamed');
select lives_ok($$select public.update_role(tests.role('R95'), null, null, 96)$$,
  'update_role: owner bypasses the hierarchy');

-- delete_role ------------------------------------------------------------------------------------
select tests.as_user('admin');
select throws_ok($$select public.delete_role(tests.role('R90'))$$, '42501', null, 'delete_role: admin cannot delete a role AT its rank');
select throws_ok($$select public.delete_role(tests.role('R95'))$$, '42501', null, 'delete_role: admin cannot delete a role ABOVE its rank');
select throws_ok($$select public.delete_role(tests.role('Moderator'))$$, null, null, 'delete_role: admin cannot delete a system role');
select lives_ok($$select public.delete_role(tests.role('Adef'))$$, 'delete_role: admin deletes a role below its rank');
select is((select count(*) from public.roles where id = tests.role('Adef')), 0::bigint, 'delete_role: role is gone');
select tests.as_user('owner');
select throws_ok($$select public.delete_role(tests.role('Moderator'))$$, null, null, 'delete_role: not even the owner deletes a system role');
select throws_ok($$select public.delete_role(tests.role('@everyone'))$$, null, null, 'delete_role: not even the owner deletes @everyone');
select tests.reset_role();
select is((select count(*) from public.roles where id in (tests.role('Moderator'), tests.role('@everyone'))), 2::bigint,
  'delete_role: system roles survive the attempts');

-- set_role_permissions ------------------------------------------------------------------------------
select tests.as_user('admin');
select throws_ok($$select public.set_role_permissions(tests.role('Amsg'), array['manage_messages', 'manage_bans'])$$, '42501', null,
  'set_role_permissions: admin cannot add manage_bans (not held)');
select throws_ok($$select public.set_role_permissions(tests.role('Amsg'), array['view_ban_hidden'])$$, '42501', null,
  'set_role_permissions: admin cannot add view_ban_hidden (not held)');
select throws_ok($$select public.set_role_permissions(tests.role('R90'), array['view_channels'])$$, '42501', null,
  'set_role_permissions: admin cannot change a role AT its rank');
select throws_ok($$select public.set_role_permissions(tests.role('R95'), array['view_channels'])$$, '42501', null,
  'set_role_permissions: admin cannot change a role ABOVE its rank');
select throws_ok($$select public.set_role_permissions(tests.role('@everyone'), array['view_channels'])$$, '42501', null,
  'set_role_permissions: admin cannot change @everyone (system)');
select throws_ok($$select public.set_role_permissions(tests.role('Amsg'), array['not_a_key'])$$, '22023', null,
  'set_role_permissions: unknown key = 22023');
select tests.as_user('owner');
select lives_ok($$select public.set_role_permissions(tests.role('Amsg'), array['manage_messages', 'manage_bans'])$$,
  'set_role_permissions: owner adds manage_bans');
select tests.as_user('admin');
select lives_ok($$select public.set_role_permissions(tests.role('Amsg'), array['manage_messages'])$$,
  'set_role_permissions: admin may remove a key it does not hold');
select is(tests.sorted(array(select permission_key::text from public.role_permissions where role_id = tests.role('Amsg'))),
  array['manage_messages'], 'set_role_permissions: the set is replaced');

-- assign_role / remove_role ---------------------------------------------------------------------------
select lives_ok($$select public.assign_role(tests.community(), tests.uid('member_a'), tests.role('Amsg'))$$,
  'assign_role: admin assigns a role below its rank to a member below it');
select is(public.member_rank(tests.community(), tests.uid('member_a')), 40, 'assign_role: member_a now ranks 40');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('member_b'), tests.role('R90'))$$, '42501', null,
  'assign_role: admin cannot assign a role AT its rank');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('member_b'), tests.role('R95'))$$, '42501', null,
  'assign_role: admin cannot assign a role ABOVE its rank');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('owner'), tests.role('Amsg'))$$, '42501', null,
  'assign_role: admin cannot assign roles to the owner');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('admin'), tests.role('Amsg'))$$, '42501', null,
  'assign_role: admin cannot assign roles to itself (target not strictly below)');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('outsider'), tests.role('Amsg'))$$, null, null,
  'assign_role: a non-member cannot be given a role');
select tests.exec_as('outsider', $$select tests.set_id('club', public.create_community('Outsiders'))$$);
select tests.exec_as('postgres', $$select tests.set_id('role:club-admin', (select id from public.roles where community_id = tests.id('club') and name = 'Admin'))$$);
select throws_ok($$select public.assign_role(tests.community(), tests.uid('member_a'), tests.role('club-admin'))$$, null, null,
  'assign_role: a role of another community cannot be assigned');
select tests.as_user('member_a');
select is(public.user_has_permission(tests.community(), 'manage_roles'), false, 'assign_role: no foreign role leaked permissions');
select tests.as_user('admin');
select lives_ok($$select public.remove_role(tests.community(), tests.uid('member_a'), tests.role('Amsg'))$$,
  'remove_role: admin removes a role below its rank');
select is(public.member_rank(tests.community(), tests.uid('member_a')), 0, 'remove_role: member_a back to rank 0');
select tests.as_user('owner');
select throws_ok($$select public.remove_role(tests.community(), tests.uid('member_a'), tests.role('@everyone'))$$, null, null,
  'remove_role: @everyone can never be removed');
select tests.as_user('member_a');
select is(public.user_has_permission(tests.community(), 'view_channels'), true, 'remove_role: member_a keeps @everyone''s keys');
select tests.as_user('moderator');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('member_a'), tests.role('A89'))$$, '42501', null,
  'assign_role: moderator (no manage_roles) is refused');

-- Permissions are additive across roles (no role-level deny)
select tests.owner_role('K1', 3, array['manage_messages']);
select tests.owner_role('K2', 4, array['manage_invites']);
select tests.owner_assign('member_b', 'K1');
select tests.owner_assign('member_b', 'K2');
select tests.as_user('member_b');
select is(tests.sorted(public.my_permissions(tests.community())),
  tests.sorted(array['view_channels', 'send_messages', 'connect_voice', 'speak', 'manage_messages', 'manage_invites']),
  'permissions are the union of @everyone, K1 and K2');
select is(public.member_rank(tests.community(), tests.uid('member_b')), 4, 'rank = the highest position among held roles');
select tests.reset_role();

-- A second actor: moderator (80) with manage_roles from a low role
select tests.owner_role('RoleMgr', 5, array['manage_roles']);
select tests.owner_assign('moderator', 'RoleMgr');
select tests.as_user('moderator');
select lives_ok($$select tests.set_id('role:M79', public.create_role(tests.community(), 'M79', null, 79, '{}'))$$,
  'create_role: moderator (80) with manage_roles creates a role at 79');
select throws_ok($$select public.create_role(tests.community(), 'M80', null, 80, '{}')$$, '42501', null,
  'create_role: moderator cannot create a role AT its rank (80)');
select throws_ok($$select public.assign_role(tests.community(), tests.uid('admin'), tests.role('M79'))$$, '42501', null,
  'assign_role: moderator cannot assign to admin (target above)');
select throws_ok($$select public.create_role(tests.community(), 'M2', null, 10, array['manage_channels'])$$, '42501', null,
  'create_role: moderator cannot grant manage_channels (not held)');
select tests.reset_role();

select * from finish();
rollback;
