-- Permission evaluation: the single implementation every RPC, RLS policy and service call uses.
--
-- Why one implementation: the reference product evaluated permissions in several places that
-- disagreed. Here haven_private.* computes for any (user, community/channel); the public
-- functions are thin wrappers fixed to auth.uid() (for clients and RLS) or taking a user id
-- (the *_as variants, service role only, for event fan-out and voice revocation).
--
-- Channel flag order (data-model.md): not a member -> false; owner -> true; the member's own
-- overwrite; overwrites of the member's non-default roles (deny beats allow); the @everyone
-- overwrite; the base permission. Each tier is tri-state, so the whole rule is a coalesce() of
-- the tiers. Then the dependencies: send and connect need view, speak needs connect.

-- Keys a member holds in a community; null for non-members, every key for the owner.
create function haven_private.permission_keys(p_user_id uuid, p_community_id uuid)
returns text[]
language sql
stable
security definer
set search_path = ''
as $$
  select case
    when m.is_owner then (select array_agg(p.key order by p.key) from public.permissions p)
    else coalesce((
      select array_agg(distinct rp.permission_key order by rp.permission_key)
      from public.roles r
      join public.role_permissions rp on rp.role_id = r.id
      where r.community_id = m.community_id
        and (r.is_default
             or exists (select 1 from public.member_roles mr where mr.member_id = m.id and mr.role_id = r.id))
    ), '{}'::text[])
  end
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = p_user_id
$$;

create function haven_private.assert_permission_key(p_key text)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_key is null or not exists (select 1 from public.permissions p where p.key = p_key) then
    raise exception 'unknown permission key: %', coalesce(p_key, 'null') using errcode = '22023';
  end if;
end
$$;

create function haven_private.has_permission(p_user_id uuid, p_community_id uuid, p_key text)
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  -- A typo in a key must fail loudly, not read as "nobody has it" (or "owner has it").
  perform haven_private.assert_permission_key(p_key);
  return coalesce((
    select m.is_owner or exists (
      select 1
      from public.roles r
      join public.role_permissions rp on rp.role_id = r.id
      where r.community_id = m.community_id
        and rp.permission_key = p_key
        and (r.is_default
             or exists (select 1 from public.member_roles mr where mr.member_id = m.id and mr.role_id = r.id))
    )
    from public.community_members m
    where m.community_id = p_community_id and m.user_id = p_user_id
  ), false);
end
$$;

-- Rank: owner above everything, else the highest position among the member's roles (@everyone
-- is 0). Null for non-members.
create function haven_private.rank(p_user_id uuid, p_community_id uuid)
returns integer
language sql
stable
security definer
set search_path = ''
as $$
  select case
    when m.is_owner then 2147483647
    else coalesce((
      select max(r.position)
      from public.member_roles mr
      join public.roles r on r.id = mr.role_id
      where mr.member_id = m.id
    ), 0)
  end
  from public.community_members m
  where m.community_id = p_community_id and m.user_id = p_user_id
$$;

create function haven_private.is_member(p_user_id uuid, p_community_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1 from public.community_members m
    where m.community_id = p_community_id and m.user_id = p_user_id
  )
$$;

