-- Haven schema: every table, its constraints and indexes, in one place.
--
-- Why one file: foreign keys, partial unique indexes and check constraints are the first line of
-- defence (they hold for every writer, including the service role and future RPCs), so they are
-- declared together with the tables they protect. Behaviour (triggers, RPCs, policies) comes in
-- later files.
--
-- Fail closed: on a hosted project, Supabase's default privileges grant ALL on new tables in
-- `public` to anon/authenticated. Every table here gets RLS enabled + forced and its grants
-- revoked in this same file, so that if a later migration fails nothing is left open. The
-- explicit grants and select policies live in the grants/RLS migration.

-- Our SECURITY DEFINER RPCs are owned by the migrating role and write to tables that have RLS
-- forced and no write policies: they work only because that role bypasses RLS (hosted Supabase's
-- `postgres` has BYPASSRLS; locally it is a superuser). Refuse to build a schema that would
-- silently deny every RPC write.
do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_roles
    where rolname = current_user and (rolsuper or rolbypassrls)
  ) then
    raise exception 'Haven migrations must run as a role with BYPASSRLS (current role: %)', current_user
      using hint = 'On Supabase run them as postgres (supabase db push does).';
  end if;
end
$$;

-- Invite codes use gen_random_bytes; the seed uses crypt/gen_salt. Hosted projects already have
-- pgcrypto in `extensions`, where this is a no-op.
create extension if not exists pgcrypto with schema extensions;

-- Internals (evaluation helpers, trigger functions, rate-limit bookkeeping) live outside the
-- exposed `public` schema so PostgREST can never offer them as RPCs, whatever their grants.
create schema if not exists haven_private;
revoke all on schema haven_private from public;
comment on schema haven_private is
  'Haven internals: not exposed through the API; only SECURITY DEFINER code calls into it.';

-- One definition of "trim" for every length rule ("1-100 chars after trim"). btrim() alone only
-- strips spaces; names made of tabs, NBSPs or zero-width spaces must count as empty too.
create function haven_private.trim_text(p_value text)
returns text
language sql
immutable
strict
parallel safe
set search_path = ''
as $$
  select pg_catalog.btrim(
    p_value,
    E' \t\n\r\f\u000b\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff'
  )
$$;
-- Check constraints below call it, and Postgres checks EXECUTE for the *writing* role (e.g.
-- authenticated updating its own profile). It is a pure text function: safe for everyone.
revoke all on function haven_private.trim_text(text) from public;
grant execute on function haven_private.trim_text(text) to public;

-- Permission catalog ---------------------------------------------------------------------------
create table public.permissions (
  key         text primary key constraint permissions_key_format check (key ~ '^[a-z_]{1,40}$'),
  category    text not null constraint permissions_category_check check (category in ('text', 'admin', 'voice')),
  description text not null
);

insert into public.permissions (key, category, description) values
  ('view_channels',              'text',  'See channels and read their messages'),
  ('send_messages',              'text',  'Send messages in text channels'),
  ('manage_server',              'admin', 'Rename the community, change its settings'),
  ('manage_roles',               'admin', 'Create, edit, delete and assign roles below one''s own rank'),
  ('manage_members',             'admin', 'Kick members below one''s own rank'),
  ('create_channels',            'admin', 'Create channels'),
  ('manage_channels',            'admin', 'Edit, move and delete channels and channel groups'),
  ('manage_channel_permissions', 'admin', 'Set channel overwrites for roles and members below one''s own rank'),
  ('manage_messages',            'text',  'Delete other members'' messages'),
  ('manage_invites',             'admin', 'Create, list and revoke invites'),
  ('manage_bans',                'admin', 'Ban, unban and list bans'),
  ('view_ban_hidden',            'admin', 'Read messages hidden because their author was banned'),
  ('connect_voice',              'voice', 'Join voice channels'),
  ('speak',                      'voice', 'Transmit audio in voice channels'),
  ('mute_members',               'voice', 'Server-mute and unmute others in voice'),
  ('move_members',               'voice', 'Disconnect or move others between voice channels');

