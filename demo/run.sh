#!/usr/bin/env bash
# `make demo`: start a small "prod" (PostgreSQL, Redis, an HTTPS status API) and "staging" (a web page and
# its own DNS resolver) on loopback addresses, run a real `bulkhead audit --from staging` against them with
# examples/demo.yaml and explain the result. Then the same check as a fleet (NATS, controller, two agents): the leak
# alerts a signed webhook, an nftables rule closes it, and the resolve arrives. Stops everything it started (by pid)
# and removes its nftables table, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAN=examples/demo.yaml
REPORT_DIR=.bulkhead/demo-report
FLEET_PLAN=examples/fleet.yaml
NATS_PORT=14222
API=127.0.0.1:19470
RECEIVER_PORT=19471 # the demo-webhook receiver's URL in examples/fleet.yaml names it
# The demo's own nftables table: nothing else is touched, and a table a killed run left behind is removed at start.
NFT_TABLE=bulkhead_demo
work=$(mktemp -d /tmp/bulkhead-demo.XXXXXX)
pids=()

# Closing the leak for real needs root: an nftables rule, and the staging agent under another uid to match on.
can_close_leak() { [ "$(id -u)" = 0 ] && command -v nft >/dev/null && command -v setpriv >/dev/null && id -u nobody >/dev/null 2>&1; }
# Only once this run owns the demo's ports: a second `make demo` that finds them busy must not touch the first's table.
own_nft=0
remove_nft_table() { if [ "$own_nft" = 1 ] && can_close_leak; then nft delete table inet "$NFT_TABLE" 2>/dev/null || true; fi; }