-- Everything a user may do in one channel, computed once. community_id/kind are null when the
-- channel does not exist; member_id is null for non-members. Callers must not reveal either to
-- a user for whom can_view is false.
create function haven_private.channel_access(
  p_user_id uuid,
  p_channel_id uuid,
  out community_id uuid,
  out kind text,
  out member_id uuid,
  out is_owner boolean,
  out can_view boolean,
  out can_send boolean,
  out can_connect boolean,
  out can_speak boolean
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_community_id uuid;
  v_kind text;
  v_member_id uuid;
  v_is_owner boolean;
  v_perms text[];
  v_member public.channel_member_overwrites;
  v_everyone public.channel_role_overwrites;
  v_roles record;
begin
  is_owner := false;
  can_view := false;
  can_send := false;
  can_connect := false;
  can_speak := false;

  select ch.community_id, ch.kind into v_community_id, v_kind
  from public.channels ch
  where ch.id = p_channel_id;
  community_id := v_community_id;
  kind := v_kind;
  if v_community_id is null or p_user_id is null then
    return;
  end if;

  select m.id, m.is_owner into v_member_id, v_is_owner
  from public.community_members m
  where m.community_id = v_community_id and m.user_id = p_user_id;
  member_id := v_member_id;
  if v_member_id is null then
    return;
  end if;

  if v_is_owner then
    is_owner := true;
    can_view := true;
    can_send := true;
    can_connect := true;
    can_speak := true;
    return;
  end if;

  v_perms := haven_private.permission_keys(p_user_id, v_community_id);

  select o.* into v_member
  from public.channel_member_overwrites o
  where o.channel_id = p_channel_id and o.member_id = v_member_id;

  -- bool_and over the non-null flags of the member's role overwrites: any deny -> false,
  -- else any allow -> true, none -> null (inherit). Role positions deliberately play no part.
  select bool_and(o.can_view) as can_view,
         bool_and(o.can_send) as can_send,
         bool_and(o.can_connect) as can_connect,
         bool_and(o.can_speak) as can_speak
  into v_roles
  from public.channel_role_overwrites o
  join public.roles r on r.id = o.role_id and not r.is_default
  join public.member_roles mr on mr.role_id = o.role_id and mr.member_id = v_member_id
  where o.channel_id = p_channel_id;

  select o.* into v_everyone
  from public.channel_role_overwrites o
  join public.roles r on r.id = o.role_id and r.is_default
  where o.channel_id = p_channel_id;

  can_view := coalesce(v_member.can_view, v_roles.can_view, v_everyone.can_view,
                       'view_channels' = any (v_perms));
  can_send := can_view and coalesce(v_member.can_send, v_roles.can_send, v_everyone.can_send,
                                    'send_messages' = any (v_perms));
  can_connect := can_view and coalesce(v_member.can_connect, v_roles.can_connect, v_everyone.can_connect,
                                       'connect_voice' = any (v_perms));
  can_speak := can_connect and coalesce(v_member.can_speak, v_roles.can_speak, v_everyone.can_speak,
                                        'speak' = any (v_perms));
end
$$;

-- Shared guards used by the RPCs ---------------------------------------------------------------

-- Serialises everything that changes or relies on one user's standing in one community (join,
-- leave, kick, ban, sending). Without it a ban racing a redeem_invite could leave a banned member,
-- and a message sent during a ban could escape being hidden.
create function haven_private.lock_membership(p_community_id uuid, p_user_id uuid)
returns void
language sql
security definer
set search_path = ''
as $$
  select pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('haven.membership:' || p_community_id::text || ':' || p_user_id::text, 0)
  )
$$;

create function haven_private.require_uid()
returns uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_uid uuid := auth.uid();
begin
  if v_uid is null then
    raise exception 'not authenticated' using errcode = '42501', hint = 'not_authenticated';
  end if;
  return v_uid;
end
$$;

create function haven_private.require_permission(p_user_id uuid, p_community_id uuid, p_key text)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if not haven_private.has_permission(p_user_id, p_community_id, p_key) then
    raise exception 'not permitted' using errcode = '42501', hint = 'missing_permission:' || p_key;
  end if;
end
$$;

-- Trims, then enforces [p_min, p_max] characters: 22023 when empty/short, 22001 when too long.
create function haven_private.require_text(p_value text, p_field text, p_min integer, p_max integer)
returns text
language plpgsql
immutable
security definer
set search_path = ''
as $$
declare
  v text := haven_private.trim_text(p_value);
begin
  if v is null or char_length(v) < p_min then
    raise exception '% must be at least % characters', p_field, p_min using errcode = '22023';
  end if;
  if char_length(v) > p_max then
    raise exception '% must be at most % characters', p_field, p_max using errcode = '22001';
  end if;
  return v;
end
$$;

-- Optional text: null and blank mean "none".
create function haven_private.optional_text(p_value text, p_field text, p_max integer)
returns text
language plpgsql
immutable
security definer
set search_path = ''
as $$
declare
  v text := nullif(haven_private.trim_text(p_value), '');
begin
  if char_length(v) > p_max then
    raise exception '% must be at most % characters', p_field, p_max using errcode = '22001';
  end if;
  return v;
end
$$;

-- Distinct, validated permission keys from an RPC argument.
create function haven_private.normalize_permission_keys(p_keys text[])
returns text[]
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_unknown text;
begin
  if p_keys is null then
    raise exception 'permissions must be an array (use {} for none)' using errcode = '22023';
  end if;
  select k into v_unknown
  from unnest(p_keys) k
  where k is null or not exists (select 1 from public.permissions p where p.key = k)
  limit 1;
  if found then
    raise exception 'unknown permission key: %', coalesce(v_unknown, 'null') using errcode = '22023';
  end if;
  return coalesce((select array_agg(distinct k order by k) from unnest(p_keys) k), '{}'::text[]);
end
$$;

-- Public: the caller's own permissions (clients and RLS policies) -----------------------------
create function public.user_has_permission(p_community_id uuid, p_key text)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select haven_private.has_permission(auth.uid(), p_community_id, p_key)
$$;