-- Profiles -------------------------------------------------------------------------------------
create table public.profiles (
  id         uuid primary key references auth.users (id) on delete cascade,
  username   text not null,
  avatar_url text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint profiles_username_check check (
    char_length(username) between 2 and 32
    and username = haven_private.trim_text(username)
    and username !~ '[[:cntrl:]]'
  ),
  -- The desktop client fetches avatars itself: only plain web URLs, bounded.
  constraint profiles_avatar_url_check check (
    avatar_url is null or (char_length(avatar_url) <= 2048 and avatar_url ~* '^https?://[^[:space:][:cntrl:]]+$')
  )
);
create unique index profiles_username_ci_key on public.profiles (lower(username));

-- Communities ----------------------------------------------------------------------------------
create table public.communities (
  id          uuid primary key default gen_random_uuid(),
  name        text not null,
  description text,
  created_by  uuid references auth.users (id) on delete set null,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  constraint communities_name_check check (
    char_length(name) between 1 and 100 and name = haven_private.trim_text(name)
  ),
  constraint communities_description_check check (
    description is null or (char_length(description) between 1 and 1000
                            and description = haven_private.trim_text(description))
  )
);

create table public.community_settings (
  community_id  uuid primary key references public.communities (id) on delete cascade,
  allow_invites boolean not null default true,
  updated_at    timestamptz not null default now()
);

create table public.community_members (
  id           uuid primary key default gen_random_uuid(),
  community_id uuid not null references public.communities (id) on delete cascade,
  user_id      uuid not null references auth.users (id) on delete cascade,
  nickname     text,
  is_owner     boolean not null default false,
  joined_at    timestamptz not null default now(),
  constraint community_members_community_user_key unique (community_id, user_id),
  constraint community_members_nickname_check check (
    nickname is null or (char_length(nickname) between 1 and 32
                         and nickname = haven_private.trim_text(nickname)
                         and nickname !~ '[[:cntrl:]]')
  )
);
-- At most one owner per community here; "at least one" is a deferred check (invariants file).
create unique index community_members_one_owner_key on public.community_members (community_id) where is_owner;
create index community_members_user_idx on public.community_members (user_id);

-- Roles ----------------------------------------------------------------------------------------
create table public.roles (
  id           uuid primary key default gen_random_uuid(),
  community_id uuid not null references public.communities (id) on delete cascade,
  name         text not null,
  color        text,
  position     integer not null,
  is_default   boolean not null default false,
  is_system    boolean not null default false,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now(),
  constraint roles_name_check check (char_length(name) between 1 and 50 and name = haven_private.trim_text(name)),
  constraint roles_color_check check (color is null or color ~ '^#[0-9a-f]{6}$'),
  -- @everyone sits at 0 and nothing else may (rank 0 means "no role above @everyone"); the
  -- seeded Owner role at 100 is the ceiling.
  constraint roles_position_check check (
    (is_default and position = 0) or (not is_default and position between 1 and 100)
  ),
  constraint roles_default_is_system check (not is_default or is_system)
);
create unique index roles_name_ci_key on public.roles (community_id, lower(name));
create unique index roles_one_default_key on public.roles (community_id) where is_default;

create table public.role_permissions (
  role_id        uuid not null references public.roles (id) on delete cascade,
  permission_key text not null references public.permissions (key),
  primary key (role_id, permission_key)
);

create table public.member_roles (
  member_id   uuid not null references public.community_members (id) on delete cascade,
  role_id     uuid not null references public.roles (id) on delete cascade,
  assigned_at timestamptz not null default now(),
  primary key (member_id, role_id)
);
create index member_roles_role_idx on public.member_roles (role_id);

