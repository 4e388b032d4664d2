-- Roles, their permissions and who holds them.
--
-- Why these rules: a member may act only on roles and members strictly below their own rank,
-- and a non-owner may grant only permissions they hold themselves, both when putting keys on a
-- role and when handing someone a role that carries them (the reference's "proxy escalation"
-- hole). Only the owner may change the seeded system roles, whose names never change. The owner
-- bypasses the hierarchy (rank = max int). Assigning a system role is acting on a member, not
-- changing the role, so it follows the hierarchy (an Admin may make someone a Moderator).

-- Resolves a role for an RPC caller: unknown roles and roles of other communities look the same
-- (42501) to someone who is not allowed to manage roles there.
create function haven_private.role_for_manager(p_uid uuid, p_role_id uuid)
returns public.roles
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_role public.roles;
begin
  select r.* into v_role from public.roles r where r.id = p_role_id;
  if not found or not haven_private.has_permission(p_uid, v_role.community_id, 'manage_roles') then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  return v_role;
end
$$;

-- '#RRGGBB' (any case) -> lower case; null or blank -> null; anything else 22023.
create function haven_private.normalize_color(p_color text)
returns text
language plpgsql
immutable
security definer
set search_path = ''
as $$
declare
  v text := nullif(lower(haven_private.trim_text(p_color)), '');
begin
  if v is null then
    return null;
  end if;
  if v !~ '^#[0-9a-f]{6}$' then
    raise exception 'color must be #RRGGBB' using errcode = '22023';
  end if;
  return v;
end
$$;

