-- Voice: what the signaling service asks before it mints a media grant, and what it re-asks
-- when events say permissions changed.
--
-- Why no existence oracle: authorize_voice_join gives one answer (42501) for a channel that does
-- not exist, one in a community the caller is not in, and one the caller cannot view. Only a
-- caller who can view the channel learns that it is a text channel (22023).

-- Stable, opaque room key for a voice channel: derived from the id, carries nothing else.
create function haven_private.voice_room(p_channel_id uuid)
returns text
language sql
immutable
strict
set search_path = ''
as $$
  select 'vc_' || pg_catalog.replace(p_channel_id::text, '-', '')
$$;

create function public.authorize_voice_join(p_channel_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_access record;
  v_display_name text;
begin
  select a.* into v_access from haven_private.channel_access(v_uid, p_channel_id) a;
  if not v_access.can_view then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  if v_access.kind <> 'voice' then
    raise exception 'not a voice channel' using errcode = '22023', hint = 'not_voice_channel';
  end if;
  if not v_access.can_connect then
    raise exception 'not permitted' using errcode = '42501', hint = 'missing_permission:connect_voice';
  end if;

  select coalesce(m.nickname, p.username) into v_display_name
  from public.community_members m
  left join public.profiles p on p.id = m.user_id
  where m.id = v_access.member_id;

  return jsonb_build_object(
    'community_id', v_access.community_id,
    'channel_id', p_channel_id,
    'room', haven_private.voice_room(p_channel_id),
    'can_speak', v_access.can_speak,
    'display_name', v_display_name,
    'user_id', v_uid
  );
end
$$;

create function public.authorize_voice_moderation(p_channel_id uuid, p_target_user_id uuid, p_action text)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_access record;
  v_key text;
  v_rank integer;
  v_target_rank integer;
begin
  select a.* into v_access from haven_private.channel_access(v_uid, p_channel_id) a;
  if not v_access.can_view then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  if v_access.kind <> 'voice' then
    raise exception 'not a voice channel' using errcode = '22023', hint = 'not_voice_channel';
  end if;

  v_key := case p_action when 'mute' then 'mute_members' when 'disconnect' then 'move_members' end;
  if v_key is null then
    raise exception 'action must be mute or disconnect' using errcode = '22023', hint = 'invalid_action';
  end if;
  perform haven_private.require_permission(v_uid, v_access.community_id, v_key);

  -- Someone no longer in the community has no rank and no business in the room: a moderator
  -- may always disconnect them (the service also does so on its own from the events).
  v_target_rank := haven_private.rank(p_target_user_id, v_access.community_id);
  if v_target_rank is null and p_action <> 'disconnect' then
    raise exception 'not permitted' using errcode = '42501', hint = 'not_a_member';
  end if;
  v_rank := haven_private.rank(v_uid, v_access.community_id);
  if p_target_user_id = v_uid or (v_rank <> 2147483647 and coalesce(v_target_rank, -1) >= v_rank) then
    raise exception 'not permitted' using errcode = '42501', hint = 'hierarchy';
  end if;

  return jsonb_build_object(
    'room', haven_private.voice_room(p_channel_id),
    'target_user_id', p_target_user_id
  );
end
$$;

-- Service role: re-evaluated on every permission event for each participant of a room. A text
-- or missing channel has no voice access.
create function public.voice_access_as(p_user_id uuid, p_channel_id uuid)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'can_connect', coalesce(a.kind = 'voice' and a.can_connect, false),
    'can_speak', coalesce(a.kind = 'voice' and a.can_speak, false)
  )
  from haven_private.channel_access(p_user_id, p_channel_id) a
$$;

revoke all on function
  haven_private.voice_room(uuid),
  public.authorize_voice_join(uuid),
  public.authorize_voice_moderation(uuid, uuid, text),
  public.voice_access_as(uuid, uuid)
from public, anon, authenticated, service_role;

grant execute on function
  public.authorize_voice_join(uuid),
  public.authorize_voice_moderation(uuid, uuid, text)
to authenticated;

grant execute on function public.voice_access_as(uuid, uuid) to service_role;
