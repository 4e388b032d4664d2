-- Channels, channel groups and channel overwrites.
--
-- Why the extra visibility checks: a channel one cannot view must be indistinguishable from one
-- that does not exist, so every channel RPC first asks channel_access() and answers 42501 for
-- both. Overwrites follow the hierarchy, and a non-owner may only allow what they themselves are
-- allowed in that channel (otherwise manage_channel_permissions would be a way to grant
-- view/send/connect/speak one does not have).

-- The caller's access to a channel they manage: 42501 unless they can view it and hold p_key.
create function haven_private.channel_for_manager(p_uid uuid, p_channel_id uuid, p_key text)
returns public.channels
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_channel public.channels;
begin
  if not coalesce((haven_private.channel_access(p_uid, p_channel_id)).can_view, false) then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  select ch.* into v_channel from public.channels ch where ch.id = p_channel_id;
  perform haven_private.require_permission(p_uid, v_channel.community_id, p_key);
  return v_channel;
end
$$;

create function haven_private.group_in_community(p_group_id uuid, p_community_id uuid)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_group_id is not null and not exists (
    select 1 from public.channel_groups g where g.id = p_group_id and g.community_id = p_community_id
  ) then
    raise exception 'channel group not found in this community' using errcode = 'P0002', hint = 'group_not_found';
  end if;
end
$$;

create function public.create_channel(
  p_community_id uuid,
  p_name text,
  p_kind text default 'text',
  p_topic text default null,
  p_group_id uuid default null,
  p_position integer default null
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_name text;
  v_topic text;
  v_kind text := lower(haven_private.trim_text(coalesce(p_kind, 'text')));
  v_position integer;
  v_channel_id uuid;
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'create_channels');
  v_name := haven_private.require_text(p_name, 'name', 1, 80);
  v_topic := haven_private.optional_text(p_topic, 'topic', 1024);
  if v_kind not in ('text', 'voice') then
    raise exception 'kind must be text or voice' using errcode = '22023';
  end if;
  if p_position is not null and p_position < 0 then
    raise exception 'position must not be negative' using errcode = '22023';
  end if;
  perform haven_private.group_in_community(p_group_id, p_community_id);

  if exists (select 1 from public.channels ch where ch.community_id = p_community_id and lower(ch.name) = lower(v_name)) then
    raise exception 'a channel named % already exists', v_name using errcode = '23505';
  end if;

  v_position := coalesce(p_position, (
    select coalesce(max(ch.position) + 1, 0)
    from public.channels ch
    where ch.community_id = p_community_id and ch.group_id is not distinct from p_group_id
  ));

  insert into public.channels (community_id, name, topic, kind, position, group_id, created_by)
  values (p_community_id, v_name, v_topic, v_kind, v_position, p_group_id, v_uid)
  returning id into v_channel_id;
  return v_channel_id;
end
$$;

