#!/usr/bin/env bash
# The gateway load benchmark (issue 7): one fast local upstream, the same load tool, direct and
# through aigw in the same run, one table.
#
#   bash bench/gateway.sh [--duration SECS] [--conns N] [--threads N] [--streams N]
#                         [--rounds N] [--with-litellm] [--with-criterion] [--results FILE]
#                         [--quick] [--with-replicas] [--with-guard] [--with-queue]
#
# Upstreams (127.0.0.1 only): nginx (Debian package) answers a fixed chat completion;
# examples/bench_upstream.rs answers a fixed SSE stream chunk by chunk (N events, one every few
# ms). An nginx reverse-proxy hop (keepalive pool, no buffering), in a second nginx process,
# runs beside aigw as the reference row, and LiteLLM's proxy too with --with-litellm.
# Load: wrk (Debian package) for concurrency-1 latency and saturation throughput;
# examples/bench_client.rs for streaming time-to-first-byte, chunk delivery and 1,000 open streams.
# Memory: VmHWM / VmRSS of the aigw process from /proc; CPU per request at saturation: user +
# system time from /proc/PID/stat of each server's processes over its wrk run.
# --with-replicas: two aigw replicas sharing state through redis-server (--state) behind an
# nginx load balancer vs one replica behind the same nginx, and the Redis round trips each
# request made on the hot path (from aigw_state_request_path_round_trips_total).
# --with-guard: aigw running ngrok's BYOK token guard (set-vars + custom-response) before
# ai-gateway vs aigw without it, interleaved saturation runs (target: >= 0.95 of the throughput).
# --with-queue: two SSE upstreams limited with --max-in-flight 2 each, 16 clients: the wait
# in the queue (x-aigw-queue-ms) p50/p99 and the 429s.
# Installs wrk and nginx with apt-get only when missing; kills everything it started and removes
# its temp dir on exit, error or Ctrl-C. Nothing here asserts on time: it measures and prints.
set -euo pipefail

DURATION=10        # seconds per wrk run (concurrency 1: in total, split into ROUNDS)
CONNS=32           # wrk connections at saturation
THREADS=2          # wrk threads at saturation
STREAMS=1000       # concurrent open streams
TTFB_N=300         # sequential streams for TTFB
HOLD_WRK=5         # seconds per c=1 wrk run while the streams are open
ROUNDS=5           # interleaved rounds the concurrency-1 time is split into
WITH_LITELLM=0
WITH_CRITERION=0
WITH_REPLICAS=0
WITH_GUARD=0
WITH_QUEUE=0
RESULTS=""
ARGS="$*"

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --streams) STREAMS=$2; shift 2 ;;
        --with-litellm) WITH_LITELLM=1; shift ;;
        --with-criterion) WITH_CRITERION=1; shift ;;
        --with-replicas) WITH_REPLICAS=1; shift ;;
        --with-guard) WITH_GUARD=1; shift ;;
        --with-queue) WITH_QUEUE=1; shift ;;
        --results) RESULTS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --quick) DURATION=3; TTFB_N=100; HOLD_WRK=2; ROUNDS=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "gateway.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${AIGW_BENCH_CACHE:-$HOME/.cache/aigw-bench}
