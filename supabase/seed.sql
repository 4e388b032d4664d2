-- Demo data for the local stack: four users and the "Haven Demo" community.
--
-- Why through the RPCs: the community is built exactly as a real client would build it
-- (create_community, create_channel, overwrites, invites), by impersonating each user with
-- request.jwt.claims inside the transaction, so the seed exercises the same code and cannot
-- drift into states the product could never reach.
--
-- Idempotent: users are inserted only if absent and the community only if demo does not already
-- own one called "Haven Demo", so re-running this file changes nothing.
--
-- Users (password for all: haven-demo-password):
--   demo@haven.local      11111111-1111-4111-8111-111111111111  owner of Haven Demo
--   alice@haven.local     22222222-2222-4222-8222-222222222222  member, Moderator
--   bob@haven.local       33333333-3333-4333-8333-333333333333  member
--   outsider@haven.local  44444444-4444-4444-8444-444444444444  not a member

insert into auth.users (
  id, instance_id, aud, role, email, encrypted_password, email_confirmed_at,
  raw_app_meta_data, raw_user_meta_data, created_at, updated_at
)
select v.id, '00000000-0000-0000-0000-000000000000'::uuid, 'authenticated', 'authenticated', v.email,
       extensions.crypt('haven-demo-password', extensions.gen_salt('bf')), now(),
       '{"provider": "email", "providers": ["email"]}'::jsonb,
       jsonb_build_object('username', v.username), now(), now()
from (values
  ('11111111-1111-4111-8111-111111111111'::uuid, 'demo@haven.local', 'demo'),
  ('22222222-2222-4222-8222-222222222222'::uuid, 'alice@haven.local', 'alice'),
  ('33333333-3333-4333-8333-333333333333'::uuid, 'bob@haven.local', 'bob'),
  ('44444444-4444-4444-8444-444444444444'::uuid, 'outsider@haven.local', 'outsider')
) as v (id, email, username)
where not exists (select 1 from auth.users u where u.id = v.id or lower(u.email) = v.email);

-- Supabase's real auth.users (supabase start) has token columns GoTrue reads as non-null
-- strings; the local shim does not have them. Fill whichever exist.
do $$
declare
  c text;
begin
  foreach c in array array['confirmation_token', 'recovery_token', 'email_change_token_new',
                           'email_change_token_current', 'email_change', 'phone_change',
                           'phone_change_token', 'reauthentication_token']
  loop
    if exists (select 1 from information_schema.columns
               where table_schema = 'auth' and table_name = 'users' and column_name = c) then
      execute format(
        'update auth.users set %I = '''' where %I is null and id in (%L, %L, %L, %L)', c, c,
        '11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222',
        '33333333-3333-4333-8333-333333333333', '44444444-4444-4444-8444-444444444444');
    end if;
  end loop;
end
$$;

-- Recent GoTrue versions sign users in through auth.identities; the local shim has no such table.
-- Best effort, since its shape differs between GoTrue versions.
do $$
begin
  if to_regclass('auth.identities') is not null then
    begin
      execute $q$
        insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
        select u.id::text, u.id,
               jsonb_build_object('sub', u.id::text, 'email', u.email, 'email_verified', true),
               'email', now(), now(), now()
        from auth.users u
        where u.id in ('11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222',
                       '33333333-3333-4333-8333-333333333333', '44444444-4444-4444-8444-444444444444')
          and not exists (select 1 from auth.identities i where i.user_id = u.id and i.provider = 'email')
      $q$;
    exception when others then
      raise notice 'seed: no auth.identities rows added (%); password sign-in may need them', sqlerrm;
    end;
  end if;
end
$$;

-- The community, built by its users.
do $$
declare
  v_demo constant uuid := '11111111-1111-4111-8111-111111111111';
  v_alice constant uuid := '22222222-2222-4222-8222-222222222222';
  v_bob constant uuid := '33333333-3333-4333-8333-333333333333';
  v_community uuid;
  v_everyone uuid;
  v_moderator uuid;
  v_general uuid;
  v_mods uuid;
  v_stage uuid;
  v_code text;
  v_welcome public.messages;
  v_result jsonb;
begin
  if exists (
    select 1
    from public.communities c
    join public.community_members m on m.community_id = c.id and m.is_owner
    where c.name = 'Haven Demo' and m.user_id = v_demo
  ) then
    raise notice 'seed: Haven Demo already present, nothing to do';
    return;
  end if;

  -- As demo: the community, its extra channels and an invite.
  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', v_demo, 'role', 'authenticated')::text, true);

  v_community := public.create_community('Haven Demo', 'A demo community for the local stack.');
  select r.id into v_everyone from public.roles r where r.community_id = v_community and r.is_default;
  select r.id into v_moderator from public.roles r where r.community_id = v_community and r.name = 'Moderator';
  select ch.id into v_general from public.channels ch where ch.community_id = v_community and ch.name = 'general';

  v_mods := public.create_channel(v_community, 'mods-only', 'text', 'Only moderators can read this.');
  perform public.set_channel_role_overwrite(v_mods, v_everyone, false, null, null, null);
  perform public.set_channel_role_overwrite(v_mods, v_moderator, true, null, null, null);

  v_stage := public.create_channel(v_community, 'Stage', 'voice', 'Everyone listens, moderators speak.');
  perform public.set_channel_role_overwrite(v_stage, v_everyone, null, null, null, false);
  perform public.set_channel_role_overwrite(v_stage, v_moderator, null, null, null, true);

  v_code := (public.create_invite(v_community, 10, null)).code;

  -- alice and bob join through the invite, as themselves.
  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', v_alice, 'role', 'authenticated')::text, true);
  v_result := public.redeem_invite(v_code);
  if v_result ->> 'status' <> 'joined' then
    raise exception 'seed: alice could not join: %', v_result;
  end if;

  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', v_bob, 'role', 'authenticated')::text, true);
  v_result := public.redeem_invite(v_code);
  if v_result ->> 'status' <> 'joined' then
    raise exception 'seed: bob could not join: %', v_result;
  end if;

  -- demo makes alice a moderator and opens the conversation.
  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', v_demo, 'role', 'authenticated')::text, true);
  perform public.assign_role(v_community, v_alice, v_moderator);
  v_welcome := public.send_message(v_general, 'Welcome to Haven! Voice is in Lounge, text is here.');

  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', v_alice, 'role', 'authenticated')::text, true);
  perform public.send_message(v_general, 'Hi everyone, glad to be here.', v_welcome.id);
  perform public.send_message(v_mods, 'Mods: remember to check the reports channel daily.');

  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', v_bob, 'role', 'authenticated')::text, true);
  perform public.send_message(v_general, 'Hello! Anyone up for a voice chat later?');

  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', v_demo, 'role', 'authenticated')::text, true);
  perform public.send_message(v_general, 'Sure, join Lounge whenever you like.');

  perform set_config('request.jwt.claims', '', true);
  raise notice 'seed: created Haven Demo (%), invite code %', v_community, v_code;
end
$$;
