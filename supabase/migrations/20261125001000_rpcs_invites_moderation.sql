-- Invites (the only way in), kicks and bans (the ways out that others decide).
--
-- Why redeem_invite returns failures instead of raising: a raised error rolls back the whole
-- transaction, including the failed-attempt record that makes brute-forcing codes impossible.
-- Returning a status commits that record and nothing else. Invite validity is never stored as a
-- flag: expired / used up / revoked are computed under a row lock on every redemption, so there
-- is no deactivation that a rollback could undo, and concurrent redemptions cannot overshoot
-- max_uses.

-- 10 chars from a 32-symbol alphabet (no l/o, no 0/1): 50 bits, uniform because 256 is a multiple
-- of 32. Lower case, so redemption can be case-insensitive by lower-casing the input.
create function haven_private.new_invite_code()
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_alphabet constant text := 'abcdefghijkmnpqrstuvwxyz23456789';
  v_bytes bytea;
  v_code text;
begin
  loop
    v_bytes := extensions.gen_random_bytes(10);
    v_code := '';
    for i in 0..9 loop
      v_code := v_code || substr(v_alphabet, (get_byte(v_bytes, i) % 32) + 1, 1);
    end loop;
    exit when not exists (select 1 from public.invites i where i.code = v_code);
  end loop;
  return v_code;
end
$$;

create function public.create_invite(
  p_community_id uuid,
  p_max_uses integer default null,
  p_expires_in_hours integer default 24
)
returns public.invites
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_invite public.invites;
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_invites');
  if not exists (
    select 1 from public.community_settings s where s.community_id = p_community_id and s.allow_invites
  ) then
    raise exception 'invites are disabled in this community' using errcode = '22023', hint = 'invites_disabled';
  end if;
  if p_max_uses is not null and (p_max_uses < 1 or p_max_uses > 100000) then
    raise exception 'max_uses must be between 1 and 100000 (or null for unlimited)' using errcode = '22023';
  end if;
  if p_expires_in_hours is not null and (p_expires_in_hours < 1 or p_expires_in_hours > 8760) then
    raise exception 'expires_in_hours must be between 1 and 8760 (or null for never)' using errcode = '22023';
  end if;

  perform haven_private.rate_limit_consume(v_uid, 'create_invite');

  insert into public.invites (community_id, code, created_by, max_uses, expires_at)
  values (
    p_community_id,
    haven_private.new_invite_code(),
    v_uid,
    p_max_uses,
    case when p_expires_in_hours is not null then now() + make_interval(hours => p_expires_in_hours) end
  )
  returning * into v_invite;
  return v_invite;
end
$$;

