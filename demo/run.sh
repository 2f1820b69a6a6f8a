#!/usr/bin/env bash
# `make demo`: start a small "prod" (PostgreSQL, Redis, an HTTPS status API) and "staging" (a web page and
# its own DNS resolver) on loopback addresses, run a real `bulkhead audit --from staging` against them with
# examples/demo.yaml, explain the result, and stop everything it started (by pid), also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAN=examples/demo.yaml
REPORT_DIR=.bulkhead/demo-report
work=$(mktemp -d /tmp/bulkhead-demo.XXXXXX)
pids=()

cleanup() {
  # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for clients.
  for pid in "${pids[@]}"; do
    if [ "$pid" = "${pg_pid:-}" ]; then kill -INT "$pid" 2>/dev/null || true; else kill "$pid" 2>/dev/null || true; fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\033[1m%s\033[0m\n' "$*"; }

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
for hp in 127.0.10.1:15432 127.0.10.1:16379 127.0.10.1:18443 127.0.20.1:18080; do
  if port_busy "${hp%:*}" "${hp#*:}"; then echo "error: $hp is already in use; the demo needs it free" >&2; exit 1; fi
done

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
# Part 2: the same check, continuously. NATS, the controller and one agent in each environment.
# ---------------------------------------------------------------------------------------------------
FLEET_PLAN=examples/fleet.yaml
NATS_PORT=14222
API=127.0.0.1:19470
for hp in 127.0.0.1:$NATS_PORT $API; do
  if port_busy "${hp%:*}" "${hp#*:}"; then echo "error: $hp is already in use; the demo needs it free" >&2; exit 1; fi
done
say "Part 2: the fleet. nats-server with deploy/nats/nats-server.conf, the controller, agents in prod and staging"
for user in CONTROLLER AUDITOR PROD STAGING DEV MGMT; do export "BULKHEAD_PW_$user=demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"; done
printf 'controller:%s\n' "$BULKHEAD_PW_CONTROLLER" >"$work/controller.creds"
printf 'auditor:%s\n' "$BULKHEAD_PW_AUDITOR" >"$work/auditor.creds"
printf 'agent-prod:%s\n' "$BULKHEAD_PW_PROD" >"$work/prod.creds"
printf 'agent-staging:%s\n' "$BULKHEAD_PW_STAGING" >"$work/staging.creds"
chmod 600 "$work"/*.creds
nats-server -c deploy/nats/nats-server.conf -a 127.0.0.1 -p "$NATS_PORT" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$NATS_PORT" "nats-server"
NATS=nats://127.0.0.1:$NATS_PORT
node dist/cli/bulkhead.js controller --plan "$FLEET_PLAN" --nats "$NATS" --nats-creds "$work/controller.creds" --listen "$API" 2>"$work/controller.log" &
pids+=($!)
wait_port 127.0.0.1 "${API#*:}" "the controller's API"
for env in prod staging; do
  node dist/cli/bulkhead.js agent --env "$env" --name "$env-1" --plan "$FLEET_PLAN" --nats "$NATS" \
    --nats-creds "$work/$env.creds" --state-dir "$work/agent-$env" 2>"$work/agent-$env.log" &
  pids+=($!)
done
echo "  nats-server $NATS, controller API http://$API (state in JetStream KV), agents prod-1 and staging-1"
echo "  plan $FLEET_PLAN: every 5 s each agent probes the other environment; staging can open prod's database"
echo
say "Waiting for the controller to see the leak (GET http://$API/v1/findings?status=firing)"
node dist/demo/watch.js "http://$API" 40
echo
say "Asking the whole fleet to run now: bulkhead audit --plan $FLEET_PLAN --nats $NATS --nats-creds auditor.creds"
echo
set +e
node dist/cli/bulkhead.js audit --plan "$FLEET_PLAN" --nats "$NATS" --nats-creds "$work/auditor.creds" --deadline 15s
code=$?
set -e
echo
echo "Fleet audit exit code $code (1: violations). Logs of every process: $work (removed on exit)."
exit 0