log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- what it needs ----------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
[ "$WITH_REPLICAS" = 0 ] || command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (apt-get)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${need[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "building aigw and the bench helpers (release)"
(cd "$ROOT" && cargo build --release --quiet --bin aigw --example bench_upstream --example bench_client)
AIGW=$TARGET/release/aigw
UPSTREAM=$TARGET/release/examples/bench_upstream
CLIENT=$TARGET/release/examples/bench_client

# 1,000 streams through a proxy is ~3,000 sockets in this shell's children.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- start-up and clean-up ---------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/aigw-bench.XXXXXX")
PIDS=()
CUR=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -z "$CUR" ] || kill -TERM "$CUR" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        # Every helper runs in its own session (setsid): end its whole group, then the process.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM

# run CMD...: runs a measuring command in the background and waits for it, so that a Ctrl-C is
# handled at once (bash runs a trap only after a foreground command ends, and wrk catches SIGINT
# to print its figures); cleanup() ends it.
run() {
    "$@" &
    CUR=$!
    local rc=0
    wait "$CUR" || rc=$?
    CUR=""
    return "$rc"
}
# start NAME CMD...: runs CMD in its own session, output to $TMP/NAME.log; sets $LAST_PID.
start() {
    local name=$1; shift
    setsid "$@" >"$TMP/$name.log" 2>&1 < /dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() { # URL [SECONDS] [METHOD]
    local url=$1 secs=${2:-20}
    for _ in $(seq $((secs * 10))); do
        curl -s -o /dev/null -m 1 "$url" && return 0
        sleep 0.1
    done
    return 1
}
rss_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# cpu_ticks SID: user + system clock ticks so far of every process in session SID (nginx's
# workers, LiteLLM's interpreter), all threads included. (comm is the 2nd field: none of these
# has a space in it.)
cpu_ticks() {
    local t=0 p
    for p in $(ps -o pid= -s "$1" 2>/dev/null); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

P_NGX=$(free_port); P_HOP=$(free_port); P_HOPSSE=$(free_port); P_SSE=$(free_port)
P_GW=$(free_port); P_LL=$(free_port)

BODY='{"model":"bench:bench","messages":[{"role":"user","content":"Say hello."}]}'
CHAT_JSON=$(sed -n 's/^pub const CHAT_JSON: &str = r#"\(.*\)"#;$/\1/p' "$ROOT/examples/bench_upstream.rs")
[ -n "$CHAT_JSON" ] || { echo "gateway.sh: cannot read CHAT_JSON from bench_upstream.rs" >&2; exit 1; }

# nginx_conf DIR SERVERS: an nginx configuration of its own (pid, logs, temp paths in DIR).
nginx_conf() {
    mkdir -p "$1"
    cat <<EOF
worker_processes auto;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 10000000;
    tcp_nodelay on;
$2
}
EOF
}
# The upstream: a fixed chat completion.
nginx_conf "$TMP/nginx" "
    server {
        listen 127.0.0.1:$P_NGX backlog=4096;
        location / { default_type application/json; return 200 '$CHAT_JSON'; }
    }" >"$TMP/nginx.conf"
# The reference: a plain reverse-proxy hop (keepalive pool, no buffering, no parsing), in its own
# nginx as aigw is its own process. (Inside the upstream's nginx, a hop can hand a request to
# the upstream within one worker, with no process wake-up, and looks cheaper than any proxy.)
nginx_conf "$TMP/hop" "
    upstream json { server 127.0.0.1:$P_NGX; keepalive 64; }
    upstream sse { server 127.0.0.1:$P_SSE; keepalive 64; }
    server {
        listen 127.0.0.1:$P_HOP backlog=4096;
        location / { proxy_pass http://json; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }
    }
    server {
        listen 127.0.0.1:$P_HOPSSE backlog=4096;
        location / { proxy_pass http://sse; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }
    }" >"$TMP/hop.conf"
cat >"$TMP/policy.yaml" <<EOF
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: bench
          base_url: "http://127.0.0.1:$P_NGX/v1"
          models:
            - id: bench
        - id: benchsse
          base_url: "http://127.0.0.1:$P_SSE/v1"
          models:
            - id: bench
EOF
cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
EOF

log "starting nginx (upstream :$P_NGX), a second nginx (proxy hop :$P_HOP), bench_upstream (SSE :$P_SSE), aigw (:$P_GW)"
start nginx "$NGINX" -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;'
NGX_PID=$LAST_PID
start hop "$NGINX" -e "$TMP/hop/error.log" -p "$TMP/hop" -c "$TMP/hop.conf" -g 'daemon off;'
HOP_PID=$LAST_PID
start upstream "$UPSTREAM" --port "$P_SSE" --threads 1 --chunks 10 --delay-ms 2
start aigw "$AIGW" serve --policy "$TMP/policy.yaml" --listen "127.0.0.1:$P_GW" --no-reload --color never
AIGW_PID=$LAST_PID
wait_http "http://127.0.0.1:$P_NGX/" || { cat "$TMP/nginx.log" "$TMP/nginx/error.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$P_HOP/" || { cat "$TMP/hop.log" "$TMP/hop/error.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$P_SSE/v1/models" || { cat "$TMP/upstream.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$P_GW/healthz" || { cat "$TMP/aigw.log" >&2; exit 1; }
check=$(curl -s -X POST -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$P_GW/v1/chat/completions")
[ "$check" = "$CHAT_JSON" ] || { echo "gateway.sh: aigw did not relay the upstream's answer: $check" >&2; exit 1; }
IDLE_RSS=$(rss_kb "$AIGW_PID" VmRSS)

HAVE_LL=0
if [ "$WITH_LITELLM" = 1 ]; then
    LL=$CACHE/litellm-venv/bin/litellm
    if [ ! -x "$LL" ]; then
        log "installing LiteLLM's proxy into $CACHE/litellm-venv (pip, at most 10 minutes)"
        mkdir -p "$CACHE"
        { python3 -m venv "$CACHE/litellm-venv" &&
            timeout 600 "$CACHE/litellm-venv/bin/pip" install -q 'litellm[proxy]'; } >"$TMP/pip.log" 2>&1 ||
            { log "LiteLLM could not be installed; pip's last lines:"; tail -3 "$TMP/pip.log" >&2; }
    fi
    if [ -x "$LL" ]; then
        cat >"$TMP/litellm.yaml" <<EOF
model_list:
  - model_name: "bench:bench"
    litellm_params: { model: openai/bench, api_base: "http://127.0.0.1:$P_NGX/v1", api_key: sk-bench }
  - model_name: "benchsse:bench"
    litellm_params: { model: openai/bench, api_base: "http://127.0.0.1:$P_SSE/v1", api_key: sk-bench }
litellm_settings: { telemetry: false, drop_params: true }
EOF
        log "starting LiteLLM's proxy (:$P_LL, 1 worker)"
        LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR NO_PROXY='*' \
            LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true \
            start litellm "$LL" --config "$TMP/litellm.yaml" --host 127.0.0.1 --port "$P_LL" --num_workers 1
        LL_PID=$LAST_PID
        if wait_http "http://127.0.0.1:$P_LL/health/liveliness" 120 &&
            curl -sf -m 10 -X POST -H 'Content-Type: application/json' -d "$BODY" \
                "http://127.0.0.1:$P_LL/v1/chat/completions" >/dev/null; then
            HAVE_LL=1
        else
            log "LiteLLM did not start or answer; its column is skipped (log tail follows)"
            tail -5 "$TMP/litellm.log" >&2 || true
        fi
    fi
fi

# --- measuring -----------------------------------------------------------------------------
# to_us VALUE_WITH_UNIT: wrk prints 45.00us, 1.20ms, 2.00s.
to_us() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) m=1; else if (v ~ /ms$/) m=1000; else if (v ~ /s$/) m=1000000; else m=1; printf "%d", n*m + 0.5 }'; }
# wrk_run NAME URL THREADS CONNS SECS: writes $TMP/wrk-NAME.txt; sets P50 P99 RPS ERRS.
wrk_run() {
    local name=$1 url=$2 t=$3 c=$4 d=$5 out="$TMP/wrk-$1.txt"
    run wrk -t"$t" -c"$c" -d"${d}s" --latency -s "$TMP/post.lua" "$url" >"$out" 2>&1 || true
    P50=$(to_us "$(awk '$1=="50%" {print $2}' "$out")")
    P99=$(to_us "$(awk '$1=="99%" {print $2}' "$out")")
    RPS=$(awk '$1=="Requests/sec:" {printf "%d", $2}' "$out")
    ERRS=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ')
    [ -z "$ERRS" ] || log "wrk $name: $ERRS"
    log "wrk $name (-t$t -c$c ${d}s): p50 ${P50}µs p99 ${P99}µs ${RPS} req/s"
}
declare -A R
TARGETS=(direct hop aigw)
declare -A URL=([direct]="http://127.0.0.1:$P_NGX/v1/chat/completions"
                [hop]="http://127.0.0.1:$P_HOP/v1/chat/completions"
                [aigw]="http://127.0.0.1:$P_GW/v1/chat/completions")
declare -A SSE_URL=([direct]="http://127.0.0.1:$P_SSE/v1/chat/completions"
                    [hop]="http://127.0.0.1:$P_HOPSSE/v1/chat/completions"
                    [aigw]="http://127.0.0.1:$P_GW/v1/chat/completions")
if [ "$HAVE_LL" = 1 ]; then
    TARGETS+=(litellm)
    URL[litellm]="http://127.0.0.1:$P_LL/v1/chat/completions"
    SSE_URL[litellm]="http://127.0.0.1:$P_LL/v1/chat/completions"
fi

log "warm-up"
for t in "${TARGETS[@]}"; do wrk_run "warm-$t" "${URL[$t]}" 1 4 2 2>/dev/null; done

# Concurrency 1 in ROUNDS interleaved slices (direct, hop, aigw, direct, …), each figure the
# median over the rounds: a burst of load from elsewhere on the machine then lands on one slice
# of every target instead of on one target's whole run.
ROUND_S=$(( (DURATION + ROUNDS - 1) / ROUNDS ))
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
log "concurrency 1: wrk -t1 -c1, $ROUNDS interleaved rounds of ${ROUND_S}s per target"
declare -A S50 S99 SRPS
for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        wrk_run "c1-$t-$r" "${URL[$t]}" 1 1 "$ROUND_S"
        S50[$t]+="$P50 "; S99[$t]+="$P99 "; SRPS[$t]+="$RPS "
    done
done
for t in "${TARGETS[@]}"; do
    R[c1p50-$t]=$(median <<<"${S50[$t]}"); R[c1p99-$t]=$(median <<<"${S99[$t]}")
    R[c1rps-$t]=$(median <<<"${SRPS[$t]}")
done

# CPU per request at saturation: what the throughput ratio is made of on a machine whose cores
# the load tool, the upstream and the proxy share. "direct" is the upstream nginx alone.
declare -A SID=([direct]=$NGX_PID [hop]=$HOP_PID [aigw]=$AIGW_PID)
[ "$HAVE_LL" = 1 ] && SID[litellm]=$LL_PID
TCK=$(getconf CLK_TCK)
log "saturation: wrk -t$THREADS -c$CONNS -d${DURATION}s"
for t in "${TARGETS[@]}"; do
    before=$(cpu_ticks "${SID[$t]}")
    wrk_run "sat-$t" "${URL[$t]}" "$THREADS" "$CONNS" "$DURATION"
    R[satrps-$t]=$RPS; R[satp99-$t]=$P99
    n=$(awk '/requests in/ { print $1 }' "$TMP/wrk-sat-$t.txt")
    R[cpu-$t]=$(awk -v a="$before" -v b="$(cpu_ticks "${SID[$t]}")" -v n="${n:-0}" -v hz="$TCK" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "–" }')
    [ "$t" = aigw ] && R[rss-load]=$(rss_kb "$AIGW_PID" VmHWM)
done

log "streaming: $TTFB_N sequential streams of 10 events, one every 2 ms"
for t in "${TARGETS[@]}"; do
    model=benchsse:bench
    run "$CLIENT" ttfb --url "${SSE_URL[$t]}" --model "$model" --n "$TTFB_N" --warmup 30 \
        --chunks 10 --delay-ms 2 >"$TMP/ttfb-$t.txt" 2>&1 || true
    line=$(tail -1 "$TMP/ttfb-$t.txt")
    log "ttfb $t: $line"
    for k in ttfb_p50_us ttfb_p99_us lag_p99_us coalesced_reads bad_streams events; do
        R[$k-$t]=$(sed -n "s/.*\b$k=\([0-9]*\).*/\1/p" <<<"$line")
    done
done

HOLD_CHUNKS=$(( (2 * HOLD_WRK + 12) * 2 ))   # events every 500 ms: the streams outlive the wrk runs
log "$STREAMS open streams through aigw ($HOLD_CHUNKS events each, one every 500 ms)"
"$CLIENT" hold --url "${SSE_URL[aigw]}" --model benchsse:bench --streams "$STREAMS" \
    --chunks "$HOLD_CHUNKS" --delay-ms 500 >"$TMP/hold.out" 2>&1 &
HOLD_PID=$!
PIDS+=("$HOLD_PID")
for _ in $(seq 300); do grep -q '^READY' "$TMP/hold.out" && break; sleep 0.1; done
R[hold-ready]=$(grep '^READY' "$TMP/hold.out" || echo "READY open=0 (timed out)")
log "${R[hold-ready]}"
R[hold-rss]=$(rss_kb "$AIGW_PID" VmRSS)
for t in direct aigw; do
    wrk_run "hold-$t" "${URL[$t]}" 1 1 "$HOLD_WRK"
    R[hp50-$t]=$P50; R[hp99-$t]=$P99
done
R[hold-rss2]=$(rss_kb "$AIGW_PID" VmRSS)
R[hold-hwm]=$(rss_kb "$AIGW_PID" VmHWM)
wait "$HOLD_PID" || true
R[hold-done]=$(grep '^DONE' "$TMP/hold.out" || echo "DONE (no summary: $(tail -1 "$TMP/hold.out"))")
log "${R[hold-done]}"
R[rss-final]=$(rss_kb "$AIGW_PID" VmHWM)

# --- the table -----------------------------------------------------------------------------
v() { echo "${R[$1]:-–}"; }
sub() { awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" 'BEGIN { if (a=="" || b=="") print "–"; else printf "%d", a-b }'; }
ratio() { awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" 'BEGIN { if (a=="" || b=="" || b==0) print "–"; else printf "%.2f", a/b }'; }
mb() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k/1024 }'; }
# A negative "added" figure means the direct run was the noisier one: no verdict.
met() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { if (a=="–" || a=="") print "?"; else if (op=="<=" && a+0<0) print "inconclusive (noise)"; else if ((op=="<=" && a+0<=b+0) || (op==">=" && a+0>=b+0)) print "met"; else print "NOT met" }'; }
col() { # metric-key: the value for each target column
    local out="" t
    for t in direct hop aigw litellm; do
        if [[ " ${TARGETS[*]} " == *" $t "* ]]; then out+=" $(v "$1-$t") |"; else out+=" – |"; fi
    done
    echo "$out"
}
added() { # metric: added over direct for each proxy column
    local out=" – |" t
    for t in hop aigw litellm; do
        if [[ " ${TARGETS[*]} " == *" $t "* ]]; then out+=" $(sub "$1-$t" "$1-direct") |"; else out+=" – |"; fi
    done
    echo "$out"
}
rel() { # metric: proxy / direct for each proxy column
    local out=" 1.00 |" t
    for t in hop aigw litellm; do
        if [[ " ${TARGETS[*]} " == *" $t "* ]]; then out+=" $(ratio "$1-$t" "$1-direct") |"; else out+=" – |"; fi
    done
    echo "$out"
}
A50=$(sub c1p50-aigw c1p50-direct); A99=$(sub c1p99-aigw c1p99-direct)
TR=$(ratio satrps-aigw satrps-direct); T99=$(sub ttfb_p99_us-aigw ttfb_p99_us-direct)
RL=$(mb "${R[rss-load]:-0}"); RH=$(mb "${R[hold-hwm]:-0}")
HA50=$(sub hp50-aigw hp50-direct); HA99=$(sub hp99-aigw hp99-direct)
OPEN=$(sed -n 's/.*open=\([0-9]*\).*/\1/p' <<<"${R[hold-ready]}")
HCOAL=$(sed -n 's/.*complete=[0-9]* failed=0 .*coalesced_reads=\([0-9]*\).*/\1/p' <<<"${R[hold-done]}")
LL_NOTE="LiteLLM: not run (pass --with-litellm to install it into $CACHE and measure it in this run)"
[ "$WITH_LITELLM" = 1 ] && [ "$HAVE_LL" = 0 ] && LL_NOTE="LiteLLM: skipped — it could not be installed or did not start (see the log above)"
[ "$HAVE_LL" = 1 ] && LL_NOTE="LiteLLM: measured in this run (1 worker), same upstream, same load."

TABLE="$TMP/table.md"
{
echo "| metric | direct | nginx hop | aigw | LiteLLM | aigw target | aigw |"
echo "|---|---:|---:|---:|---:|---:|:--|"
echo "| c=1 latency p50 (µs) |$(col c1p50) | |"
echo "| c=1 latency p99 (µs) |$(col c1p99) | |"
echo "| **added latency p50 (µs)** |$(added c1p50) ≤ 50 | $(met "$A50" '<=' 50) |"
echo "| **added latency p99 (µs)** |$(added c1p99) ≤ 100 | $(met "$A99" '<=' 100) |"
echo "| c=1 throughput (req/s) |$(col c1rps) | |"
echo "| saturation throughput (req/s, wrk -t$THREADS -c$CONNS) |$(col satrps) | |"
echo "| **throughput vs direct** |$(rel satrps) ≥ 0.50 | $(met "$TR" '>=' 0.5) |"
echo "| saturation latency p99 (µs) |$(col satp99) | |"
echo "| CPU per request at saturation (µs, user+sys; direct: the upstream alone) |$(col cpu) | |"
echo "| stream TTFB p50 (µs) |$(col ttfb_p50_us) | |"
echo "| stream TTFB p99 (µs) |$(col ttfb_p99_us) | |"
echo "| **stream added TTFB p99 (µs)** |$(added ttfb_p99_us) ≤ 200 | $(met "$T99" '<=' 200) |"
echo "| stream event lag p99 (µs, vs production time) |$(col lag_p99_us) | |"
echo "| stream reads carrying >1 event (of $(v events-direct) events) |$(col coalesced_reads) | |"
echo "| **aigw peak RSS under load (MB)** | | | $RL | | ≤ 30 | $(met "$RL" '<=' 30) |"
echo "| $STREAMS open streams: open through aigw | | | ${OPEN:-0} | | $STREAMS | $(met "${OPEN:-0}" '>=' "$STREAMS") |"
echo "| … c=1 latency p50 / p99 beside them (µs) | ${R[hp50-direct]:-–} / ${R[hp99-direct]:-–} | – | ${R[hp50-aigw]:-–} / ${R[hp99-aigw]:-–} | – | | |"
echo "| … added latency p50 / p99 (µs) | – | – | $HA50 / $HA99 | – | | |"
echo "| **… every event delivered as produced** (reads carrying >1 event, 500 ms apart) | | | ${HCOAL:-–} | | 0 | $(met "${HCOAL:-}" '<=' 0) |"
echo "| **… aigw peak RSS (MB)** | | | $RH | | ≤ 64 | $(met "$RH" '<=' 64) |"
echo
echo "Idle aigw RSS $(mb "$IDLE_RSS") MB. Open streams: ${R[hold-ready]#READY }; at the end: ${R[hold-done]#DONE }."
echo "$LL_NOTE"
} >"$TABLE"

echo
cat "$TABLE"

# --- replicas ------------------------------------------------------------------------------
# replica NAME POLICY: an aigw sharing state through the bench's redis; sets $LAST_PORT.
replica() {
    LAST_PORT=$(free_port)
    start "$1" "$AIGW" serve --policy "$2" --listen "127.0.0.1:$LAST_PORT" --no-reload --color never \
        --state "redis://127.0.0.1:$P_REDIS"
    wait_http "http://127.0.0.1:$LAST_PORT/healthz" || { cat "$TMP/$1.log" >&2; exit 1; }
    for _ in $(seq 100); do
        curl -s "http://127.0.0.1:$LAST_PORT/healthz" | grep -q '"connected":true' && return 0
        sleep 0.1
    done
    echo "gateway.sh: replica $1 did not connect to redis" >&2; cat "$TMP/$1.log" >&2; exit 1
}
# trips PORT...: the replicas' Redis round trips on the request path so far.
trips() {
    local t=0 p
    for p in "$@"; do
        t=$((t + $(curl -s "http://127.0.0.1:$p/metrics" | awk '$1=="aigw_state_request_path_round_trips_total" {print $2}')))
    done
    echo "$t"
}
REP_TABLE="$TMP/replicas.md"
if [ "$WITH_REPLICAS" = 1 ]; then
    P_REDIS=$(free_port); P_LB1=$(free_port); P_LB2=$(free_port); P_LB3=$(free_port)
    log "replicas: redis-server (:$P_REDIS), aigw A and B (--state), nginx in front"
    start redis redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no
    for _ in $(seq 100); do redis-cli -p "$P_REDIS" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    # The same policy behind a rate-limit action, which is the one request-path Redis call.
    { echo "on_http_request:"
      echo "  - actions:"
      echo "      - type: rate-limit"
      echo "        config: { name: bench, algorithm: sliding_window, capacity: 1000000000, rate: 60s, bucket_key: [\"'all'\"] }"
      sed -n '2,$p' "$TMP/policy.yaml"; } >"$TMP/policy-rl.yaml"
    replica rep-a "$TMP/policy.yaml"; PA=$LAST_PORT; PA_PID=$LAST_PID
    replica rep-b "$TMP/policy.yaml"; PB=$LAST_PORT; PB_PID=$LAST_PID
    replica rep-c "$TMP/policy-rl.yaml"; PC=$LAST_PORT; PC_PID=$LAST_PID
    replica rep-d "$TMP/policy-rl.yaml"; PD=$LAST_PORT; PD_PID=$LAST_PID
    nginx_conf "$TMP/lb" "
    upstream one { server 127.0.0.1:$PA; keepalive 64; }
    upstream two { server 127.0.0.1:$PA; server 127.0.0.1:$PB; keepalive 64; }
    upstream tworl { server 127.0.0.1:$PC; server 127.0.0.1:$PD; keepalive 64; }
    server { listen 127.0.0.1:$P_LB1 backlog=4096; location / { proxy_pass http://one; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; } }
    server { listen 127.0.0.1:$P_LB2 backlog=4096; location / { proxy_pass http://two; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; } }
    server { listen 127.0.0.1:$P_LB3 backlog=4096; location / { proxy_pass http://tworl; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; } }" >"$TMP/lb.conf"
    start lb "$NGINX" -e "$TMP/lb/error.log" -p "$TMP/lb" -c "$TMP/lb.conf" -g 'daemon off;'
    LB_PID=$LAST_PID
    wait_http "http://127.0.0.1:$P_LB1/healthz" || { cat "$TMP/lb/error.log" >&2; exit 1; }
    declare -A REP_URL=([one]=$P_LB1 [two]=$P_LB2 [tworl]=$P_LB3)
    declare -A REP_PORTS=([one]="$PA" [two]="$PA $PB" [tworl]="$PC $PD")
    declare -A REP_SIDS=([one]="$PA_PID $LB_PID" [two]="$PA_PID $PB_PID $LB_PID" [tworl]="$PC_PID $PD_PID $LB_PID")
    for k in one two tworl; do
        wrk_run "rep-warm-$k" "http://127.0.0.1:${REP_URL[$k]}/v1/chat/completions" 1 4 2 2>/dev/null
        # shellcheck disable=SC2086
        t0=$(trips ${REP_PORTS[$k]}); c0=0
        for sid in ${REP_SIDS[$k]}; do c0=$((c0 + $(cpu_ticks "$sid"))); done
        wrk_run "rep-$k" "http://127.0.0.1:${REP_URL[$k]}/v1/chat/completions" "$THREADS" "$CONNS" "$DURATION"
        n=$(awk '/requests in/ { print $1 }' "$TMP/wrk-rep-$k.txt")
        c1=0
        for sid in ${REP_SIDS[$k]}; do c1=$((c1 + $(cpu_ticks "$sid"))); done
        # shellcheck disable=SC2086
        t1=$(trips ${REP_PORTS[$k]})
        R[rep-rps-$k]=$RPS; R[rep-p99-$k]=$P99
        # Each scrape of /metrics is a request too: trips() counted one per replica.
        R[rep-trips-$k]=$(awk -v a="$t0" -v b="$t1" -v n="${n:-0}" -v s="$(wc -w <<<"${REP_PORTS[$k]}")" \
            'BEGIN { if (n > 0) { r = (b - a - s) / n; if (r < 0) r = 0; printf "%.3f", r } else print "–" }')
        R[rep-cpu-$k]=$(awk -v a="$c0" -v b="$c1" -v n="${n:-0}" -v hz="$TCK" \
            'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "–" }')
    done
    {
    echo "| behind one nginx (wrk -t$THREADS -c$CONNS) | req/s | p99 (µs) | CPU per request (µs, aigw + nginx) | Redis round trips per request |"
    echo "|---|---:|---:|---:|---:|"
    echo "| one aigw (--state) | ${R[rep-rps-one]:-–} | ${R[rep-p99-one]:-–} | ${R[rep-cpu-one]:-–} | ${R[rep-trips-one]:-–} |"
    echo "| two aigw replicas (--state, shared Redis) | ${R[rep-rps-two]:-–} | ${R[rep-p99-two]:-–} | ${R[rep-cpu-two]:-–} | ${R[rep-trips-two]:-–} |"
    echo "| two replicas, policy with a rate-limit action | ${R[rep-rps-tworl]:-–} | ${R[rep-p99-tworl]:-–} | ${R[rep-cpu-tworl]:-–} | ${R[rep-trips-tworl]:-–} |"
    echo
    echo "Two replicas vs one: $(awk -v a="${R[rep-rps-two]:-0}" -v b="${R[rep-rps-one]:-0}" 'BEGIN { if (b > 0) printf "%.2f×", a/b; else print "–" }') the throughput on $(nproc) cores shared with wrk, nginx and the upstream (more replicas pay off once each has cores of its own). Target for round trips per request without a rate-limit action: 0."
    } >"$REP_TABLE"
    echo
    cat "$REP_TABLE"
fi

# --- the guard ---------------------------------------------------------------------------
GUARD_TABLE="$TMP/guard.md"
if [ "$WITH_GUARD" = 1 ]; then
    P_GUARD=$(free_port)
    { echo "on_http_request:"
      echo "  - actions:"
      echo "      - type: set-vars"
      echo "        config:"
      echo "          vars:"
      echo "            - keys: [\"Bearer team-a-token\", \"Bearer team-b-token\"]"
      echo "  - expressions:"
      echo "      - \"!(getReqHeader('Authorization').exists(h, h in vars.keys))\""
      echo "    actions:"
      echo "      - type: custom-response"
      echo "        config: { status_code: 401, body: unauthorized }"
      sed -n '2,$p' "$TMP/policy.yaml"; } >"$TMP/policy-guard.yaml"
    start aigw-guard "$AIGW" serve --policy "$TMP/policy-guard.yaml" --listen "127.0.0.1:$P_GUARD" --no-reload --color never
    wait_http "http://127.0.0.1:$P_GUARD/healthz" || { cat "$TMP/aigw-guard.log" >&2; exit 1; }
    { cat "$TMP/post.lua"; echo 'wrk.headers["Authorization"] = "Bearer team-b-token"'; } >"$TMP/post-auth.lua"
    denied=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$P_GUARD/v1/chat/completions")
    [ "$denied" = 401 ] || { echo "gateway.sh: the guard let a request without a token through ($denied)" >&2; exit 1; }
    log "guard: interleaved saturation runs, aigw plain vs aigw behind the token guard"
    G_PLAIN=""; G_GUARD=""
    for r in 1 2 3; do
        wrk_run "g-plain-$r" "${URL[aigw]}" "$THREADS" "$CONNS" "$ROUND_S"
        G_PLAIN+="$RPS "
        run wrk -t"$THREADS" -c"$CONNS" -d"${ROUND_S}s" --latency -s "$TMP/post-auth.lua" \
            "http://127.0.0.1:$P_GUARD/v1/chat/completions" >"$TMP/wrk-g-guard-$r.txt" 2>&1 || true
        rps=$(awk '$1=="Requests/sec:" {printf "%d", $2}' "$TMP/wrk-g-guard-$r.txt")
        bad=$(awk '/Non-2xx/ {print $NF}' "$TMP/wrk-g-guard-$r.txt")
        [ -z "$bad" ] || log "guard run $r: $bad non-2xx answers"
        log "wrk guard (-t$THREADS -c$CONNS ${ROUND_S}s): $rps req/s"
        G_GUARD+="$rps "
    done
    GP=$(median <<<"$G_PLAIN"); GG=$(median <<<"$G_GUARD")
    GR=$(awk -v a="$GG" -v b="$GP" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "–" }')
    {
    echo "| saturation (wrk -t$THREADS -c$CONNS, median of 3 interleaved ${ROUND_S}s runs) | req/s |"
    echo "|---|---:|"
    echo "| aigw, ai-gateway only | $GP |"
    echo "| aigw, token guard (set-vars + custom-response) then ai-gateway | $GG |"
    echo "| **guarded / plain** (target ≥ 0.95) | $GR ($(met "$GR" '>=' 0.95)) |"
    } >"$GUARD_TABLE"
    echo; cat "$GUARD_TABLE"
fi

# --- the queue ---------------------------------------------------------------------------
QUEUE_TABLE="$TMP/queue.md"
if [ "$WITH_QUEUE" = 1 ]; then
    P_Q1=$(free_port); P_Q2=$(free_port); P_QGW=$(free_port)
    start q1 "$UPSTREAM" --port "$P_Q1" --threads 1 --chunks 5 --delay-ms 2
    start q2 "$UPSTREAM" --port "$P_Q2" --threads 1 --chunks 5 --delay-ms 2
    cat >"$TMP/policy-queue.yaml" <<EOF
on_http_request:
  - type: ai-gateway
    config:
      only_allow_configured_providers: true
      providers:
        - id: q1
          base_url: "http://127.0.0.1:$P_Q1/v1"
          models:
            - id: bench
        - id: q2
          base_url: "http://127.0.0.1:$P_Q2/v1"
          models:
            - id: bench
EOF
    { wait_http "http://127.0.0.1:$P_Q1/v1/models" && wait_http "http://127.0.0.1:$P_Q2/v1/models"; } || exit 1
    start aigw-queue "$AIGW" serve --policy "$TMP/policy-queue.yaml" --listen "127.0.0.1:$P_QGW" --no-reload \
        --color never --max-in-flight q1=2 --max-in-flight q2=2 --queue-depth 64 --queue-timeout 30s
    wait_http "http://127.0.0.1:$P_QGW/healthz" || { cat "$TMP/aigw-queue.log" >&2; exit 1; }
    cat >"$TMP/queue.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"model":"bench","stream":true,"messages":[{"role":"user","content":"Say hello."}]}'
wrk.headers["Content-Type"] = "application/json"
-- Each wrk thread has its own Lua state: answers are noted there and gathered in done().
local threads = {}
function setup(thread) table.insert(threads, thread) end
waits_s, n429 = "", 0
function response(status, headers, body)
    if status == 429 then n429 = n429 + 1 end
    local q = headers["x-aigw-queue-ms"] or headers["X-Aigw-Queue-Ms"]
    if q then waits_s = waits_s .. q .. "," end
end
function done(summary, latency, requests)
    local waits, r429 = {}, 0
    for _, t in ipairs(threads) do
        r429 = r429 + t:get("n429")
        for v in string.gmatch(t:get("waits_s"), "([^,]+)") do waits[#waits + 1] = tonumber(v) end
    end
    table.sort(waits)
    local function pct(p) if #waits == 0 then return -1 end return waits[math.max(1, math.ceil(#waits * p))] end
    io.write(string.format("QUEUE n=%d p50_ms=%s p99_ms=%s max_ms=%s r429=%d\n", #waits, pct(0.5), pct(0.99), pct(1.0), r429))
end
EOF
    log "queue: 16 clients, two SSE upstreams (5 events, 2 ms apart) limited to 2 in flight each"
    run wrk -t1 -c16 -d"${DURATION}s" --latency -s "$TMP/queue.lua" "http://127.0.0.1:$P_QGW/v1/chat/completions" >"$TMP/wrk-queue.txt" 2>&1 || true
    QL=$(grep '^QUEUE' "$TMP/wrk-queue.txt" || echo "QUEUE (no figures: $(tail -1 "$TMP/wrk-queue.txt"))")
    QRPS=$(awk '$1=="Requests/sec:" {printf "%d", $2}' "$TMP/wrk-queue.txt")
    QP99=$(to_us "$(awk '$1=="99%" {print $2}' "$TMP/wrk-queue.txt")")
    log "$QL, $QRPS req/s"
    qv() { sed -n "s/.*\b$1=\([-0-9.]*\).*/\1/p" <<<"$QL"; }
    {
    echo "| two upstreams, --max-in-flight 2 each, 16 clients (wrk -t1 -c16 ${DURATION}s) | value |"
    echo "|---|---:|"
    echo "| throughput (req/s) | ${QRPS:-–} |"
    echo "| answers carrying x-aigw-queue-ms | $(qv n) |"
    echo "| queue wait p50 / p99 / max (ms) | $(qv p50_ms) / $(qv p99_ms) / $(qv max_ms) |"
    echo "| request latency p99 (µs) | ${QP99:-–} |"
    echo "| 429 (queue full or wait too long) | $(qv r429) |"
    } >"$QUEUE_TABLE"
    echo; cat "$QUEUE_TABLE"
fi

if [ "$WITH_CRITERION" = 1 ]; then
    log "criterion: cargo bench --bench engine / --bench cel -- --quick"
    # Criterion prints a long name on its own line and the figures on the next.
    (cd "$ROOT" && cargo bench --quiet --bench engine -- --quick 2>/dev/null; cargo bench --quiet --bench cel -- --quick 2>/dev/null) |
        awk '/time:/ { n = ($1 == "time:") ? last : $1; sub(/^.*time: */, ""); printf "%-48s %s\n", n, $0 } { last = $1 }' >"$TMP/criterion.txt" || true
    echo; echo "Criterion (--quick):"; echo '```'; cat "$TMP/criterion.txt"; echo '```'
fi

if [ -n "$RESULTS" ]; then
    # Hand-written notes below a `<!-- notes -->` line survive a rerun.
    NOTES=""
    if [ -f "$RESULTS" ] && grep -q '^<!-- notes' "$RESULTS"; then
        NOTES=$(sed -n '/^<!-- notes/,$p' "$RESULTS")
    fi
    {
        echo "# Gateway benchmark results"
        echo
        echo "Written by \`bash bench/gateway.sh $ARGS\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
        echo
        echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, kernel $(uname -r), $(rustc --version), load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
        echo
        cat "$TABLE"
        if [ -s "$GUARD_TABLE" ]; then
            echo; echo "Token guard (\`--with-guard\`):"; echo; cat "$GUARD_TABLE"
        fi
        if [ -s "$QUEUE_TABLE" ]; then
            echo; echo "Queueing (\`--with-queue\`):"; echo; cat "$QUEUE_TABLE"
        fi
        if [ -s "$REP_TABLE" ]; then
            echo; echo "Replicas (\`--with-replicas\`):"; echo; cat "$REP_TABLE"
        fi
        if [ -s "$TMP/criterion.txt" ]; then
            echo; echo "Criterion (\`cargo bench --bench engine|cel -- --quick\`):"; echo; echo '```'; cat "$TMP/criterion.txt"; echo '```'
        fi
        if [ -n "$NOTES" ]; then echo; echo "$NOTES"; fi
    } >"$RESULTS"
    log "wrote $RESULTS"
fi