cleanup() {
  # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for clients.
  for pid in "${pids[@]}"; do
    if [ "$pid" = "${pg_pid:-}" ]; then kill -INT "$pid" 2>/dev/null || true; else kill "$pid" 2>/dev/null || true; fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  remove_nft_table
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\033[1m%s\033[0m\n' "$*"; }

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
for hp in 127.0.10.1:15432 127.0.10.1:16379 127.0.10.1:18443 127.0.20.1:18080 127.0.0.1:$NATS_PORT $API 127.0.0.1:$RECEIVER_PORT; do
  if port_busy "${hp%:*}" "${hp#*:}"; then echo "error: $hp is already in use; the demo needs it free" >&2; exit 1; fi
done
own_nft=1
remove_nft_table # left behind by a run that was killed with SIGKILL

wait_port() { # host port what
  for _ in $(seq 100); do port_busy "$1" "$2" && return 0; sleep 0.1; done
  echo "error: $3 did not start listening on $1:$2" >&2; exit 1
}

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "error: PostgreSQL is not installed (make demo installs it as root)" >&2; exit 1; }
# initdb refuses to run as root. setpriv execs in place, so $! is the server's own pid and cleanup can stop it.
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)

say "Starting the sandbox in $work"
mkdir -p "$work/pg"
echo "demo-$RANDOM$RANDOM" >"$work/pwfile"
if [ "$(id -u)" = 0 ]; then chown postgres: "$work/pg" "$work/pwfile"; chmod 755 "$work"; fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -A scram-sha-256 --pwfile="$work/pwfile" -U postgres --no-sync >"$work/initdb.log" 2>&1 \
  || { cat "$work/initdb.log" >&2; exit 1; }
echo "host all all 127.0.0.0/8 scram-sha-256" >"$work/pg/pg_hba.conf"
"${as_pg[@]}" "$pg_bin/postgres" -D "$work/pg" -p 15432 -k "$work/pg" -c listen_addresses=127.0.10.1 -c fsync=off >"$work/postgres.log" 2>&1 &
pg_pid=$!
pids+=("$pg_pid")
wait_port 127.0.10.1 15432 "prod PostgreSQL"
echo "  prod PostgreSQL  127.0.10.1:15432  (password authentication)"

redis-server --port 16379 --bind 127.0.10.1 --requirepass "demo-$RANDOM$RANDOM" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port 127.0.10.1 16379 "prod Redis"
echo "  prod Redis       127.0.10.1:16379  (requirepass)"

openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=api.prod.demo -days 2 -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1
node dist/demo/web.js "$work/cert.pem" "$work/key.pem" >"$work/web.log" 2>&1 &
pids+=($!)
wait_port 127.0.10.1 18443 "prod HTTPS API"
wait_port 127.0.20.1 18080 "staging web"
echo "  prod HTTPS API   127.0.10.1:18443  (self-signed certificate)"
echo "  staging web      127.0.20.1:18080"

dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.20.1 --port=15353 \
  --local=/staging.demo/ --host-record=web.staging.demo,127.0.20.1 --conf-file=/dev/null --pid-file= --log-facility="$work/dnsmasq.log" &
pids+=($!)
sleep 0.3
kill -0 "${pids[-1]}" 2>/dev/null || { echo "error: dnsmasq did not start" >&2; cat "$work/dnsmasq.log" >&2 || true; exit 1; }
echo "  staging DNS      127.0.20.1:15353  (knows staging.demo only)"
dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.10.1 --port=15353 \
  --local=/prod.demo/ --host-record=db.prod.demo,127.0.10.1 --host-record=api.prod.demo,127.0.10.1 \
  --conf-file=/dev/null --pid-file= --log-facility="$work/dnsmasq-prod.log" &
pids+=($!)
sleep 0.3
kill -0 "${pids[-1]}" 2>/dev/null || { echo "error: dnsmasq (prod) did not start" >&2; exit 1; }
echo "  prod DNS         127.0.10.1:15353  (knows prod.demo only)"
echo "  nothing listens on 127.0.10.1:15022 (prod SSH)"
echo

say "Running: bulkhead audit --plan $PLAN --from staging --report $REPORT_DIR"
echo
set +e
node dist/cli/bulkhead.js audit --plan "$PLAN" --from staging --report "$REPORT_DIR"
code=$?
set -e
echo
say "What happened (exit code $code)"
node dist/demo/explain.js "$REPORT_DIR/report.json"
echo

# ---------------------------------------------------------------------------------------------------
# Part 2: the same check, continuously. NATS, the controller and one agent in each environment; the
# leak alerts a webhook receiver, then a firewall rule closes it and the resolve arrives.
# ---------------------------------------------------------------------------------------------------
say "Part 2: the fleet. nats-server with deploy/nats/nats-server.conf, the controller, agents in prod and staging"
for user in CONTROLLER AUDITOR PROD STAGING DEV MGMT; do export "BULKHEAD_PW_$user=demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"; done
printf 'controller:%s\n' "$BULKHEAD_PW_CONTROLLER" >"$work/controller.creds"
printf 'auditor:%s\n' "$BULKHEAD_PW_AUDITOR" >"$work/auditor.creds"
printf 'agent-prod:%s\n' "$BULKHEAD_PW_PROD" >"$work/prod.creds"
printf 'agent-staging:%s\n' "$BULKHEAD_PW_STAGING" >"$work/staging.creds"
chmod 600 "$work"/*.creds
# The webhook's signing secret in the Standard Webhooks format, new on every run. Only the controller and the
# receiver get it, in their environment: the plan names the variable, never the value.
webhook_secret="whsec_$(head -c 32 /dev/urandom | base64 -w0)"

nats-server -c deploy/nats/nats-server.conf -a 127.0.0.1 -p "$NATS_PORT" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$NATS_PORT" "nats-server"
NATS=nats://127.0.0.1:$NATS_PORT

BULKHEAD_DEMO_WEBHOOK_SECRET="$webhook_secret" node dist/demo/receiver.js "$RECEIVER_PORT" >"$work/receiver.log" 2>"$work/receiver.err" &
pids+=($!)
wait_port 127.0.0.1 "$RECEIVER_PORT" "the webhook receiver"

# The console receiver prints on the controller's stdout: kept in a file and shown below, in order.
BULKHEAD_DEMO_WEBHOOK_SECRET="$webhook_secret" node dist/cli/bulkhead.js controller --plan "$FLEET_PLAN" --nats "$NATS" \
  --nats-creds "$work/controller.creds" --listen "$API" >"$work/console.log" 2>"$work/controller.log" &
pids+=($!)
wait_port 127.0.0.1 "${API#*:}" "the controller's API"

# The staging agent runs as `nobody` so that a firewall rule can close staging's path by socket owner (meta skuid)
# while the prod agent, root on this same host, keeps reaching its own database. setpriv execs in place: $! is the
# agent's own pid.
as_staging=()
staging_user=$(id -un)
if can_close_leak; then
  as_staging=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups --)
  staging_user=nobody
  chmod 755 "$work"
  mkdir -p "$work/agent-staging"
  chown nobody: "$work/agent-staging" "$work/staging.creds"
fi
node dist/cli/bulkhead.js agent --env prod --name prod-1 --plan "$FLEET_PLAN" --nats "$NATS" \
  --nats-creds "$work/prod.creds" --state-dir "$work/agent-prod" 2>"$work/agent-prod.log" &
pids+=($!)
"${as_staging[@]}" node dist/cli/bulkhead.js agent --env staging --name staging-1 --plan "$FLEET_PLAN" --nats "$NATS" \
  --nats-creds "$work/staging.creds" --state-dir "$work/agent-staging" 2>"$work/agent-staging.log" &
pids+=($!)
echo "  nats-server $NATS, controller API http://$API (state in JetStream KV)"
echo "  agents prod-1 (user $(id -un)) and staging-1 (user $staging_user)"
echo "  webhook receiver http://127.0.0.1:$RECEIVER_PORT/ (demo/receiver.ts; checks signatures with this run's secret)"
echo "  plan $FLEET_PLAN: every 5 s each agent probes the other environment; staging can open prod's database"
echo

shown_webhook=0
shown_console=0
# show_new FILE SHOWN_VAR TITLE: the lines FILE gained since the last call, indented under TITLE.
show_new() {
  local total
  total=$(wc -l <"$1")
  if [ "$total" -gt "${!2}" ]; then
    echo "  $3"
    sed -n "$((${!2} + 1)),${total}p" "$1" | sed 's/^/    /'
    printf -v "$2" '%s' "$total"
  fi
}
show_receivers() {
  show_new "$work/receiver.log" shown_webhook "webhook receiver (demo/receiver.ts) printed:"
  show_new "$work/console.log" shown_console "console receiver (the controller's stdout) printed:"
}
# wait_receiver WORD SECONDS: until the webhook receiver has printed a line whose word after the time stamp is WORD.
wait_receiver() {
  local deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do
    grep -q "^[^ ]* $1 " "$work/receiver.log" && return 0
    sleep 0.2
  done
  return 1
}
# What the controller says of prod-db now: staging's path and prod's own control.
prod_db_paths() {
  node -e '
    fetch(process.argv[1] + "/v1/paths").then((r) => r.json()).then(({ paths }) => {
      for (const p of paths.filter((p) => p.target === "prod-db"))
        console.log(`  ${p.state.padEnd(8)} ${p.expectation.padEnd(7)} ${p.key}  (last: ${p.last.outcome} by ${p.last.agent})`);
    });' "http://$API"
}

say "Waiting for the controller to see the leak (GET http://$API/v1/findings?status=firing)"
node dist/demo/watch.js "http://$API" 40
echo
say "Waiting for the alert to reach the receivers (group_wait 1s)"
if ! wait_receiver FIRING 20; then
  echo "error: the webhook receiver got no alert within 20 s; see $work/controller.log and $work/receiver.err" >&2
  show_receivers
  exit 1
fi
sleep 0.5 # the console line and the webhook request leave together: let both land
show_receivers
echo
say "The same notification from someone without the secret is refused"
node -e '
  const { createHmac, randomBytes } = require("node:crypto");
  const body = JSON.stringify({ type: "bulkhead.notification", timestamp: new Date().toISOString(), data: { notifications: [] } });
  const id = "msg_forged", ts = String(Math.floor(Date.now() / 1000));
  const signature = "v1," + createHmac("sha256", randomBytes(32)).update(`${id}.${ts}.${body}`).digest("base64");
  fetch(process.argv[1], { method: "POST", body, headers: { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": signature } })
    .then((r) => console.log(`  POST signed with a random key: HTTP ${r.status}`));' "http://127.0.0.1:$RECEIVER_PORT/bulkhead"
sleep 0.2
show_receivers
echo

say "Asking the whole fleet to run now: bulkhead audit --plan $FLEET_PLAN --nats $NATS --nats-creds auditor.creds"
echo
set +e
node dist/cli/bulkhead.js audit --plan "$FLEET_PLAN" --nats "$NATS" --nats-creds "$work/auditor.creds" --deadline 15s
code=$?
set -e
echo
echo "Fleet audit exit code $code (1: violations)."
echo

if ! can_close_leak; then
  say "Closing the leak: SKIPPED"
  echo "  This step needs root, nft (Debian package nftables) and setpriv: it runs the staging agent as another"
  echo "  user and adds an nftables rule for that user. Without them the leak stays open and no resolve is sent."
  echo "Logs of every process: $work (removed on exit)."
  exit 0
fi

say "Closing the leak: an nftables rule drops staging's connections to prod's PostgreSQL"
nobody_uid=$(id -u nobody)
printf '%s\n' \
  "table inet $NFT_TABLE {" \
  "  chain output {" \
  "    type filter hook output priority 0; policy accept;" \
  "    meta skuid $nobody_uid ip daddr 127.0.10.1 tcp dport 15432 drop comment \"staging-1 may not reach prod-db\"" \
  "  }" \
  "}" | nft -f -
nft list table inet "$NFT_TABLE" | sed 's/^/  /'
echo "  prod-1 runs as $(id -un): the rule does not match it, so prod's own control keeps passing."
closed_at=$SECONDS
echo
say "Waiting for the resolve (2 blocked cycles from staging-1, then group_interval 2s)"
if ! wait_receiver RESOLVED 40; then
  echo "error: no resolve reached the webhook receiver within 40 s; see $work/controller.log" >&2
  show_receivers
  exit 1
fi
sleep 0.5
echo "  after $((SECONDS - closed_at)) s:"
show_receivers
echo
echo "Paths to prod-db now (GET /v1/paths):"
prod_db_paths
echo

say "What happened"
echo "  1. staging-1 opened prod's PostgreSQL at 127.0.10.1:15432. The policy denies staging → prod, so the controller"
echo "     fired a violation and, after group_wait, notified both receivers. The webhook request was signed with"
echo "     HMAC-SHA256 over \"id.timestamp.body\"; the receiver checked it with the shared secret (a bad one gets 401)."
echo "  2. The nftables rule drops packets from uid nobody (the staging agent) to that port: staging-1's probe is now"
echo "     blocked, while prod-1 still reaches the database, so prod's control passes. After resolve_after = 2 blocked"
echo "     cycles from staging-1 the controller resolved the finding and sent RESOLVED with the same dedup key: PagerDuty"
echo "     or a ticket system closes the very incident it opened."
echo "  The table inet $NFT_TABLE and every process are removed on exit. Logs: $work (removed on exit)."
exit 0
