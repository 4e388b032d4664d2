-- The shape of the contract (API.md): tables exist; every RPC exists with its exact
-- signature, is SECURITY DEFINER with `set search_path = ''`, is not executable by anon, and
-- is executable by authenticated — except the `*_as` service-role functions, which only the
-- service role may call. The internal event emitter is not an RPC.
begin;
create extension if not exists pgtap with schema extensions;
\ir helpers/fixtures.psql

create temp table contract_rpcs (sig text primary key, service_only boolean not null) on commit drop;
insert into contract_rpcs (sig, service_only) values
  ('public.user_has_permission(uuid, text)', false),
  ('public.can_view_channel(uuid)', false),
  ('public.can_send_in_channel(uuid)', false),
  ('public.can_connect_voice(uuid)', false),
  ('public.can_speak_in_channel(uuid)', false),
  ('public.member_rank(uuid, uuid)', false),
  ('public.my_permissions(uuid)', false),
  ('public.create_community(text, text)', false),
  ('public.update_community(uuid, text, text)', false),
  ('public.delete_community(uuid)', false),
  ('public.update_community_settings(uuid, boolean)', false),
  ('public.leave_community(uuid)', false),
  ('public.transfer_ownership(uuid, uuid)', false),
  ('public.set_nickname(uuid, text)', false),
  ('public.create_role(uuid, text, text, integer, text[])', false),
  ('public.update_role(uuid, text, text, integer)', false),
  ('public.delete_role(uuid)', false),
  ('public.set_role_permissions(uuid, text[])', false),
  ('public.assign_role(uuid, uuid, uuid)', false),
  ('public.remove_role(uuid, uuid, uuid)', false),
  ('public.create_channel(uuid, text, text, text, uuid, integer)', false),
  ('public.update_channel(uuid, text, text, integer)', false),
  ('public.set_channel_group(uuid, uuid)', false),
  ('public.delete_channel(uuid)', false),
  ('public.create_channel_group(uuid, text, integer)', false),
  ('public.delete_channel_group(uuid)', false),
  ('public.set_channel_role_overwrite(uuid, uuid, boolean, boolean, boolean, boolean)', false),
  ('public.set_channel_member_overwrite(uuid, uuid, boolean, boolean, boolean, boolean)', false),
  ('public.list_channels(uuid)', false),
  ('public.send_message(uuid, text, uuid)', false),
  ('public.edit_message(uuid, text)', false),
  ('public.delete_message(uuid)', false),
  ('public.list_channel_messages(uuid, integer, timestamptz, uuid)', false),
  ('public.create_invite(uuid, integer, integer)', false),
  ('public.revoke_invite(uuid)', false),
  ('public.redeem_invite(text)', false),
  ('public.kick_member(uuid, uuid)', false),
  ('public.ban_member(uuid, uuid, text)', false),
  ('public.unban_member(uuid, uuid)', false),
  ('public.list_bans(uuid)', false),
  ('public.authorize_voice_join(uuid)', false),
  ('public.authorize_voice_moderation(uuid, uuid, text)', false),
  ('public.user_has_permission_as(uuid, uuid, text)', true),
  ('public.can_view_channel_as(uuid, uuid)', true),
  ('public.can_send_in_channel_as(uuid, uuid)', true),
  ('public.can_connect_voice_as(uuid, uuid)', true),
  ('public.can_speak_in_channel_as(uuid, uuid)', true),
  ('public.voice_access_as(uuid, uuid)', true);

select plan(16 + 48 * 3 + 6 + 3 + 8);

-- Tables (data-model.md) -----------------------------------------------------------------------
select has_table('public', t, 'table public.' || t || ' exists')
  from unnest(array['profiles', 'communities', 'community_members', 'community_settings', 'roles',
                    'role_permissions', 'member_roles', 'channels', 'channel_groups',
                    'channel_role_overwrites', 'channel_member_overwrites', 'messages', 'invites',
                    'community_bans', 'rate_limit_settings', 'rate_limit_events']) t
 order by t;

-- RPCs: exist, security definer, empty search_path ------------------------------------------------
select ok(
  coalesce((select p.prosecdef and p.proconfig @> array['search_path=""']
              from pg_proc p where p.oid = to_regprocedure(sig)), false),
  sig || ' exists, is SECURITY DEFINER and sets search_path = '''''
) from contract_rpcs order by sig;

-- RPCs: anon (and therefore PUBLIC) cannot execute ---------------------------------------------------
select ok(
  has_function_privilege('anon', to_regprocedure(sig), 'execute') is false,
  sig || ' is not executable by anon'
) from contract_rpcs order by sig;

-- RPCs: authenticated can execute the user RPCs, cannot execute the service-only ones ---------------
select ok(
  has_function_privilege('authenticated', to_regprocedure(sig), 'execute') is distinct from service_only
    and has_function_privilege('authenticated', to_regprocedure(sig), 'execute') is not null,
  sig || case when service_only then ' is not executable by authenticated'
              else ' is executable by authenticated' end
) from contract_rpcs order by sig;

select ok(
  has_function_privilege('service_role', to_regprocedure(sig), 'execute') is true,
  sig || ' is executable by service_role'
) from contract_rpcs where service_only order by sig;

-- The event emitter is internal (only triggers call it): clients cannot forge events -------------------
select ok(
  exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'public' and p.proname = 'emit_event'
             and pg_get_function_identity_arguments(p.oid) ~ 'text, .*jsonb$'),
  'public.emit_event(kind text, payload jsonb) exists'
);
select ok(
  not exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'public' and p.proname = 'emit_event'
                 and (has_function_privilege('anon', p.oid, 'execute')
                      or has_function_privilege('authenticated', p.oid, 'execute'))),
  'public.emit_event is not executable by anon or authenticated (no forged events)'
);

-- Keyset index for list_channel_messages (data-model.md, Messages) -------------------------------
select ok(
  exists (select 1 from pg_indexes
           where schemaname = 'public' and tablename = 'messages'
             and replace(indexdef, '"', '') ~* '\(channel_id, created_at desc, id desc\)'),
  'messages has the keyset index (channel_id, created_at desc, id desc)'
);

-- A request with the authenticated role but no user (no `sub` claim) is "not authenticated" -------
do $$ begin perform set_config('role', 'authenticated', true); perform set_config('request.jwt.claims', '{"role": "authenticated"}', true); end $$;
select throws_ok(q, '42501', null, 'null caller: ' || d || ' raises 42501')
  from (values
    ('create_community', $$select public.create_community('nobody''s club')$$),
    ('redeem_invite', format('select public.redeem_invite(%L)', tests.val('invite_code'))),
    ('send_message', format('select public.send_message(%L, %L)', tests.ch('general'), 'ghost')),
    ('my_permissions', format('select public.my_permissions(%L)', tests.community())),
    ('authorize_voice_join', format('select public.authorize_voice_join(%L)', tests.ch('Lounge'))),
    ('list_channel_messages', format('select * from public.list_channel_messages(%L)', tests.ch('general'))),
    ('create_invite', format('select public.create_invite(%L)', tests.community())),
    ('kick_member', format('select public.kick_member(%L, %L)', tests.community(), tests.uid('member_a')))
  ) v(d, q) order by d;
select tests.reset_role();

select * from finish();
rollback;