create function public.can_view_channel(p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_view from haven_private.channel_access(auth.uid(), p_channel_id) a
$$;

create function public.can_send_in_channel(p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_send from haven_private.channel_access(auth.uid(), p_channel_id) a
$$;

create function public.can_connect_voice(p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_connect from haven_private.channel_access(auth.uid(), p_channel_id) a
$$;

create function public.can_speak_in_channel(p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_speak from haven_private.channel_access(auth.uid(), p_channel_id) a
$$;

-- Null unless both the caller and the target are members: a non-member learns nothing.
create function public.member_rank(p_community_id uuid, p_user_id uuid)
returns integer
language sql
stable
security definer
set search_path = ''
as $$
  select case
    when haven_private.is_member(auth.uid(), p_community_id) then haven_private.rank(p_user_id, p_community_id)
  end
$$;

create function public.my_permissions(p_community_id uuid)
returns text[]
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_keys text[];
begin
  v_keys := haven_private.permission_keys(v_uid, p_community_id);
  if v_keys is null then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  return v_keys;
end
$$;

-- Used by RLS policies: membership of the caller, and "do we share a community".
create function public.is_community_member(p_community_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select haven_private.is_member(auth.uid(), p_community_id)
$$;

create function public.shares_community_with(p_user_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1
    from public.community_members mine
    join public.community_members theirs on theirs.community_id = mine.community_id
    where mine.user_id = auth.uid() and theirs.user_id = p_user_id
  )
$$;

-- Service role: the same answers for any user (event fan-out, voice revocation) ---------------
create function public.user_has_permission_as(p_user_id uuid, p_community_id uuid, p_key text)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select haven_private.has_permission(p_user_id, p_community_id, p_key)
$$;

create function public.can_view_channel_as(p_user_id uuid, p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_view from haven_private.channel_access(p_user_id, p_channel_id) a
$$;

create function public.can_send_in_channel_as(p_user_id uuid, p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_send from haven_private.channel_access(p_user_id, p_channel_id) a
$$;

create function public.can_connect_voice_as(p_user_id uuid, p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_connect from haven_private.channel_access(p_user_id, p_channel_id) a
$$;

create function public.can_speak_in_channel_as(p_user_id uuid, p_channel_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select a.can_speak from haven_private.channel_access(p_user_id, p_channel_id) a
$$;

-- Fan-out in one call: who may see events of this channel. Message events for hidden messages
-- never occur (banned authors are no longer members), so channel visibility is the whole rule.
create function public.channel_viewers_as(p_channel_id uuid)
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select m.user_id
  from public.channels ch
  join public.community_members m on m.community_id = ch.community_id
  where ch.id = p_channel_id
    and (haven_private.channel_access(m.user_id, p_channel_id)).can_view
  order by m.user_id
$$;

revoke all on function
  haven_private.lock_membership(uuid, uuid),
  haven_private.permission_keys(uuid, uuid),
  haven_private.assert_permission_key(text),
  haven_private.has_permission(uuid, uuid, text),
  haven_private.rank(uuid, uuid),
  haven_private.is_member(uuid, uuid),
  haven_private.channel_access(uuid, uuid),
  haven_private.require_uid(),
  haven_private.require_permission(uuid, uuid, text),
  haven_private.require_text(text, text, integer, integer),
  haven_private.optional_text(text, text, integer),
  haven_private.normalize_permission_keys(text[]),
  public.user_has_permission(uuid, text),
  public.can_view_channel(uuid),
  public.can_send_in_channel(uuid),
  public.can_connect_voice(uuid),
  public.can_speak_in_channel(uuid),
  public.member_rank(uuid, uuid),
  public.my_permissions(uuid),
  public.is_community_member(uuid),
  public.shares_community_with(uuid),
  public.user_has_permission_as(uuid, uuid, text),
  public.can_view_channel_as(uuid, uuid),
  public.can_send_in_channel_as(uuid, uuid),
  public.can_connect_voice_as(uuid, uuid),
  public.can_speak_in_channel_as(uuid, uuid),
  public.channel_viewers_as(uuid)
from public, anon, authenticated, service_role;

grant execute on function
  public.user_has_permission(uuid, text),
  public.can_view_channel(uuid),
  public.can_send_in_channel(uuid),
  public.can_connect_voice(uuid),
  public.can_speak_in_channel(uuid),
  public.member_rank(uuid, uuid),
  public.my_permissions(uuid),
  public.is_community_member(uuid),
  public.shares_community_with(uuid)
to authenticated;

grant execute on function
  public.user_has_permission_as(uuid, uuid, text),
  public.can_view_channel_as(uuid, uuid),
  public.can_send_in_channel_as(uuid, uuid),
  public.can_connect_voice_as(uuid, uuid),
  public.can_speak_in_channel_as(uuid, uuid),
  public.channel_viewers_as(uuid)
to service_role;