-- Channels -------------------------------------------------------------------------------------
create table public.channel_groups (
  id           uuid primary key default gen_random_uuid(),
  community_id uuid not null references public.communities (id) on delete cascade,
  name         text not null,
  position     integer not null default 0,
  created_at   timestamptz not null default now(),
  constraint channel_groups_name_check check (char_length(name) between 1 and 50 and name = haven_private.trim_text(name)),
  constraint channel_groups_position_check check (position >= 0)
);
create index channel_groups_community_idx on public.channel_groups (community_id);

create table public.channels (
  id           uuid primary key default gen_random_uuid(),
  community_id uuid not null references public.communities (id) on delete cascade,
  name         text not null,
  topic        text,
  kind         text not null default 'text',
  position     integer not null default 0,
  group_id     uuid references public.channel_groups (id) on delete set null,
  created_by   uuid references auth.users (id) on delete set null,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now(),
  constraint channels_name_check check (char_length(name) between 1 and 80 and name = haven_private.trim_text(name)),
  constraint channels_topic_check check (
    topic is null or (char_length(topic) between 1 and 1024 and topic = haven_private.trim_text(topic))
  ),
  constraint channels_kind_check check (kind in ('text', 'voice')),
  constraint channels_position_check check (position >= 0)
);
create unique index channels_name_ci_key on public.channels (community_id, lower(name));
create index channels_group_idx on public.channels (group_id) where group_id is not null;

-- Overwrites: tri-state flags, true = allow, false = deny, null = inherit. A row with four nulls
-- means nothing, so it must not exist (the RPC deletes it instead).
create table public.channel_role_overwrites (
  channel_id  uuid not null references public.channels (id) on delete cascade,
  role_id     uuid not null references public.roles (id) on delete cascade,
  can_view    boolean,
  can_send    boolean,
  can_connect boolean,
  can_speak   boolean,
  updated_at  timestamptz not null default now(),
  primary key (channel_id, role_id),
  constraint channel_role_overwrites_not_empty check (num_nonnulls(can_view, can_send, can_connect, can_speak) > 0)
);
create index channel_role_overwrites_role_idx on public.channel_role_overwrites (role_id);

-- Keyed by membership, not user: a kicked member who rejoins starts without old overwrites.
create table public.channel_member_overwrites (
  channel_id  uuid not null references public.channels (id) on delete cascade,
  member_id   uuid not null references public.community_members (id) on delete cascade,
  can_view    boolean,
  can_send    boolean,
  can_connect boolean,
  can_speak   boolean,
  updated_at  timestamptz not null default now(),
  primary key (channel_id, member_id),
  constraint channel_member_overwrites_not_empty check (num_nonnulls(can_view, can_send, can_connect, can_speak) > 0)
);
create index channel_member_overwrites_member_idx on public.channel_member_overwrites (member_id);

-- Messages -------------------------------------------------------------------------------------
-- No display fields: names are joined from profiles/memberships at read time, so an author
-- cannot spoof them. community_id is overwritten from the channel by a trigger.
create table public.messages (
  id           uuid primary key default gen_random_uuid(),
  community_id uuid not null references public.communities (id) on delete cascade,
  channel_id   uuid not null references public.channels (id) on delete cascade,
  author_id    uuid references auth.users (id) on delete set null,
  content      text not null,
  reply_to     uuid references public.messages (id) on delete set null,
  created_at   timestamptz not null default clock_timestamp(),
  edited_at    timestamptz,
  deleted_at   timestamptz,
  is_hidden    boolean not null default false,
  constraint messages_content_check check (
    char_length(content) between 1 and 4000 and content = haven_private.trim_text(content)
  )
);
-- Keyset paging: newest first within a channel, (created_at, id) as the cursor.
create index messages_channel_keyset_idx on public.messages (channel_id, created_at desc, id desc);
-- Ban hides one author's messages in one community.
create index messages_community_author_idx on public.messages (community_id, author_id);
create index messages_reply_to_idx on public.messages (reply_to) where reply_to is not null;