create function public.revoke_invite(p_invite_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_community_id uuid;
begin
  select i.community_id into v_community_id from public.invites i where i.id = p_invite_id;
  if v_community_id is null or not haven_private.has_permission(v_uid, v_community_id, 'manage_invites') then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  update public.invites i set revoked_at = now() where i.id = p_invite_id and i.revoked_at is null;
end
$$;

create function public.redeem_invite(p_code text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_code text := lower(haven_private.trim_text(p_code));
  v_invite public.invites;
  v_status text;
  v_member_id uuid;
  v_everyone uuid;
begin
  -- Checked before looking at the code at all: once over the limit, even a valid code gets 429,
  -- so guessing cannot continue by other means.
  perform haven_private.rate_limit_check(v_uid, 'redeem_invite_failed');

  if v_code is not null and v_code ~ '^[a-z0-9]{10}$' then
    select i.* into v_invite from public.invites i where i.code = v_code for update;
  end if;

  if v_invite.id is not null then
    perform haven_private.lock_membership(v_invite.community_id, v_uid);
  end if;

  if v_invite.id is null then
    v_status := 'invalid';
  elsif exists (
    select 1 from public.community_members m where m.community_id = v_invite.community_id and m.user_id = v_uid
  ) then
    return jsonb_build_object('status', 'already_member', 'community_id', v_invite.community_id, 'joined', false);
  elsif v_invite.revoked_at is not null then
    v_status := 'revoked';
  elsif v_invite.expires_at is not null and v_invite.expires_at <= now() then
    v_status := 'expired';
  elsif v_invite.max_uses is not null and v_invite.uses >= v_invite.max_uses then
    v_status := 'used_up';
  elsif not exists (
    select 1 from public.community_settings s where s.community_id = v_invite.community_id and s.allow_invites
  ) then
    v_status := 'invites_disabled';
  elsif exists (
    select 1 from public.community_bans b
    where b.community_id = v_invite.community_id and b.user_id = v_uid and b.revoked_at is null
  ) then
    v_status := 'banned';
  end if;

  if v_status is not null then
    perform haven_private.rate_limit_record(v_uid, 'redeem_invite_failed');
    return jsonb_build_object('status', v_status, 'community_id', null, 'joined', false);
  end if;

  select r.id into v_everyone from public.roles r where r.community_id = v_invite.community_id and r.is_default;

  insert into public.community_members (community_id, user_id)
  values (v_invite.community_id, v_uid)
  returning id into v_member_id;
  insert into public.member_roles (member_id, role_id) values (v_member_id, v_everyone);
  update public.invites i set uses = i.uses + 1 where i.id = v_invite.id;

  return jsonb_build_object('status', 'joined', 'community_id', v_invite.community_id, 'joined', true);
end
$$;

-- Shared by kick and ban: the caller may act on this user in this community.
create function haven_private.check_can_moderate(p_uid uuid, p_community_id uuid, p_user_id uuid)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_target public.community_members;
  v_rank integer;
begin
  select m.* into v_target
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = p_user_id;
  if v_target.id is null then
    return;
  end if;
  if v_target.is_owner or p_user_id = p_uid then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;
  v_rank := haven_private.rank(p_uid, p_community_id);
  if v_rank <> 2147483647 and haven_private.rank(p_user_id, p_community_id) >= v_rank then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;
end
$$;

create function public.kick_member(p_community_id uuid, p_user_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_member_id uuid;
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_members');
  perform haven_private.lock_membership(p_community_id, p_user_id);
  select m.id into v_member_id
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = p_user_id
  for update;
  if v_member_id is null then
    raise exception 'user is not a member' using errcode = 'P0002', hint = 'not_a_member';
  end if;
  perform haven_private.check_can_moderate(v_uid, p_community_id, p_user_id);

  -- Tells the membership trigger which event this removal is (member.kicked, not member.left).
  perform set_config('haven.member_removal', 'kicked', true);
  delete from public.community_members m where m.id = v_member_id;
  perform set_config('haven.member_removal', '', true);
end
$$;

-- Bans need not target a current member (pre-emptive bans of someone seen elsewhere).
create function public.ban_member(p_community_id uuid, p_user_id uuid, p_reason text default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_reason text;
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_bans');
  v_reason := haven_private.optional_text(p_reason, 'reason', 512);
  if p_user_id is null or not exists (select 1 from auth.users u where u.id = p_user_id) then
    raise exception 'user not found' using errcode = 'P0002', hint = 'user_not_found';
  end if;
  perform haven_private.lock_membership(p_community_id, p_user_id);
  perform haven_private.check_can_moderate(v_uid, p_community_id, p_user_id);
  if p_user_id = v_uid then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;
  if exists (
    select 1 from public.community_bans b
    where b.community_id = p_community_id and b.user_id = p_user_id and b.revoked_at is null
  ) then
    raise exception 'user is already banned' using errcode = '23505', hint = 'already_banned';
  end if;

  insert into public.community_bans (community_id, user_id, banned_by, reason)
  values (p_community_id, p_user_id, v_uid, v_reason);

  perform set_config('haven.member_removal', 'banned', true);
  delete from public.community_members m where m.community_id = p_community_id and m.user_id = p_user_id;
  perform set_config('haven.member_removal', '', true);

  update public.messages msg
  set is_hidden = true
  where msg.community_id = p_community_id and msg.author_id = p_user_id and not msg.is_hidden;
end
$$;

-- Lifts the ban; the record stays (revoked_at/by) and hidden messages stay hidden.
create function public.unban_member(p_community_id uuid, p_user_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_bans');
  update public.community_bans b
  set revoked_at = now(), revoked_by = v_uid
  where b.community_id = p_community_id and b.user_id = p_user_id and b.revoked_at is null;
  if not found then
    raise exception 'user is not banned' using errcode = 'P0002', hint = 'not_banned';
  end if;
end
$$;

create function public.list_bans(p_community_id uuid)
returns setof public.community_bans
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
begin
  perform haven_private.require_permission(v_uid, p_community_id, 'manage_bans');
  return query
  select b.* from public.community_bans b
  where b.community_id = p_community_id
  order by b.created_at desc, b.id;
end
$$;

revoke all on function
  haven_private.new_invite_code(),
  haven_private.check_can_moderate(uuid, uuid, uuid),
  public.create_invite(uuid, integer, integer),
  public.revoke_invite(uuid),
  public.redeem_invite(text),
  public.kick_member(uuid, uuid),
  public.ban_member(uuid, uuid, text),
  public.unban_member(uuid, uuid),
  public.list_bans(uuid)
from public, anon, authenticated, service_role;

grant execute on function
  public.create_invite(uuid, integer, integer),
  public.revoke_invite(uuid),
  public.redeem_invite(text),
  public.kick_member(uuid, uuid),
  public.ban_member(uuid, uuid, text),
  public.unban_member(uuid, uuid),
  public.list_bans(uuid)
to authenticated;
