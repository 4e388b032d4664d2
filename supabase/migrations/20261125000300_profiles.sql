-- Profiles: one per auth user, created when Supabase Auth inserts the user.
--
-- Why here: signup must never fail because of our schema, so the trigger on auth.users (the only
-- auth.* object we touch) falls back to a generated username whenever the requested one is
-- invalid or taken. Users may later change username/avatar_url themselves (column grant + RLS in
-- the grants migration); the BEFORE trigger below gives those direct updates the same trimming
-- and error codes as the RPCs.

-- 'user_' + 12 hex chars of the id; reserved so nobody can pose as another account's default.
create function haven_private.generated_username(p_user_id uuid)
returns text
language sql
immutable
strict
set search_path = ''
as $$
  select 'user_' || pg_catalog.left(pg_catalog.replace(p_user_id::text, '-', ''), 12)
$$;

create function haven_private.is_reserved_username(p_username text)
returns boolean
language sql
immutable
strict
set search_path = ''
as $$
  select pg_catalog.lower(p_username) ~ '^user_[0-9a-f]{12}$'
$$;

create function haven_private.create_profile(p_user_id uuid, p_metadata jsonb)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_requested text := haven_private.trim_text(p_metadata ->> 'username');
  v_generated text := haven_private.generated_username(p_user_id);
  v_candidates text[];
  v_name text;
begin
  if exists (select 1 from public.profiles p where p.id = p_user_id) then
    return;
  end if;

  if v_requested is not null
     and char_length(v_requested) between 2 and 32
     and v_requested !~ '[[:cntrl:]]'
     and not haven_private.is_reserved_username(v_requested)
     and not exists (select 1 from public.profiles p where lower(p.username) = lower(v_requested)) then
    begin
      insert into public.profiles (id, username) values (p_user_id, v_requested);
      return;
    exception when unique_violation or check_violation then
      -- A concurrent signup took the name between our check and the insert (or the name breaks
      -- a rule added later): fall through to a generated one.
      null;
    end;
  end if;

  -- Generated names are reserved (users cannot pick them), so they clash only when two ids share
  -- their first 12 hex digits. Then try the last 12, then random ones: signup never fails here.
  v_candidates := array[v_generated,
                        'user_' || pg_catalog.right(pg_catalog.replace(p_user_id::text, '-', ''), 12)];
  loop
    foreach v_name in array v_candidates loop
      begin
        insert into public.profiles (id, username) values (p_user_id, v_name);
        return;
      exception when unique_violation then
        if exists (select 1 from public.profiles p where p.id = p_user_id) then
          return;
        end if;
      end;
    end loop;
    v_candidates := array['user_' || pg_catalog.left(pg_catalog.replace(gen_random_uuid()::text, '-', ''), 12)];
  end loop;
end
$$;

create function haven_private.on_auth_user_created()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform haven_private.create_profile(new.id, coalesce(new.raw_user_meta_data, '{}'::jsonb));
  return new;
end
$$;

create trigger haven_on_auth_user_created
  after insert on auth.users
  for each row execute function haven_private.on_auth_user_created();

-- Direct self-updates (PATCH /profiles): normalise and report errors with the API's SQLSTATEs.
create function haven_private.guard_profiles()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.id <> old.id or new.created_at <> old.created_at then
    raise exception 'profile identity is immutable' using errcode = '42501';
  end if;

  if new.username is distinct from old.username then
    new.username := haven_private.trim_text(new.username);
    if new.username is null or char_length(new.username) < 2 then
      raise exception 'username must be at least 2 characters' using errcode = '22023';
    end if;
    if char_length(new.username) > 32 then
      raise exception 'username must be at most 32 characters' using errcode = '22001';
    end if;
    if new.username ~ '[[:cntrl:]]' then
      raise exception 'username contains control characters' using errcode = '22023';
    end if;
    if haven_private.is_reserved_username(new.username)
       and lower(new.username) <> haven_private.generated_username(new.id) then
      raise exception 'usernames of the form user_<12 hex> are reserved' using errcode = '22023';
    end if;
    if exists (select 1 from public.profiles p where lower(p.username) = lower(new.username) and p.id <> new.id) then
      raise exception 'username is taken' using errcode = '23505';
    end if;
  end if;

  if new.avatar_url is distinct from old.avatar_url then
    new.avatar_url := nullif(haven_private.trim_text(new.avatar_url), '');
    if char_length(new.avatar_url) > 2048 then
      raise exception 'avatar_url must be at most 2048 characters' using errcode = '22001';
    end if;
    if new.avatar_url !~* '^https?://[^[:space:][:cntrl:]]+$' then
      raise exception 'avatar_url must be an http(s) URL' using errcode = '22023';
    end if;
  end if;

  new.updated_at := now();
  return new;
end
$$;

create trigger profiles_guard before update on public.profiles
  for each row execute function haven_private.guard_profiles();

-- Accounts that existed before this migration (a hosted project adopting Haven) get profiles too.
do $$
declare
  u record;
begin
  for u in select au.id, au.raw_user_meta_data from auth.users au order by au.created_at, au.id loop
    perform haven_private.create_profile(u.id, coalesce(u.raw_user_meta_data, '{}'::jsonb));
  end loop;
end
$$;

revoke all on function
  haven_private.generated_username(uuid),
  haven_private.is_reserved_username(text),
  haven_private.create_profile(uuid, jsonb),
  haven_private.on_auth_user_created(),
  haven_private.guard_profiles()
from public, anon, authenticated, service_role;