-- Null arguments leave a field unchanged; a blank topic clears it.
create function public.update_channel(
  p_channel_id uuid,
  p_name text default null,
  p_topic text default null,
  p_position integer default null
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_channel public.channels := haven_private.channel_for_manager(v_uid, p_channel_id, 'manage_channels');
  v_name text := v_channel.name;
  v_topic text := v_channel.topic;
  v_position integer := v_channel.position;
begin
  if p_name is not null then
    v_name := haven_private.require_text(p_name, 'name', 1, 80);
    if exists (
      select 1 from public.channels ch
      where ch.community_id = v_channel.community_id and lower(ch.name) = lower(v_name) and ch.id <> v_channel.id
    ) then
      raise exception 'a channel named % already exists', v_name using errcode = '23505';
    end if;
  end if;
  if p_topic is not null then
    v_topic := haven_private.optional_text(p_topic, 'topic', 1024);
  end if;
  if p_position is not null then
    if p_position < 0 then
      raise exception 'position must not be negative' using errcode = '22023';
    end if;
    v_position := p_position;
  end if;

  update public.channels ch
  set name = v_name, topic = v_topic, position = v_position
  where ch.id = v_channel.id
    and (ch.name, ch.topic, ch.position) is distinct from (v_name, v_topic, v_position);
end
$$;

create function public.set_channel_group(p_channel_id uuid, p_group_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_channel public.channels := haven_private.channel_for_manager(v_uid, p_channel_id, 'manage_channels');
begin
  perform haven_private.group_in_community(p_group_id, v_channel.community_id);
  update public.channels ch
  set group_id = p_group_id
  where ch.id = v_channel.id and ch.group_id is distinct from p_group_id;
end
$$;

create function public.delete_channel(p_channel_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_channel public.channels := haven_private.channel_for_manager(v_uid, p_channel_id, 'manage_channels');
begin
  delete from public.channels ch where ch.id = v_channel.id;
end
$$;

create function public.create_channel_group(p_community_id uuid, p_name text, p_position integer default null)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_name text;
  v_group_id uuid;
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_channels');
  v_name := haven_private.require_text(p_name, 'name', 1, 50);
  if p_position is not null and p_position < 0 then
    raise exception 'position must not be negative' using errcode = '22023';
  end if;
  insert into public.channel_groups (community_id, name, position)
  values (p_community_id, v_name, coalesce(p_position, (
    select coalesce(max(g.position) + 1, 0) from public.channel_groups g where g.community_id = p_community_id
  )))
  returning id into v_group_id;
  return v_group_id;
end
$$;

-- Channels of a deleted group become ungrouped (ON DELETE SET NULL), never deleted.
create function public.delete_channel_group(p_group_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_community_id uuid;
begin
  select g.community_id into v_community_id from public.channel_groups g where g.id = p_group_id;
  if v_community_id is null or not haven_private.has_permission(v_uid, v_community_id, 'manage_channels') then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  delete from public.channel_groups g where g.id = p_group_id;
end
$$;

-- Shared by both overwrite RPCs: may the caller set these flags in this channel?
create function haven_private.check_overwrite_flags(
  p_uid uuid,
  p_channel_id uuid,
  p_can_view boolean,
  p_can_send boolean,
  p_can_connect boolean,
  p_can_speak boolean
)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_access record;
begin
  select a.* into v_access from haven_private.channel_access(p_uid, p_channel_id) a;
  if v_access.is_owner then
    return;
  end if;
  if (p_can_view and not v_access.can_view)
     or (p_can_send and not v_access.can_send)
     or (p_can_connect and not v_access.can_connect)
     or (p_can_speak and not v_access.can_speak) then
    raise exception 'not permitted: you can only allow what you are allowed in this channel'
      using errcode = '42501', hint = 'permission_not_held';
  end if;
end
$$;

create function public.set_channel_role_overwrite(
  p_channel_id uuid,
  p_role_id uuid,
  p_can_view boolean,
  p_can_send boolean,
  p_can_connect boolean,
  p_can_speak boolean
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_channel public.channels := haven_private.channel_for_manager(v_uid, p_channel_id, 'manage_channel_permissions');
  v_role public.roles;
  v_rank integer;
begin
  select r.* into v_role from public.roles r where r.id = p_role_id and r.community_id = v_channel.community_id;
  if not found then
    raise exception 'role not found in this community' using errcode = 'P0002', hint = 'role_not_found';
  end if;
  v_rank := haven_private.rank(v_uid, v_channel.community_id);
  if v_rank <> 2147483647 and v_role.position >= v_rank then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;
  perform haven_private.check_overwrite_flags(v_uid, v_channel.id, p_can_view, p_can_send, p_can_connect, p_can_speak);

  if num_nonnulls(p_can_view, p_can_send, p_can_connect, p_can_speak) = 0 then
    delete from public.channel_role_overwrites o where o.channel_id = v_channel.id and o.role_id = v_role.id;
    return;
  end if;

  insert into public.channel_role_overwrites as o (channel_id, role_id, can_view, can_send, can_connect, can_speak)
  values (v_channel.id, v_role.id, p_can_view, p_can_send, p_can_connect, p_can_speak)
  on conflict (channel_id, role_id) do update
  set can_view = excluded.can_view,
      can_send = excluded.can_send,
      can_connect = excluded.can_connect,
      can_speak = excluded.can_speak
  where (o.can_view, o.can_send, o.can_connect, o.can_speak)
        is distinct from (excluded.can_view, excluded.can_send, excluded.can_connect, excluded.can_speak);
end
$$;

create function public.set_channel_member_overwrite(
  p_channel_id uuid,
  p_user_id uuid,
  p_can_view boolean,
  p_can_send boolean,
  p_can_connect boolean,
  p_can_speak boolean
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_channel public.channels := haven_private.channel_for_manager(v_uid, p_channel_id, 'manage_channel_permissions');
  v_member_id uuid;
  v_rank integer;
begin
  select m.id into v_member_id
  from public.community_members m
  where m.community_id = v_channel.community_id and m.user_id = p_user_id;
  if v_member_id is null then
    raise exception 'user is not a member' using errcode = 'P0002', hint = 'not_a_member';
  end if;
  v_rank := haven_private.rank(v_uid, v_channel.community_id);
  if v_rank <> 2147483647 and haven_private.rank(p_user_id, v_channel.community_id) >= v_rank then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;
  perform haven_private.check_overwrite_flags(v_uid, v_channel.id, p_can_view, p_can_send, p_can_connect, p_can_speak);

  if num_nonnulls(p_can_view, p_can_send, p_can_connect, p_can_speak) = 0 then
    delete from public.channel_member_overwrites o where o.channel_id = v_channel.id and o.member_id = v_member_id;
    return;
  end if;

  insert into public.channel_member_overwrites as o (channel_id, member_id, can_view, can_send, can_connect, can_speak)
  values (v_channel.id, v_member_id, p_can_view, p_can_send, p_can_connect, p_can_speak)
  on conflict (channel_id, member_id) do update
  set can_view = excluded.can_view,
      can_send = excluded.can_send,
      can_connect = excluded.can_connect,
      can_speak = excluded.can_speak
  where (o.can_view, o.can_send, o.can_connect, o.can_speak)
        is distinct from (excluded.can_view, excluded.can_send, excluded.can_connect, excluded.can_speak);
end
$$;

create function public.list_channels(p_community_id uuid)
returns table (
  id uuid,
  community_id uuid,
  name text,
  topic text,
  kind text,
  "position" integer,
  group_id uuid,
  can_send boolean,
  can_connect boolean,
  can_speak boolean
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
begin
  if not haven_private.is_member(v_uid, p_community_id) then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  return query
  select ch.id, ch.community_id, ch.name, ch.topic, ch.kind, ch.position, ch.group_id,
         a.can_send, a.can_connect, a.can_speak
  from public.channels ch
  left join public.channel_groups g on g.id = ch.group_id
  cross join lateral haven_private.channel_access(v_uid, ch.id) a
  where ch.community_id = p_community_id and a.can_view
  order by g.position nulls first, g.id nulls first, ch.position, lower(ch.name), ch.id;
end
$$;

revoke all on function
  haven_private.channel_for_manager(uuid, uuid, text),
  haven_private.group_in_community(uuid, uuid),
  haven_private.check_overwrite_flags(uuid, uuid, boolean, boolean, boolean, boolean),
  public.create_channel(uuid, text, text, text, uuid, integer),
  public.update_channel(uuid, text, text, integer),
  public.set_channel_group(uuid, uuid),
  public.delete_channel(uuid),
  public.create_channel_group(uuid, text, integer),
  public.delete_channel_group(uuid),
  public.set_channel_role_overwrite(uuid, uuid, boolean, boolean, boolean, boolean),
  public.set_channel_member_overwrite(uuid, uuid, boolean, boolean, boolean, boolean),
  public.list_channels(uuid)
from public, anon, authenticated, service_role;

grant execute on function
  public.create_channel(uuid, text, text, text, uuid, integer),
  public.update_channel(uuid, text, text, integer),
  public.set_channel_group(uuid, uuid),
  public.delete_channel(uuid),
  public.create_channel_group(uuid, text, integer),
  public.delete_channel_group(uuid),
  public.set_channel_role_overwrite(uuid, uuid, boolean, boolean, boolean, boolean),
  public.set_channel_member_overwrite(uuid, uuid, boolean, boolean, boolean, boolean),
  public.list_channels(uuid)
to authenticated;