create function public.create_role(
  p_community_id uuid,
  p_name text,
  p_color text default null,
  p_position integer default null,
  p_permissions text[] default '{}'
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_rank integer;
  v_is_owner boolean;
  v_name text;
  v_color text;
  v_position integer;
  v_keys text[];
  v_missing text;
  v_role_id uuid;
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_roles');
  v_rank := haven_private.rank(v_uid, p_community_id);
  v_is_owner := v_rank = 2147483647;

  v_name := haven_private.require_text(p_name, 'name', 1, 50);
  v_color := haven_private.normalize_color(p_color);
  v_keys := haven_private.normalize_permission_keys(coalesce(p_permissions, '{}'::text[]));

  -- Default: the lowest slot above @everyone, which is below any caller who may manage roles.
  v_position := coalesce(p_position, 1);
  if v_position < 1 or v_position > 100 then
    raise exception 'position must be between 1 and 100' using errcode = '22023';
  end if;
  if not v_is_owner and v_position >= v_rank then
    raise exception 'not permitted: position must be below your own rank'
      using errcode = '42501', hint = 'hierarchy';
  end if;

  if not v_is_owner then
    select k into v_missing
    from unnest(v_keys) k
    where k <> all (haven_private.permission_keys(v_uid, p_community_id))
    limit 1;
    if found then
      raise exception 'not permitted: you do not hold %', v_missing
        using errcode = '42501', hint = 'permission_not_held';
    end if;
  end if;

  if exists (select 1 from public.roles r where r.community_id = p_community_id and lower(r.name) = lower(v_name)) then
    raise exception 'a role named % already exists', v_name using errcode = '23505';
  end if;

  insert into public.roles (community_id, name, color, position)
  values (p_community_id, v_name, v_color, v_position)
  returning id into v_role_id;

  insert into public.role_permissions (role_id, permission_key)
  select v_role_id, k from unnest(v_keys) k;

  return v_role_id;
end
$$;

-- Null arguments leave a field unchanged; p_color = '' clears the colour.
create function public.update_role(
  p_role_id uuid,
  p_name text default null,
  p_color text default null,
  p_position integer default null
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_role public.roles := haven_private.role_for_manager(v_uid, p_role_id);
  v_rank integer := haven_private.rank(v_uid, v_role.community_id);
  v_is_owner boolean := v_rank = 2147483647;
  v_name text := v_role.name;
  v_color text := v_role.color;
  v_position integer := v_role.position;
begin
  if v_role.is_system and not v_is_owner then
    raise exception 'not permitted: system roles can be changed only by the owner'
      using errcode = '42501', hint = 'system_role';
  end if;
  if not v_is_owner and v_role.position >= v_rank then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;

  if p_name is not null then
    v_name := haven_private.require_text(p_name, 'name', 1, 50);
    if v_role.is_system and v_name <> v_role.name then
      raise exception 'system role names cannot change' using errcode = '22023', hint = 'system_role_name';
    end if;
    if exists (
      select 1 from public.roles r
      where r.community_id = v_role.community_id and lower(r.name) = lower(v_name) and r.id <> v_role.id
    ) then
      raise exception 'a role named % already exists', v_name using errcode = '23505';
    end if;
  end if;

  if p_color is not null then
    v_color := haven_private.normalize_color(p_color);
  end if;

  if p_position is not null and p_position <> v_role.position then
    if v_role.is_default then
      raise exception '@everyone stays at position 0' using errcode = '22023', hint = 'everyone_role';
    end if;
    if p_position < 1 or p_position > 100 then
      raise exception 'position must be between 1 and 100' using errcode = '22023';
    end if;
    if not v_is_owner and p_position >= v_rank then
      raise exception 'not permitted: position must be below your own rank'
        using errcode = '42501', hint = 'hierarchy';
    end if;
    v_position := p_position;
  end if;

  update public.roles r
  set name = v_name, color = v_color, position = v_position
  where r.id = v_role.id
    and (r.name, r.color, r.position) is distinct from (v_name, v_color, v_position);
end
$$;

create function public.delete_role(p_role_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_role public.roles := haven_private.role_for_manager(v_uid, p_role_id);
  v_rank integer := haven_private.rank(v_uid, v_role.community_id);
begin
  if v_role.is_system then
    raise exception 'system roles cannot be deleted' using errcode = '22023', hint = 'system_role';
  end if;
  if v_rank <> 2147483647 and v_role.position >= v_rank then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;
  delete from public.roles r where r.id = v_role.id;
end
$$;

create function public.set_role_permissions(p_role_id uuid, p_permissions text[])
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_role public.roles := haven_private.role_for_manager(v_uid, p_role_id);
  v_rank integer := haven_private.rank(v_uid, v_role.community_id);
  v_is_owner boolean := v_rank = 2147483647;
  v_keys text[];
  v_missing text;
begin
  if v_role.is_system and not v_is_owner then
    raise exception 'not permitted: system roles can be changed only by the owner'
      using errcode = '42501', hint = 'system_role';
  end if;
  if not v_is_owner and v_role.position >= v_rank then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;

  v_keys := haven_private.normalize_permission_keys(p_permissions);

  -- Only keys being added matter: a manager may strip a key they lack from a lower role, but
  -- never hand one out.
  if not v_is_owner then
    select k into v_missing
    from unnest(v_keys) k
    where not exists (select 1 from public.role_permissions rp where rp.role_id = v_role.id and rp.permission_key = k)
      and k <> all (haven_private.permission_keys(v_uid, v_role.community_id))
    limit 1;
    if found then
      raise exception 'not permitted: you do not hold %', v_missing
        using errcode = '42501', hint = 'permission_not_held';
    end if;
  end if;

  delete from public.role_permissions rp
  where rp.role_id = v_role.id and rp.permission_key <> all (v_keys);
  insert into public.role_permissions (role_id, permission_key)
  select v_role.id, k from unnest(v_keys) k
  on conflict do nothing;
end
$$;

-- Shared checks of assign_role/remove_role; returns the target membership id.
create function haven_private.role_grant_target(
  p_uid uuid,
  p_community_id uuid,
  p_user_id uuid,
  p_role_id uuid,
  out member_id uuid,
  out target_role public.roles
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_rank integer;
  v_target_rank integer;
begin
  perform haven_private.require_permission(p_uid, p_community_id, 'manage_roles');

  select r.* into target_role from public.roles r where r.id = p_role_id and r.community_id = p_community_id;
  if not found then
    raise exception 'role not found in this community' using errcode = 'P0002', hint = 'role_not_found';
  end if;
  if target_role.is_default then
    raise exception 'every member holds @everyone' using errcode = '22023', hint = 'everyone_role';
  end if;

  select m.id into member_id
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = p_user_id;
  if member_id is null then
    raise exception 'user is not a member' using errcode = 'P0002', hint = 'not_a_member';
  end if;

  v_rank := haven_private.rank(p_uid, p_community_id);
  if v_rank <> 2147483647 then
    v_target_rank := haven_private.rank(p_user_id, p_community_id);
    if target_role.position >= v_rank or v_target_rank >= v_rank then
      raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
    end if;
  end if;
end
$$;

create function public.assign_role(p_community_id uuid, p_user_id uuid, p_role_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_target record;
  v_missing text;
begin
  select t.member_id, t.target_role into v_target
  from haven_private.role_grant_target(v_uid, p_community_id, p_user_id, p_role_id) t;

  -- Proxy escalation: handing someone a role is granting its keys, so a non-owner must hold
  -- every one of them (a low role the owner loaded with manage_bans stays the owner's to give).
  if haven_private.rank(v_uid, p_community_id) <> 2147483647 then
    select rp.permission_key into v_missing
    from public.role_permissions rp
    where rp.role_id = (v_target.target_role).id
      and rp.permission_key <> all (haven_private.permission_keys(v_uid, p_community_id))
    order by rp.permission_key
    limit 1;
    if found then
      raise exception 'not permitted: the role carries %, which you do not hold', v_missing
        using errcode = '42501', hint = 'permission_not_held';
    end if;
  end if;

  insert into public.member_roles (member_id, role_id) values (v_target.member_id, (v_target.target_role).id)
  on conflict do nothing;
end
$$;

create function public.remove_role(p_community_id uuid, p_user_id uuid, p_role_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_target record;
begin
  select t.member_id, t.target_role into v_target
  from haven_private.role_grant_target(v_uid, p_community_id, p_user_id, p_role_id) t;
  -- The owner always carries the Owner role; it moves only with transfer_ownership.
  if (v_target.target_role).is_system and (v_target.target_role).name = 'Owner' and exists (
    select 1 from public.community_members m where m.id = v_target.member_id and m.is_owner
  ) then
    raise exception 'the owner keeps the Owner role; transfer ownership instead'
      using errcode = '22023', hint = 'owner_role';
  end if;
  delete from public.member_roles mr
  where mr.member_id = v_target.member_id and mr.role_id = (v_target.target_role).id;
end
$$;

revoke all on function
  haven_private.role_for_manager(uuid, uuid),
  haven_private.normalize_color(text),
  haven_private.role_grant_target(uuid, uuid, uuid, uuid),
  public.create_role(uuid, text, text, integer, text[]),
  public.update_role(uuid, text, text, integer),
  public.delete_role(uuid),
  public.set_role_permissions(uuid, text[]),
  public.assign_role(uuid, uuid, uuid),
  public.remove_role(uuid, uuid, uuid)
from public, anon, authenticated, service_role;

grant execute on function
  public.create_role(uuid, text, text, integer, text[]),
  public.update_role(uuid, text, text, integer),
  public.delete_role(uuid),
  public.set_role_permissions(uuid, text[]),
  public.assign_role(uuid, uuid, uuid),
  public.remove_role(uuid, uuid, uuid)
to authenticated;
