-- Community lifecycle and one's own membership: the only code that creates communities, moves
-- ownership or removes a member at their own request.
--
-- Why RPCs: membership rows carry authority (is_owner, role grants). Clients have no INSERT,
-- UPDATE or DELETE on them at all; these SECURITY DEFINER functions are the whole write path,
-- and each one checks the caller from auth.uid(), never from an argument.

create function public.create_community(p_name text, p_description text default null)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_name text := haven_private.require_text(p_name, 'name', 1, 100);
  v_description text := haven_private.optional_text(p_description, 'description', 1000);
  v_community_id uuid;
  v_member_id uuid;
  v_everyone uuid;
  v_moderator uuid;
  v_admin uuid;
  v_owner uuid;
  v_base text[] := array['view_channels', 'send_messages', 'connect_voice', 'speak'];
begin
  perform haven_private.rate_limit_consume(v_uid, 'create_community');

  insert into public.communities (name, description, created_by)
  values (v_name, v_description, v_uid)
  returning id into v_community_id;

  insert into public.community_settings (community_id) values (v_community_id);

  insert into public.roles (community_id, name, position, is_default, is_system)
  values (v_community_id, '@everyone', 0, true, true) returning id into v_everyone;
  insert into public.roles (community_id, name, position, is_system)
  values (v_community_id, 'Moderator', 80, true) returning id into v_moderator;
  insert into public.roles (community_id, name, position, is_system)
  values (v_community_id, 'Admin', 90, true) returning id into v_admin;
  insert into public.roles (community_id, name, position, is_system)
  values (v_community_id, 'Owner', 100, true) returning id into v_owner;

  insert into public.role_permissions (role_id, permission_key)
  select v_everyone, k from unnest(v_base) k;
  insert into public.role_permissions (role_id, permission_key)
  select v_moderator, k
  from unnest(v_base || array['manage_messages', 'mute_members', 'move_members']) k;
  insert into public.role_permissions (role_id, permission_key)
  select v_admin, p.key from public.permissions p where p.key not in ('manage_bans', 'view_ban_hidden');
  insert into public.role_permissions (role_id, permission_key)
  select v_owner, p.key from public.permissions p;

  insert into public.community_members (community_id, user_id, is_owner)
  values (v_community_id, v_uid, true) returning id into v_member_id;
  insert into public.member_roles (member_id, role_id) values (v_member_id, v_everyone), (v_member_id, v_owner);

  insert into public.channels (community_id, name, kind, position, created_by) values
    (v_community_id, 'general', 'text', 0, v_uid),
    (v_community_id, 'Lounge', 'voice', 1, v_uid);

  return v_community_id;
end
$$;

-- Null arguments leave a field unchanged; a blank description clears it.
create function public.update_community(
  p_community_id uuid,
  p_name text default null,
  p_description text default null
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_name text;
  v_description text;
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_server');
  if p_name is not null then
    v_name := haven_private.require_text(p_name, 'name', 1, 100);
  end if;
  if p_description is not null then
    v_description := haven_private.optional_text(p_description, 'description', 1000);
  end if;

  -- Skip no-op updates so no community.updated event is emitted for them.
  update public.communities c
  set name = coalesce(v_name, c.name),
      description = case when p_description is null then c.description else v_description end
  where c.id = p_community_id
    and (coalesce(v_name, c.name) is distinct from c.name
         or (p_description is not null and v_description is distinct from c.description));
end
$$;

create function public.delete_community(p_community_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
begin
  if not exists (
    select 1 from public.community_members m
    where m.community_id = p_community_id and m.user_id = v_uid and m.is_owner
  ) then
    raise exception 'not permitted' using errcode = '42501', hint = 'owner_only';
  end if;
  delete from public.communities c where c.id = p_community_id;
end
$$;

create function public.update_community_settings(p_community_id uuid, p_allow_invites boolean)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_server');
  if p_allow_invites is null then
    raise exception 'allow_invites must not be null' using errcode = '22023';
  end if;
  update public.community_settings s
  set allow_invites = p_allow_invites
  where s.community_id = p_community_id and s.allow_invites is distinct from p_allow_invites;
end
$$;

create function public.leave_community(p_community_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_member public.community_members;
begin
  perform haven_private.lock_membership(p_community_id, v_uid);
  select m.* into v_member
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = v_uid
  for update;
  if not found then
    raise exception 'not permitted' using errcode = '42501', hint = 'not_a_member';
  end if;
  if v_member.is_owner then
    raise exception 'the owner cannot leave; transfer ownership first'
      using errcode = '22023', hint = 'owner_cannot_leave';
  end if;
  delete from public.community_members m where m.id = v_member.id;
end
$$;

create function public.transfer_ownership(p_community_id uuid, p_new_owner_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_old public.community_members;
  v_new public.community_members;
  v_owner_role uuid;
begin
  -- Lock the owner row first so two concurrent transfers serialise instead of racing.
  select m.* into v_old
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = v_uid and m.is_owner
  for update;
  if not found then
    raise exception 'not permitted' using errcode = '42501', hint = 'owner_only';
  end if;
  if p_new_owner_id is null or p_new_owner_id = v_uid then
    raise exception 'the new owner must be another member' using errcode = '22023';
  end if;

  select m.* into v_new
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = p_new_owner_id
  for update;
  if not found then
    raise exception 'the new owner is not a member' using errcode = 'P0002', hint = 'not_a_member';
  end if;

  select r.id into v_owner_role
  from public.roles r
  where r.community_id = p_community_id and r.is_system and r.name = 'Owner';

  -- Order matters: the partial unique index allows one owner at any instant.
  update public.community_members m set is_owner = false where m.id = v_old.id;
  update public.community_members m set is_owner = true where m.id = v_new.id;

  if v_owner_role is not null then
    delete from public.member_roles mr where mr.member_id = v_old.id and mr.role_id = v_owner_role;
    insert into public.member_roles (member_id, role_id) values (v_new.id, v_owner_role)
    on conflict do nothing;
  end if;
end
$$;

create function public.set_nickname(p_community_id uuid, p_nickname text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_nickname text := haven_private.optional_text(p_nickname, 'nickname', 32);
begin
  if v_nickname ~ '[[:cntrl:]]' then
    raise exception 'nickname contains control characters' using errcode = '22023';
  end if;
  update public.community_members m
  set nickname = v_nickname
  where m.community_id = p_community_id and m.user_id = v_uid;
  if not found then
    raise exception 'not permitted' using errcode = '42501', hint = 'not_a_member';
  end if;
end
$$;

revoke all on function
  public.create_community(text, text),
  public.update_community(uuid, text, text),
  public.delete_community(uuid),
  public.update_community_settings(uuid, boolean),
  public.leave_community(uuid),
  public.transfer_ownership(uuid, uuid),
  public.set_nickname(uuid, text)
from public, anon, authenticated, service_role;

grant execute on function
  public.create_community(text, text),
  public.update_community(uuid, text, text),
  public.delete_community(uuid),
  public.update_community_settings(uuid, boolean),
  public.leave_community(uuid),
  public.transfer_ownership(uuid, uuid),
  public.set_nickname(uuid, text)
to authenticated;
