#!/bin/sh
# Throughput and latency of one RPC through /rest/v1, measured with wrk.
#
# Signs in the seeded member alice@haven.local, finds the Lounge of "Haven Demo" and hammers
# POST /rest/v1/rpc/authorize_voice_join with her token (the call signaling makes per join).
# Usage, from the repository root while `cargo xtask up` runs:
#   supabase/local-api/bench/rpc-wrk.sh [stack.json] [connections] [seconds]
set -eu
STACK=${1:-.haven/stack.json}
CONNECTIONS=${2:-16}
SECONDS_=${3:-20}
URL=$(sed -n 's/.*"api_url": "\(.*\)".*/\1/p' "$STACK")
KEY=$(sed -n 's/.*"anon_key": "\(.*\)".*/\1/p' "$STACK")
TOKEN=$(curl -sf -X POST "$URL/auth/v1/token?grant_type=password" -H "apikey: $KEY" \
  -H "Content-Type: application/json" \
  -d '{"email":"alice@haven.local","password":"haven-demo-password"}' |
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
LOUNGE=$(curl -sf "$URL/rest/v1/channels?select=id,communities!inner(name)&name=eq.Lounge&communities.name=eq.Haven+Demo" \
  -H "apikey: $KEY" -H "Authorization: Bearer $TOKEN" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
SCRIPT=$(mktemp)
trap 'rm -f "$SCRIPT"' EXIT
cat > "$SCRIPT" <<LUA
wrk.method = "POST"
wrk.body = '{"p_channel_id":"$LOUNGE"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["apikey"] = "$KEY"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_}s" --latency -s "$SCRIPT" "$URL/rest/v1/rpc/authorize_voice_join"
