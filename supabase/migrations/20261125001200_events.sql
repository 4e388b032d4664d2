-- Realtime events: NOTIFY haven_events with small JSON payloads (ids and kind, never content).
--
-- Why triggers: every write path (RPCs today, whatever comes later) produces the event, and
-- NOTIFY is transactional, so listeners never hear about rolled-back writes. The signaling
-- service LISTENs, then decides per connected user what they may see (can_view_channel_as,
-- channel_viewers_as, voice_access_as); payloads therefore carry only ids.
-- Why swallow errors: an event is a hint to refresh, never worth failing the user's write for
-- (e.g. a full notification queue).
--
-- Cascades: when a community (or channel, member, role) is deleted, the rows that go with it
-- would each emit an event; the triggers skip those whose parent is already gone, because the
-- parent's own event (community.deleted, channel.deleted, member.*, role.deleted) covers them.

create function public.emit_event(kind text, payload jsonb)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  perform pg_catalog.pg_notify(
    'haven_events',
    (coalesce(payload, '{}'::jsonb) || jsonb_build_object('kind', kind))::text
  );
exception when others then
  raise warning 'haven: dropped % event: % (%)', kind, sqlerrm, sqlstate;
end
$$;

-- Messages -------------------------------------------------------------------------------------
create function haven_private.messages_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_kind text;
begin
  if tg_op = 'INSERT' then
    v_kind := 'message.created';
  elsif new.deleted_at is not null and old.deleted_at is null then
    v_kind := 'message.deleted';
  elsif new.content is distinct from old.content or new.edited_at is distinct from old.edited_at then
    v_kind := 'message.updated';
  else
    -- Hiding on ban is announced once as member.banned, not once per message.
    return null;
  end if;
  perform public.emit_event(v_kind, jsonb_build_object(
    'community_id', new.community_id,
    'channel_id', new.channel_id,
    'message_id', new.id,
    'author_id', new.author_id
  ));
  return null;
end
$$;

create trigger messages_event after insert or update on public.messages
  for each row execute function haven_private.messages_event();

-- Channels -------------------------------------------------------------------------------------
create function haven_private.channels_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform public.emit_event('channel.created',
      jsonb_build_object('community_id', new.community_id, 'channel_id', new.id));
  elsif tg_op = 'UPDATE' then
    if (new.name, new.topic, new.position, new.group_id) is distinct from (old.name, old.topic, old.position, old.group_id) then
      perform public.emit_event('channel.updated',
        jsonb_build_object('community_id', new.community_id, 'channel_id', new.id));
    end if;
  elsif exists (select 1 from public.communities c where c.id = old.community_id) then
    perform public.emit_event('channel.deleted',
      jsonb_build_object('community_id', old.community_id, 'channel_id', old.id));
  end if;
  return null;
end
$$;

create trigger channels_event after insert or update or delete on public.channels
  for each row execute function haven_private.channels_event();

-- Overwrites (voice and visibility changes for everyone the overwrite touches) -----------------
create function haven_private.channel_role_overwrites_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.channel_role_overwrites := case when tg_op = 'DELETE' then old else new end;
  v_community_id uuid;
begin
  select ch.community_id into v_community_id from public.channels ch where ch.id = v_row.channel_id;
  if v_community_id is null or not exists (select 1 from public.roles r where r.id = v_row.role_id) then
    return null;
  end if;
  perform public.emit_event('overwrite.changed', jsonb_build_object(
    'community_id', v_community_id, 'channel_id', v_row.channel_id, 'role_id', v_row.role_id));
  return null;
end
$$;

create trigger channel_role_overwrites_event after insert or update or delete on public.channel_role_overwrites
  for each row execute function haven_private.channel_role_overwrites_event();

create function haven_private.channel_member_overwrites_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.channel_member_overwrites := case when tg_op = 'DELETE' then old else new end;
  v_community_id uuid;
  v_user_id uuid;
begin
  select ch.community_id into v_community_id from public.channels ch where ch.id = v_row.channel_id;
  select m.user_id into v_user_id from public.community_members m where m.id = v_row.member_id;
  if v_community_id is null or v_user_id is null then
    return null;
  end if;
  perform public.emit_event('overwrite.changed', jsonb_build_object(
    'community_id', v_community_id, 'channel_id', v_row.channel_id, 'user_id', v_user_id));
  return null;
end
$$;

create trigger channel_member_overwrites_event after insert or update or delete on public.channel_member_overwrites
  for each row execute function haven_private.channel_member_overwrites_event();

