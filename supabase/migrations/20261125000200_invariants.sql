-- Invariants that constraints alone cannot express, enforced by triggers.
--
-- Why triggers and not only RPC checks: these rules must hold for every writer (RPCs written
-- later, the service role, an operator in psql). They close the "filed under another community"
-- and "ownership by UPDATE" class of holes at the storage layer: cross-community references are
-- impossible, identity columns never move, exactly one owner and one @everyone per community.

-- updated_at -----------------------------------------------------------------------------------
create function haven_private.touch_updated_at()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger communities_touch before update on public.communities
  for each row execute function haven_private.touch_updated_at();
create trigger community_settings_touch before update on public.community_settings
  for each row execute function haven_private.touch_updated_at();
create trigger roles_touch before update on public.roles
  for each row execute function haven_private.touch_updated_at();
create trigger channels_touch before update on public.channels
  for each row execute function haven_private.touch_updated_at();
create trigger channel_role_overwrites_touch before update on public.channel_role_overwrites
  for each row execute function haven_private.touch_updated_at();
create trigger channel_member_overwrites_touch before update on public.channel_member_overwrites
  for each row execute function haven_private.touch_updated_at();

-- Exactly one owner and exactly one default role per community ---------------------------------
-- The partial unique indexes give "at most one"; "at least one" can only be judged at commit,
-- because create_community and transfer_ownership pass through intermediate states.
create function haven_private.check_community_invariants()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_community_id uuid;
  v_owners int;
  v_defaults int;
begin
  if tg_table_name = 'communities' then
    v_community_id := new.id;
  elsif tg_op = 'DELETE' then
    v_community_id := old.community_id;
  else
    v_community_id := new.community_id;
  end if;

  -- A deleted community takes its members and roles with it; nothing to check.
  if not exists (select 1 from public.communities c where c.id = v_community_id) then
    return null;
  end if;

  select count(*) into v_owners
  from public.community_members m
  where m.community_id = v_community_id and m.is_owner;
  if v_owners <> 1 then
    raise exception 'community % must have exactly one owner (has %)', v_community_id, v_owners
      using errcode = '23514',
            hint = 'Transfer ownership (or delete the community) before removing its owner.';
  end if;

  select count(*) into v_defaults
  from public.roles r
  where r.community_id = v_community_id and r.is_default;
  if v_defaults <> 1 then
    raise exception 'community % must have exactly one default role (has %)', v_community_id, v_defaults
      using errcode = '23514';
  end if;

  return null;
end
$$;

create constraint trigger communities_invariants
  after insert on public.communities
  deferrable initially deferred
  for each row execute function haven_private.check_community_invariants();
create constraint trigger community_members_invariants
  after insert or update or delete on public.community_members
  deferrable initially deferred
  for each row execute function haven_private.check_community_invariants();
create constraint trigger roles_invariants
  after insert or update or delete on public.roles
  deferrable initially deferred
  for each row execute function haven_private.check_community_invariants();

-- Memberships: identity never moves ------------------------------------------------------------
create function haven_private.guard_community_members()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.id <> old.id or new.community_id <> old.community_id or new.user_id <> old.user_id
     or new.joined_at <> old.joined_at then
    raise exception 'membership identity is immutable' using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger community_members_guard before update on public.community_members
  for each row execute function haven_private.guard_community_members();

-- Roles: system roles keep their identity and name; they go only with their community ----------
create function haven_private.guard_roles()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' then
    if new.id <> old.id or new.community_id <> old.community_id
       or new.is_default <> old.is_default or new.is_system <> old.is_system then
      raise exception 'role identity is immutable' using errcode = '42501';
    end if;
    if old.is_system and new.name <> old.name then
      raise exception 'system role names cannot change' using errcode = '22023', hint = 'system_role_name';
    end if;
    return new;
  end if;

  -- DELETE: allowed for system roles only as part of deleting the community.
  if old.is_system and exists (select 1 from public.communities c where c.id = old.community_id) then
    raise exception 'system roles cannot be deleted' using errcode = '22023', hint = 'system_role';
  end if;
  return old;
end
$$;

create trigger roles_guard before update or delete on public.roles
  for each row execute function haven_private.guard_roles();

-- Role grants: same community; @everyone cannot be taken away ----------------------------------
create function haven_private.guard_member_roles()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_is_default boolean;
begin
  if tg_op in ('INSERT', 'UPDATE') then
    if not exists (
      select 1
      from public.community_members m
      join public.roles r on r.community_id = m.community_id
      where m.id = new.member_id and r.id = new.role_id
    ) then
      raise exception 'role and member belong to different communities' using errcode = '23514';
    end if;
    return new;
  end if;

  -- DELETE: cascades from a deleted member or role are fine; removing @everyone from a live
  -- member is not.
  select r.is_default into v_is_default from public.roles r where r.id = old.role_id;
  if coalesce(v_is_default, false)
     and exists (select 1 from public.community_members m where m.id = old.member_id) then
    raise exception 'the @everyone role cannot be removed' using errcode = '22023', hint = 'everyone_role';
  end if;
  return old;
