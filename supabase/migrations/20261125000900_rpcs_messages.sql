-- Messages: the only write path (send/edit/delete) and the paged read path.
--
-- Why RPCs: the author is always auth.uid(), the community always the channel's (trigger), and
-- sending needs can_send_in_channel, which already requires view. Reads answer 42501 (not an
-- empty page) to a caller who cannot view the channel, and skip hidden messages unless the
-- caller holds view_ban_hidden.

-- A message as the caller may act on it: 42501 if it does not exist or is not visible to them.
create function haven_private.visible_message(p_uid uuid, p_message_id uuid)
returns public.messages
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_message public.messages;
begin
  select msg.* into v_message from public.messages msg where msg.id = p_message_id;
  if not found
     or not coalesce((haven_private.channel_access(p_uid, v_message.channel_id)).can_view, false)
     or (v_message.is_hidden and not haven_private.has_permission(p_uid, v_message.community_id, 'view_ban_hidden')) then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  return v_message;
end
$$;

create function public.send_message(p_channel_id uuid, p_content text, p_reply_to uuid default null)
returns public.messages
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_access record;
  v_content text;
  v_message public.messages;
  v_community_id uuid;
begin
  -- Take the membership lock before judging access, so a concurrent ban either sees this
  -- message (and hides it) or makes this check fail.
  select ch.community_id into v_community_id from public.channels ch where ch.id = p_channel_id;
  if v_community_id is not null then
    perform haven_private.lock_membership(v_community_id, v_uid);
  end if;

  select a.* into v_access from haven_private.channel_access(v_uid, p_channel_id) a;
  if not v_access.can_view then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  if v_access.kind <> 'text' then
    raise exception 'not a text channel' using errcode = '22023', hint = 'not_text_channel';
  end if;
  if not v_access.can_send then
    raise exception 'not permitted' using errcode = '42501', hint = 'missing_permission:send_messages';
  end if;

  v_content := haven_private.require_text(p_content, 'content', 1, 4000);

  if p_reply_to is not null and not exists (
    select 1 from public.messages r
    where r.id = p_reply_to and r.channel_id = p_channel_id and r.deleted_at is null
      and (not r.is_hidden or haven_private.has_permission(v_uid, r.community_id, 'view_ban_hidden'))
  ) then
    raise exception 'reply target not found in this channel' using errcode = '22023', hint = 'invalid_reply';
  end if;

  perform haven_private.rate_limit_consume(v_uid, 'send_message', p_channel_id);

  insert into public.messages (community_id, channel_id, author_id, content, reply_to)
  values (v_access.community_id, p_channel_id, v_uid, v_content, p_reply_to)
  returning * into v_message;
  return v_message;
end
$$;

create function public.edit_message(p_message_id uuid, p_content text)
returns public.messages
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_message public.messages := haven_private.visible_message(v_uid, p_message_id);
  v_content text;
begin
  if v_message.author_id is distinct from v_uid then
    raise exception 'not permitted: only the author can edit' using errcode = '42501', hint = 'author_only';
  end if;
  if v_message.deleted_at is not null then
    raise exception 'message was deleted' using errcode = 'P0002', hint = 'message_deleted';
  end if;
  v_content := haven_private.require_text(p_content, 'content', 1, 4000);

  update public.messages msg
  set content = v_content, edited_at = clock_timestamp()
  where msg.id = v_message.id
  returning * into v_message;
  return v_message;
end
$$;

-- Soft delete. Deleting an already deleted message is a no-op, so retries are harmless.
create function public.delete_message(p_message_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_message public.messages := haven_private.visible_message(v_uid, p_message_id);
begin
  if v_message.author_id is distinct from v_uid
     and not haven_private.has_permission(v_uid, v_message.community_id, 'manage_messages') then
    raise exception 'not permitted' using errcode = '42501', hint = 'missing_permission:manage_messages';
  end if;
  update public.messages msg
  set deleted_at = clock_timestamp()
  where msg.id = v_message.id and msg.deleted_at is null;
end
$$;

create function public.list_channel_messages(
  p_channel_id uuid,
  p_limit integer default 50,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null
)
returns table (
  id uuid,
  community_id uuid,
  channel_id uuid,
  author_id uuid,
  author_username text,
  author_display_name text,
  content text,
  reply_to uuid,
  created_at timestamptz,
  edited_at timestamptz
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_uid uuid := haven_private.require_uid();
  v_access record;
  v_limit integer := least(greatest(coalesce(p_limit, 50), 1), 100);
  v_before_at timestamptz := p_before_created_at;
  v_before_id uuid := p_before_id;
  v_see_hidden boolean;
begin
  select a.* into v_access from haven_private.channel_access(v_uid, p_channel_id) a;
  if not v_access.can_view then
    raise exception 'not permitted' using errcode = '42501';
  end if;
  v_see_hidden := haven_private.has_permission(v_uid, v_access.community_id, 'view_ban_hidden');

  -- A cursor given only as an id is completed from that message (same channel only).
  if v_before_at is null and v_before_id is not null then
    select msg.created_at into v_before_at
    from public.messages msg
    where msg.id = v_before_id and msg.channel_id = p_channel_id;
    if v_before_at is null then
      raise exception 'cursor message not found in this channel' using errcode = '22023', hint = 'invalid_cursor';
    end if;
  end if;
  -- One always-present row comparison keeps the keyset index usable: no cursor = (infinity, *);
  -- a timestamp without an id = (ts, nil uuid), i.e. strictly older than ts.
  v_before_at := coalesce(v_before_at, 'infinity'::timestamptz);
  v_before_id := coalesce(v_before_id, '00000000-0000-0000-0000-000000000000'::uuid);

  return query
  select msg.id, msg.community_id, msg.channel_id, msg.author_id,
         p.username,
         coalesce(m.nickname, p.username),
         msg.content, msg.reply_to, msg.created_at, msg.edited_at
  from public.messages msg
  left join public.profiles p on p.id = msg.author_id
  left join public.community_members m on m.community_id = msg.community_id and m.user_id = msg.author_id
  where msg.channel_id = p_channel_id
    and (msg.created_at, msg.id) < (v_before_at, v_before_id)
    and msg.deleted_at is null
    and (v_see_hidden or not msg.is_hidden)
  order by msg.created_at desc, msg.id desc
  limit v_limit;
end
$$;

revoke all on function
  haven_private.visible_message(uuid, uuid),
  public.send_message(uuid, text, uuid),
  public.edit_message(uuid, text),
  public.delete_message(uuid),
  public.list_channel_messages(uuid, integer, timestamptz, uuid)
from public, anon, authenticated, service_role;

grant execute on function
  public.send_message(uuid, text, uuid),
  public.edit_message(uuid, text),
  public.delete_message(uuid),
  public.list_channel_messages(uuid, integer, timestamptz, uuid)
to authenticated;
