-- Abuse limits enforced in the database (clients can be modified; the database cannot).
--
-- Why a sliding window over an event table: it is exact (no burst at window edges), needs no
-- background job, and the limits stay data (public.rate_limit_settings) that operators and the
-- load harness tune without a migration. A transaction-scoped advisory lock per (user, action,
-- scope) makes check-then-insert atomic under concurrent requests from the same user.
-- A missing settings row means "no limit" - deleting it is an explicit operator decision.

create function haven_private.rate_limit_lock(p_user_id uuid, p_action text, p_scope uuid)
returns void
language sql
security definer
set search_path = ''
as $$
  select pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('haven.rate_limit:' || p_user_id::text || ':' || p_action || ':' || p_scope::text, 0)
  )
$$;

-- Raises PT429 (PostgREST: HTTP 429) when the window is full; detail says how long to wait.
create function haven_private.rate_limit_check(p_user_id uuid, p_action text, p_scope uuid default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_scope uuid := coalesce(p_scope, '00000000-0000-0000-0000-000000000000'::uuid);
  v_settings public.rate_limit_settings;
  v_now timestamptz := clock_timestamp();
  v_count bigint;
  v_release timestamptz;
  v_wait integer;
begin
  select s.* into v_settings from public.rate_limit_settings s where s.action = p_action;
  if not found then
    return;
  end if;

  perform haven_private.rate_limit_lock(p_user_id, p_action, v_scope);

  select count(*) into v_count
  from public.rate_limit_events e
  where e.user_id = p_user_id and e.action = p_action and e.scope = v_scope
    and e.created_at > v_now - make_interval(secs => v_settings.window_seconds);

  if v_count >= v_settings.max_events then
    -- The window frees a slot when the oldest event that keeps it full ages out (with a lowered
    -- limit that may be more than one event away).
    select e.created_at into v_release
    from public.rate_limit_events e
    where e.user_id = p_user_id and e.action = p_action and e.scope = v_scope
      and e.created_at > v_now - make_interval(secs => v_settings.window_seconds)
    order by e.created_at
    offset (v_count - v_settings.max_events)
    limit 1;
    v_wait := greatest(1, ceil(extract(epoch from
      (v_release + make_interval(secs => v_settings.window_seconds) - v_now)))::integer);
    raise exception 'rate limited: %', p_action
      using errcode = 'PT429',
            detail = format('retry after %s seconds', v_wait),
            hint = 'rate_limited:' || p_action;
  end if;
end
$$;

create function haven_private.rate_limit_record(p_user_id uuid, p_action text, p_scope uuid default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_scope uuid := coalesce(p_scope, '00000000-0000-0000-0000-000000000000'::uuid);
  v_window integer;
begin
  select s.window_seconds into v_window from public.rate_limit_settings s where s.action = p_action;
  if not found then
    return;
  end if;

  perform haven_private.rate_limit_lock(p_user_id, p_action, v_scope);

  -- Keep the table small without a janitor: this user's expired events for this action go now
  -- (all scopes, so channels they stopped writing in do not accumulate rows).
  delete from public.rate_limit_events e
  where e.user_id = p_user_id and e.action = p_action
    and e.created_at <= clock_timestamp() - make_interval(secs => v_window);

  insert into public.rate_limit_events (user_id, action, scope) values (p_user_id, p_action, v_scope);
end
$$;

create function haven_private.rate_limit_consume(p_user_id uuid, p_action text, p_scope uuid default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform haven_private.rate_limit_check(p_user_id, p_action, p_scope);
  perform haven_private.rate_limit_record(p_user_id, p_action, p_scope);
end
$$;

create trigger rate_limit_settings_touch before update on public.rate_limit_settings
  for each row execute function haven_private.touch_updated_at();

revoke all on function
  haven_private.rate_limit_lock(uuid, text, uuid),
  haven_private.rate_limit_check(uuid, text, uuid),
  haven_private.rate_limit_record(uuid, text, uuid),
  haven_private.rate_limit_consume(uuid, text, uuid)
from public, anon, authenticated, service_role;
