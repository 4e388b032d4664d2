-- Local-only shim: what a hosted Supabase project provides before our migrations run.
--
-- Applied by `cargo xtask` (and the tests) to the local Postgres *before* supabase/migrations.
-- It is never part of the migrations: on a hosted project these objects already exist and
-- belong to Supabase. Everything here is idempotent so it can be re-applied at every start.
-- It mirrors Supabase's own definitions (roles, auth.users, auth.uid() and friends) closely
-- enough that the migrations, RLS policies and pgTAP tests behave the same on both.

-- Roles ------------------------------------------------------------------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin login noinherit createrole;
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;
-- Hosted Supabase lets the `postgres` role act as the API roles (pgTAP tests `set role`).
grant anon, authenticated, service_role to postgres;

-- Schemas ----------------------------------------------------------------------------------
create schema if not exists extensions;
create schema if not exists auth authorization supabase_auth_admin;
grant usage on schema extensions to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role, postgres;
grant all on schema auth to supabase_auth_admin;

-- Supabase's default search path for the database owner.
alter role postgres set search_path = "$user", public, extensions;
alter role authenticator set statement_timeout = '8s';

-- auth.users: the subset of GoTrue's table that our schema and the local auth service use.
create table if not exists auth.users (
  id                 uuid primary key default gen_random_uuid(),
  instance_id        uuid,
  aud                varchar(255) default 'authenticated',
  role               varchar(255) default 'authenticated',
  email              varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  raw_app_meta_data  jsonb default '{}'::jsonb,
  raw_user_meta_data jsonb default '{}'::jsonb,
  created_at         timestamptz default now(),
  updated_at         timestamptz default now(),
  last_sign_in_at    timestamptz,
  is_anonymous       boolean not null default false
);
create unique index if not exists users_email_key on auth.users (lower(email)) where email is not null;

-- Sessions and refresh tokens, shaped like GoTrue's (used only by the local auth service).
create table if not exists auth.sessions (
  id         uuid primary key default gen_random_uuid(),
  user_id    uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  not_after  timestamptz
);
create table if not exists auth.refresh_tokens (
  id         bigserial primary key,
  token      varchar(255) not null unique,
  user_id    uuid not null references auth.users (id) on delete cascade,
  session_id uuid not null references auth.sessions (id) on delete cascade,
  revoked    boolean not null default false,
  parent     varchar(255),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists refresh_tokens_session_idx on auth.refresh_tokens (session_id);

alter table auth.users owner to supabase_auth_admin;
alter table auth.sessions owner to supabase_auth_admin;
alter table auth.refresh_tokens owner to supabase_auth_admin;
-- The database owner (migrations, seed, tests) may read and write auth tables, as on hosted.
grant all on auth.users, auth.sessions, auth.refresh_tokens to postgres, service_role;
grant usage, select on sequence auth.refresh_tokens_id_seq to postgres, service_role;

-- Supabase's helper functions: read the JWT claims PostgREST puts in the transaction.
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.email() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;
grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to anon, authenticated, service_role, postgres;