-- Invites --------------------------------------------------------------------------------------
-- Validity (expired, used up, revoked) is derived from these columns at redemption time under a
-- row lock; there is no "active" flag whose update could be rolled back.
create table public.invites (
  id           uuid primary key default gen_random_uuid(),
  community_id uuid not null references public.communities (id) on delete cascade,
  code         text not null,
  created_by   uuid references auth.users (id) on delete set null,
  max_uses     integer,
  uses         integer not null default 0,
  expires_at   timestamptz,
  revoked_at   timestamptz,
  created_at   timestamptz not null default now(),
  -- Stored lower-case; redemption lower-cases its input, which makes codes case-insensitive.
  constraint invites_code_format check (code ~ '^[a-z0-9]{10}$'),
  constraint invites_max_uses_check check (max_uses is null or max_uses > 0),
  constraint invites_uses_check check (uses >= 0 and (max_uses is null or uses <= max_uses))
);
create unique index invites_code_key on public.invites (code);
create index invites_community_idx on public.invites (community_id);

-- Bans -----------------------------------------------------------------------------------------
create table public.community_bans (
  id           uuid primary key default gen_random_uuid(),
  community_id uuid not null references public.communities (id) on delete cascade,
  user_id      uuid not null references auth.users (id) on delete cascade,
  banned_by    uuid references auth.users (id) on delete set null,
  reason       text,
  created_at   timestamptz not null default now(),
  revoked_at   timestamptz,
  revoked_by   uuid references auth.users (id) on delete set null,
  constraint community_bans_reason_check check (
    reason is null or (char_length(reason) between 1 and 512 and reason = haven_private.trim_text(reason))
  ),
  -- revoked_by may become null later (revoker's account deleted), never the other way round.
  constraint community_bans_revoked_consistent check (revoked_at is not null or revoked_by is null)
);
-- History is kept (revoked bans stay), but only one ban may be in force.
create unique index community_bans_one_active_key on public.community_bans (community_id, user_id) where revoked_at is null;
create index community_bans_user_idx on public.community_bans (user_id);

-- Rate limits ----------------------------------------------------------------------------------
-- Limits are data so operators, tests and the load harness can tune them without a migration.
create table public.rate_limit_settings (
  action         text primary key,
  max_events     integer not null constraint rate_limit_settings_max_check check (max_events > 0),
  window_seconds integer not null constraint rate_limit_settings_window_check check (window_seconds > 0),
  updated_at     timestamptz not null default now()
);

insert into public.rate_limit_settings (action, max_events, window_seconds) values
  ('send_message',         5,     5),
  ('create_invite',        20,    3600),
  ('redeem_invite_failed', 20,    3600),
  ('create_community',     10,    86400);

-- scope is the channel for per-channel limits and the nil uuid otherwise (not null, so the
-- lookup index is usable with plain equality).
create table public.rate_limit_events (
  id         bigint generated always as identity primary key,
  user_id    uuid not null references auth.users (id) on delete cascade,
  action     text not null,
  scope      uuid not null default '00000000-0000-0000-0000-000000000000',
  created_at timestamptz not null default clock_timestamp()
);
create index rate_limit_events_lookup_idx on public.rate_limit_events (user_id, action, scope, created_at);

-- Lock everything down until the grants/RLS migration opens exactly what the spec allows ------
do $$
declare
  t text;
begin
  foreach t in array array[
    'permissions', 'profiles', 'communities', 'community_settings', 'community_members', 'roles',
    'role_permissions', 'member_roles', 'channel_groups', 'channels', 'channel_role_overwrites',
    'channel_member_overwrites', 'messages', 'invites', 'community_bans', 'rate_limit_settings',
    'rate_limit_events'
  ]
  loop
    execute format('alter table public.%I enable row level security', t);
    execute format('alter table public.%I force row level security', t);
    execute format('revoke all on table public.%I from public, anon, authenticated, service_role', t);
  end loop;
end
$$;
revoke all on sequence public.rate_limit_events_id_seq from public, anon, authenticated, service_role;