end
$$;

create trigger member_roles_guard before insert or update or delete on public.member_roles
  for each row execute function haven_private.guard_member_roles();

-- Channels and groups: community and kind are fixed; groups come from the same community -------
create function haven_private.guard_channels()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' and (new.id <> old.id or new.community_id <> old.community_id or new.kind <> old.kind) then
    raise exception 'channel community and kind are immutable' using errcode = '42501';
  end if;
  if new.group_id is not null and not exists (
    select 1 from public.channel_groups g where g.id = new.group_id and g.community_id = new.community_id
  ) then
    raise exception 'channel group belongs to another community' using errcode = '23514';
  end if;
  return new;
end
$$;

create trigger channels_guard before insert or update on public.channels
  for each row execute function haven_private.guard_channels();

create function haven_private.guard_channel_groups()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.id <> old.id or new.community_id <> old.community_id then
    raise exception 'channel group community is immutable' using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger channel_groups_guard before update on public.channel_groups
  for each row execute function haven_private.guard_channel_groups();

-- Overwrites: the role or member must belong to the channel's community ------------------------
create function haven_private.guard_channel_role_overwrites()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not exists (
    select 1
    from public.channels ch
    join public.roles r on r.community_id = ch.community_id
    where ch.id = new.channel_id and r.id = new.role_id
  ) then
    raise exception 'role and channel belong to different communities' using errcode = '23514';
  end if;
  return new;
end
$$;

create trigger channel_role_overwrites_guard before insert or update on public.channel_role_overwrites
  for each row execute function haven_private.guard_channel_role_overwrites();

create function haven_private.guard_channel_member_overwrites()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not exists (
    select 1
    from public.channels ch
    join public.community_members m on m.community_id = ch.community_id
    where ch.id = new.channel_id and m.id = new.member_id
  ) then
    raise exception 'member and channel belong to different communities' using errcode = '23514';
  end if;
  return new;
end
$$;

create trigger channel_member_overwrites_guard before insert or update on public.channel_member_overwrites
  for each row execute function haven_private.guard_channel_member_overwrites();

-- Messages: community comes from the channel, never from the writer ----------------------------
create function haven_private.guard_messages()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_community_id uuid;
begin
  if tg_op = 'INSERT' then
    select ch.community_id into v_community_id from public.channels ch where ch.id = new.channel_id;
    if v_community_id is null then
      raise exception 'channel not found' using errcode = '23503';
    end if;
    new.community_id := v_community_id;
    -- Ordering and paging depend on server time; nobody backdates a message.
    new.created_at := clock_timestamp();
    new.edited_at := null;
    new.deleted_at := null;
    if new.reply_to is not null and not exists (
      select 1 from public.messages r where r.id = new.reply_to and r.channel_id = new.channel_id
    ) then
      raise exception 'reply target is not in this channel' using errcode = '23514';
    end if;
    return new;
  end if;

  -- UPDATE. author_id and reply_to may only become null (ON DELETE SET NULL of their targets).
  if new.id <> old.id
     or new.channel_id <> old.channel_id
     or new.community_id <> old.community_id
     or new.created_at <> old.created_at
     or (new.author_id is distinct from old.author_id and new.author_id is not null)
     or (new.reply_to is distinct from old.reply_to and new.reply_to is not null) then
    raise exception 'message identity is immutable' using errcode = '42501';
  end if;
  if old.deleted_at is not null and new.deleted_at is null then
    raise exception 'deleted messages stay deleted' using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger messages_guard before insert or update on public.messages
  for each row execute function haven_private.guard_messages();

-- Invites: consumption and revocation only move forward ----------------------------------------
create function haven_private.guard_invites()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.id <> old.id or new.community_id <> old.community_id or new.code <> old.code
     or new.created_at <> old.created_at
     or new.expires_at is distinct from old.expires_at
     or new.max_uses is distinct from old.max_uses then
    raise exception 'invite terms are immutable' using errcode = '42501';
  end if;
  if new.uses < old.uses then
    raise exception 'invite uses cannot decrease' using errcode = '42501';
  end if;
  if old.revoked_at is not null and new.revoked_at is distinct from old.revoked_at then
    raise exception 'a revoked invite stays revoked' using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger invites_guard before update on public.invites
  for each row execute function haven_private.guard_invites();

-- Bans: the record is history; only its revocation may be written, once ------------------------
create function haven_private.guard_community_bans()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.id <> old.id or new.community_id <> old.community_id or new.user_id <> old.user_id
     or new.created_at <> old.created_at or new.reason is distinct from old.reason
     or (new.banned_by is distinct from old.banned_by and new.banned_by is not null) then
    raise exception 'ban records are immutable' using errcode = '42501';
  end if;
  if old.revoked_at is not null and new.revoked_at is distinct from old.revoked_at then
    raise exception 'a revoked ban stays revoked' using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger community_bans_guard before update on public.community_bans
  for each row execute function haven_private.guard_community_bans();

revoke all on all functions in schema haven_private from public, anon, authenticated, service_role;
grant execute on function haven_private.trim_text(text) to public;
