-- What clients may read directly (select policies) and the one thing they may write directly
-- (their own username/avatar). Everything else goes through the RPCs.
--
-- Why explicit: hosted Supabase's default privileges would otherwise hand ALL on every table to
-- anon/authenticated. The tables were locked down when created (first migration); this file
-- opens exactly the spec's read paths, then asserts the result so a future migration that
-- forgets a revoke fails loudly instead of shipping a hole.
--
-- Policies call SECURITY DEFINER helpers (is_community_member, can_view_channel, ...) so they
-- never recurse through other tables' policies. auth.uid() is wrapped in a scalar subquery so it
-- is evaluated once per statement, not once per row.

grant usage on schema public to anon, authenticated, service_role;

-- Reads ----------------------------------------------------------------------------------------
grant select on
  public.permissions, public.profiles, public.communities, public.community_settings,
  public.community_members, public.roles, public.role_permissions, public.member_roles,
  public.channel_groups, public.channels, public.channel_role_overwrites,
  public.channel_member_overwrites, public.messages, public.invites, public.community_bans
to authenticated;

create policy permissions_select on public.permissions
  for select to authenticated
  using (true);

-- Own profile, and profiles of people one shares a community with.
create policy profiles_select on public.profiles
  for select to authenticated
  using (id = (select auth.uid()) or public.shares_community_with(id));

create policy communities_select on public.communities
  for select to authenticated
  using (public.is_community_member(id));

create policy community_settings_select on public.community_settings
  for select to authenticated
  using (public.is_community_member(community_id));

create policy community_members_select on public.community_members
  for select to authenticated
  using (public.is_community_member(community_id));

create policy roles_select on public.roles
  for select to authenticated
  using (public.is_community_member(community_id));

create policy role_permissions_select on public.role_permissions
  for select to authenticated
  using (exists (
    select 1 from public.roles r
    where r.id = role_permissions.role_id and public.is_community_member(r.community_id)
  ));

create policy member_roles_select on public.member_roles
  for select to authenticated
  using (exists (
    select 1 from public.community_members m
    where m.id = member_roles.member_id and public.is_community_member(m.community_id)
  ));

create policy channel_groups_select on public.channel_groups
  for select to authenticated
  using (public.is_community_member(community_id));

create policy channels_select on public.channels
  for select to authenticated
  using (public.can_view_channel(id));

-- Overwrites reveal who can see a channel: only for those who may edit them.
create policy channel_role_overwrites_select on public.channel_role_overwrites
  for select to authenticated
  using (
    public.can_view_channel(channel_id)
    and exists (
      select 1 from public.channels ch
      where ch.id = channel_role_overwrites.channel_id
        and public.user_has_permission(ch.community_id, 'manage_channel_permissions')
    )
  );

create policy channel_member_overwrites_select on public.channel_member_overwrites
  for select to authenticated
  using (
    public.can_view_channel(channel_id)
    and exists (
      select 1 from public.channels ch
      where ch.id = channel_member_overwrites.channel_id
        and public.user_has_permission(ch.community_id, 'manage_channel_permissions')
    )
  );

create policy messages_select on public.messages
  for select to authenticated
  using (
    deleted_at is null
    and public.can_view_channel(channel_id)
    and (not is_hidden or public.user_has_permission(community_id, 'view_ban_hidden'))
  );

-- Invite codes are credentials: only invite managers see them.
create policy invites_select on public.invites
  for select to authenticated
  using (public.user_has_permission(community_id, 'manage_invites'));

-- The ban list (who, why, by whom) is for ban managers only.
create policy community_bans_select on public.community_bans
  for select to authenticated
  using (public.user_has_permission(community_id, 'manage_bans'));

-- rate_limit_settings / rate_limit_events: no policy for authenticated; the service role
-- (BYPASSRLS) reads them and tunes the settings.

-- The only direct client write ----------------------------------------------------------------
grant update (username, avatar_url) on public.profiles to authenticated;

create policy profiles_update_self on public.profiles
  for update to authenticated
  using (id = (select auth.uid()))
  with check (id = (select auth.uid()));

-- Service role: reads everything (event fan-out, admin jobs), writes only the tunable limits.
grant select on
  public.permissions, public.profiles, public.communities, public.community_settings,
  public.community_members, public.roles, public.role_permissions, public.member_roles,
  public.channel_groups, public.channels, public.channel_role_overwrites,
  public.channel_member_overwrites, public.messages, public.invites, public.community_bans,
  public.rate_limit_settings, public.rate_limit_events
to service_role;
grant insert, update, delete on public.rate_limit_settings to service_role;