-- Membership -----------------------------------------------------------------------------------
create function haven_private.community_members_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_removal text;
begin
  if tg_op = 'INSERT' then
    perform public.emit_event('member.joined',
      jsonb_build_object('community_id', new.community_id, 'user_id', new.user_id));
  elsif tg_op = 'UPDATE' then
    if new.is_owner is distinct from old.is_owner then
      -- Ownership moves every permission of both users.
      perform public.emit_event('member.roles_changed',
        jsonb_build_object('community_id', new.community_id, 'user_id', new.user_id));
    end if;
    if new.nickname is distinct from old.nickname then
      perform public.emit_event('member.updated',
        jsonb_build_object('community_id', new.community_id, 'user_id', new.user_id));
    end if;
  elsif exists (select 1 from public.communities c where c.id = old.community_id) then
    -- kick_member/ban_member say why they remove the row; bans are announced by the ban row.
    v_removal := coalesce(current_setting('haven.member_removal', true), '');
    if v_removal = 'kicked' then
      perform public.emit_event('member.kicked',
        jsonb_build_object('community_id', old.community_id, 'user_id', old.user_id));
    elsif v_removal <> 'banned' then
      perform public.emit_event('member.left',
        jsonb_build_object('community_id', old.community_id, 'user_id', old.user_id));
    end if;
  end if;
  return null;
end
$$;

create trigger community_members_event after insert or update or delete on public.community_members
  for each row execute function haven_private.community_members_event();

create function haven_private.community_bans_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform public.emit_event('member.banned',
      jsonb_build_object('community_id', new.community_id, 'user_id', new.user_id));
  elsif new.revoked_at is not null and old.revoked_at is null then
    perform public.emit_event('member.unbanned',
      jsonb_build_object('community_id', new.community_id, 'user_id', new.user_id));
  end if;
  return null;
end
$$;

create trigger community_bans_event after insert or update on public.community_bans
  for each row execute function haven_private.community_bans_event();

create function haven_private.member_roles_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.member_roles := case when tg_op = 'DELETE' then old else new end;
  v_community_id uuid;
  v_user_id uuid;
begin
  -- Role deletions are announced as role.deleted; member removals as member.*.
  if not exists (select 1 from public.roles r where r.id = v_row.role_id) then
    return null;
  end if;
  select m.community_id, m.user_id into v_community_id, v_user_id
  from public.community_members m where m.id = v_row.member_id;
  if v_user_id is null then
    return null;
  end if;
  perform public.emit_event('member.roles_changed',
    jsonb_build_object('community_id', v_community_id, 'user_id', v_user_id));
  return null;
end
$$;

create trigger member_roles_event after insert or delete on public.member_roles
  for each row execute function haven_private.member_roles_event();

-- Roles ----------------------------------------------------------------------------------------
create function haven_private.roles_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform public.emit_event('role.created',
      jsonb_build_object('community_id', new.community_id, 'role_id', new.id));
  elsif tg_op = 'UPDATE' then
    if (new.name, new.color, new.position) is distinct from (old.name, old.color, old.position) then
      perform public.emit_event('role.updated',
        jsonb_build_object('community_id', new.community_id, 'role_id', new.id));
    end if;
  elsif exists (select 1 from public.communities c where c.id = old.community_id) then
    perform public.emit_event('role.deleted',
      jsonb_build_object('community_id', old.community_id, 'role_id', old.id));
  end if;
  return null;
end
$$;

create trigger roles_event after insert or update or delete on public.roles
  for each row execute function haven_private.roles_event();

-- set_role_permissions replaces a whole set: one event per role per statement, not per key.
create function haven_private.role_permissions_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  r record;
begin
  for r in
    select distinct ro.community_id, ro.id as role_id
    from changed_rows c
    join public.roles ro on ro.id = c.role_id
    order by ro.community_id, ro.id
  loop
    perform public.emit_event('role.permissions_changed',
      jsonb_build_object('community_id', r.community_id, 'role_id', r.role_id));
  end loop;
  return null;
end
$$;

create trigger role_permissions_insert_event after insert on public.role_permissions
  referencing new table as changed_rows
  for each statement execute function haven_private.role_permissions_event();
create trigger role_permissions_delete_event after delete on public.role_permissions
  referencing old table as changed_rows
  for each statement execute function haven_private.role_permissions_event();

-- Communities ----------------------------------------------------------------------------------
create function haven_private.communities_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' then
    if (new.name, new.description) is distinct from (old.name, old.description) then
      perform public.emit_event('community.updated', jsonb_build_object('community_id', new.id));
    end if;
  else
    perform public.emit_event('community.deleted', jsonb_build_object('community_id', old.id));
  end if;
  return null;
end
$$;

create trigger communities_event after update or delete on public.communities
  for each row execute function haven_private.communities_event();

create function haven_private.community_settings_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.allow_invites is distinct from old.allow_invites then
    perform public.emit_event('community.updated', jsonb_build_object('community_id', new.community_id));
  end if;
  return null;
end
$$;

create trigger community_settings_event after update on public.community_settings
  for each row execute function haven_private.community_settings_event();

-- Nobody but the database itself emits events: a client able to call emit_event could forge
-- them (e.g. a fake member.kicked).
revoke all on function
  public.emit_event(text, jsonb),
  haven_private.messages_event(),
  haven_private.channels_event(),
  haven_private.channel_role_overwrites_event(),
  haven_private.channel_member_overwrites_event(),
  haven_private.community_members_event(),
  haven_private.community_bans_event(),
  haven_private.member_roles_event(),
  haven_private.roles_event(),
  haven_private.role_permissions_event(),
  haven_private.communities_event(),
  haven_private.community_settings_event()
from public, anon, authenticated, service_role;