-- Self-check -----------------------------------------------------------------------------------
do $$
declare
  v_bad text;
  v_client_rpcs text[] := array[
    'user_has_permission(uuid,text)', 'can_view_channel(uuid)', 'can_send_in_channel(uuid)',
    'can_connect_voice(uuid)', 'can_speak_in_channel(uuid)', 'member_rank(uuid,uuid)',
    'my_permissions(uuid)', 'is_community_member(uuid)', 'shares_community_with(uuid)',
    'create_community(text,text)', 'update_community(uuid,text,text)', 'delete_community(uuid)',
    'update_community_settings(uuid,boolean)', 'leave_community(uuid)',
    'transfer_ownership(uuid,uuid)', 'set_nickname(uuid,text)',
    'create_role(uuid,text,text,integer,text[])', 'update_role(uuid,text,text,integer)',
    'delete_role(uuid)', 'set_role_permissions(uuid,text[])', 'assign_role(uuid,uuid,uuid)',
    'remove_role(uuid,uuid,uuid)',
    'create_channel(uuid,text,text,text,uuid,integer)', 'update_channel(uuid,text,text,integer)',
    'set_channel_group(uuid,uuid)', 'delete_channel(uuid)', 'create_channel_group(uuid,text,integer)',
    'delete_channel_group(uuid)',
    'set_channel_role_overwrite(uuid,uuid,boolean,boolean,boolean,boolean)',
    'set_channel_member_overwrite(uuid,uuid,boolean,boolean,boolean,boolean)', 'list_channels(uuid)',
    'send_message(uuid,text,uuid)', 'edit_message(uuid,text)', 'delete_message(uuid)',
    'list_channel_messages(uuid,integer,timestamp with time zone,uuid)',
    'create_invite(uuid,integer,integer)', 'revoke_invite(uuid)', 'redeem_invite(text)',
    'kick_member(uuid,uuid)', 'ban_member(uuid,uuid,text)', 'unban_member(uuid,uuid)',
    'list_bans(uuid)', 'authorize_voice_join(uuid)', 'authorize_voice_moderation(uuid,uuid,text)'
  ];
  v_service_rpcs text[] := array[
    'user_has_permission_as(uuid,uuid,text)', 'can_view_channel_as(uuid,uuid)',
    'can_send_in_channel_as(uuid,uuid)', 'can_connect_voice_as(uuid,uuid)',
    'can_speak_in_channel_as(uuid,uuid)', 'channel_viewers_as(uuid)', 'voice_access_as(uuid,uuid)'
  ];
begin
  -- Every Haven table: RLS enabled and forced, nothing for anon.
  select string_agg(c.relname, ', ' order by c.relname) into v_bad
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind = 'r'
    and c.relname = any (array[
      'permissions', 'profiles', 'communities', 'community_settings', 'community_members', 'roles',
      'role_permissions', 'member_roles', 'channel_groups', 'channels', 'channel_role_overwrites',
      'channel_member_overwrites', 'messages', 'invites', 'community_bans', 'rate_limit_settings',
      'rate_limit_events'])
    and (not c.relrowsecurity or not c.relforcerowsecurity
         or pg_catalog.has_table_privilege('anon', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER'));
  if v_bad is not null then
    raise exception 'tables without forced RLS or open to anon: %', v_bad;
  end if;

  -- authenticated may not write any table, except the profile columns granted above.
  select string_agg(c.relname, ', ' order by c.relname) into v_bad
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind = 'r'
    and pg_catalog.has_table_privilege('authenticated', c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER');
  if v_bad is not null then
    raise exception 'tables writable by authenticated: %', v_bad;
  end if;

  -- Our functions: all SECURITY DEFINER-safe (fixed empty search_path), none callable by anon
  -- or PUBLIC, authenticated and service_role exactly on the contract's lists.
  select string_agg(format('%s.%s(%s)', n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes)), ', ') into v_bad
  from pg_catalog.pg_proc p
  join pg_catalog.pg_namespace n on n.oid = p.pronamespace
  where n.nspname in ('public', 'haven_private')
    and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')
    -- Someone else's SECURITY INVOKER helpers in public are not ours to judge.
    and (n.nspname = 'haven_private' or p.prosecdef)
    and (
      not coalesce('search_path=""' = any (p.proconfig), false)
      or (pg_catalog.has_function_privilege('anon', p.oid, 'EXECUTE')
          and p.oid <> 'haven_private.trim_text(text)'::regprocedure)
      or (pg_catalog.has_function_privilege('authenticated', p.oid, 'EXECUTE')
          <> (n.nspname = 'public' and format('%s(%s)', p.proname, pg_catalog.replace(pg_catalog.oidvectortypes(p.proargtypes), ', ', ',')) = any (v_client_rpcs))
          and p.oid <> 'haven_private.trim_text(text)'::regprocedure)
      or (pg_catalog.has_function_privilege('service_role', p.oid, 'EXECUTE')
          <> (n.nspname = 'public' and format('%s(%s)', p.proname, pg_catalog.replace(pg_catalog.oidvectortypes(p.proargtypes), ', ', ',')) = any (v_service_rpcs))
          and p.oid <> 'haven_private.trim_text(text)'::regprocedure)
    );
  if v_bad is not null then
    raise exception 'functions with unsafe search_path or grants off-contract: %', v_bad;
  end if;
end
$$;

-- PostgREST (and the local postrust-server) cache the schema; tell them the API changed.
notify pgrst, 'reload schema';
