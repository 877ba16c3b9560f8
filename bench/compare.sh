#!/usr/bin/env bash
# hotnic webhook against the limit server (the same TLS + HTTP stack answering a constant
# "allowed"), side by side on this machine: issue 12's ratio.
#
#   bench/compare.sh                  # release build; 5 rounds of 10 s; then 60 s open loop
#   bench/compare.sh --smoke          # CI: debug build, about 10 s, every answer checked, no speed
#
#   bench/compare.sh --floor          # the decode floor instead of hotnic: the limit server
#                                     # reading what hotnic reads (--read view), answering the same
#
# Options: --rounds N (5)  --seconds S (10)  --connections C (25)  --warmup S (1)
#          --open-seconds S (60; 0: none)  --open-rate R (2000)  --open-review NAME (mix)
#          --debug | --release (default: release; --smoke: debug)  --keep (keep logs and certs)
#
# Both servers run with the deployed arguments (manifests/base/webhook-deployment.yaml:
# --mac-range, --mac-scope=cluster, --default-capacity=4, --log-format=json, RUST_LOG unset so
# the level is info) except: --dev certificates made in a temporary directory, the in-memory
# allocator (--dev's; there is no API server here), loopback listeners on free ports, and
# --shutdown-delay=0s so that stopping does not wait. Their logs go to files, one line per review
# for hotnic as deployed.
#
# A round runs examples/loadgen.rs (closed loop, every answer checked) against hotnic (A) and the
# limit server (B), A B, for the 4-NIC create and then for the mix; both servers start once and
# stay up. Then each server gets one open-loop run at --open-rate. Prints every run, then the
# median rps, p50, p99 and server CPU per review of each, and the median of the rounds' ratios
# hotnic/limit. Exits non-zero if any answer was wrong or failed.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 seconds=10 connections=25 warmup=1
open_seconds=60 open_rate=2000 open_review=mix
profile=release keep=0 floor=0
# --smoke (CI): correctness only, short runs, few connections, the debug build `cargo test`
# already made; options given with it still win.
for a in "$@"; do
  if [ "$a" = --smoke ]; then
    rounds=1 seconds=1 warmup=0.2 connections=4 open_seconds=1 open_rate=200 profile=debug
  fi
done
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) ;;
    --rounds) rounds=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --connections) connections=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --open-seconds) open_seconds=$2; shift ;;
    --open-rate) open_rate=$2; shift ;;
    --open-review) open_review=$2; shift ;;
    --debug) profile=debug ;;
    --release) profile=release ;;
    --keep) keep=1 ;;
    --floor) floor=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$rounds" in ''|*[!0-9]*|0) echo "compare.sh: --rounds must be a positive integer" >&2; exit 2 ;; esac

if [ "$profile" = release ]; then
  cargo build --locked --release --bin hotnic --example loadgen --example limit_server
  bin=target/release
else
  cargo build --locked --bin hotnic --example loadgen --example limit_server
  bin=target/debug
fi
hotnic=$bin/hotnic limit=$bin/examples/limit_server loadgen=$bin/examples/loadgen

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then echo "kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The deployed webhook arguments, less what cannot apply here (see above).
args=(--dev --dev-certs-dir "$work/certs" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
      --mac-range=02:00:00:00:00:00-02:ff:ff:ff:ff:ff --mac-scope=cluster --default-capacity=4
      --log-format=json --shutdown-delay=0s)

# start NAME CMD...: runs the server with its log in $work/NAME.log and sets NAME_pid, NAME_addr
# from its "serving" log line.
start() {
  local name=$1; shift
  env -u RUST_LOG "$@" 2>>"$work/$name.log" &
  local pid=$!
  pids+=("$pid")
  local addr=""
  for _ in $(seq 100); do
    addr=$(grep -a -o '"addr":"[^"]*"' "$work/$name.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    echo "compare.sh: $name did not start:" >&2
    tail -20 "$work/$name.log" >&2
    exit 1
  fi
  printf -v "${name}_pid" %s "$pid"
  printf -v "${name}_addr" %s "$addr"
}

# Server A is hotnic, or with --floor the limit server decoding each review as hotnic does (its
# name in the output: "floor"); B is the limit server.
a=hotnic
if [ "$floor" = 1 ]; then
  a=floor
  start hotnic "$limit" "${args[@]}" --read view   # makes the certificates
else
  start hotnic "$hotnic" webhook "${args[@]}"   # makes the certificates
fi
start limit "$limit" "${args[@]}"              # reuses them

# shown SERVER: the name printed for a server slot (hotnic's slot is "floor" with --floor).
shown() { if [ "$1" = hotnic ]; then echo "$a"; else echo "$1"; fi; }

# run SERVER LABEL LOADGEN-ARGS...: one loadgen run; prints its line, appends its RESULT line to
# $work/results as "SERVER LABEL key=value...". The server's log restarts with each run (disk).
failures=0
run() {
  local server=$1 label=$2; shift 2
  local pid_var=${server}_pid addr_var=${server}_addr expect=hotnic out
  [ "$server" = limit ] || [ "$floor" = 1 ] && expect=constant
  : >"$work/$server.log"
  if out=$("$loadgen" --addr "${!addr_var}" --ca "$work/certs/ca.crt" --server-pid "${!pid_var}" \
      --connections "$connections" --warmup "$warmup" --expect "$expect" --kv "$@" 2>"$work/err"); then
    :
  else
    failures=$((failures + 1))
  fi
  printf '%-7s %-8s %s\n' "$(shown "$server")" "$label" "$(grep -v '^RESULT' <<<"$out")"
  sed 's/^/    /' "$work/err" >&2
  grep '^RESULT' <<<"$out" | sed "s/^RESULT/$server $label/" >>"$work/results" || true
}

if [ "$floor" = 1 ]; then
  echo "floor: $limit --read view (pid $hotnic_pid, $hotnic_addr) vs limit server $limit (pid $limit_pid, $limit_addr)"
else
  echo "hotnic $hotnic (pid $hotnic_pid, $hotnic_addr) vs limit server $limit (pid $limit_pid, $limit_addr)"
fi
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $profile build, $rounds rounds of ${seconds} s (+${warmup} s warm-up), $connections connections"
: >"$work/results"
for i in $(seq "$rounds"); do
  for review in create4 mix; do
    run hotnic "$review" --review "$review" --seconds "$seconds"
    run limit "$review" --review "$review" --seconds "$seconds"
  done
done
if [ "$open_seconds" != 0 ]; then
  for server in hotnic limit; do
    run "$server" open --review "$open_review" --rate "$open_rate" --seconds "$open_seconds"
  done
fi

# field FILE KEY: the KEY=value values of the lines in FILE.
field() { grep -o " $2=[^ ]*" "$1" | cut -d= -f2; }
# median FORMAT: the median of the numbers on stdin ("-" if none, "-" values skipped).
median() {
  grep -v '^-*$' | sort -g | awk -v f="$1" '{ v[NR] = $1 }
    END { if (NR == 0) print "-"; else printf f "\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
printf '%-8s %-7s %9s %8s %8s %9s   %s\n' review server "rps" "p50 ms" "p99 ms" "cpu µs" "(medians of $rounds rounds)"
for review in create4 mix; do
  for server in hotnic limit; do
    grep "^$server $review " "$work/results" >"$work/sel" || true
    printf '%-8s %-7s %9s %8s %8s %9s\n' "$review" "$(shown "$server")" \
      "$(field "$work/sel" rps | median %.0f)" "$(field "$work/sel" p50_ms | median %.3f)" \
      "$(field "$work/sel" p99_ms | median %.3f)" "$(field "$work/sel" server_cpu_us | median %.0f)"
  done
  # The ratio of each round (hotnic's run and the limit server's right after it), then the median.
  ratios=$(paste <(grep "^hotnic $review " "$work/results" | field /dev/stdin rps) \
                 <(grep "^limit $review " "$work/results" | field /dev/stdin rps) |
           awk '$2 > 0 { printf "%.3f\n", $1 / $2 }')
  echo "$review ratio $a/limit: median $(median %.3f <<<"$ratios") (rounds: $(tr '\n' ' ' <<<"$ratios"))"
done
if [ "$open_seconds" != 0 ]; then
  for server in hotnic limit; do
    if grep "^$server open " "$work/results" >"$work/sel"; then
      echo "open loop $open_review at $open_rate rps for ${open_seconds} s, $(shown "$server"): p50 $(field "$work/sel" p50_ms) ms," \
        "p99 $(field "$work/sel" p99_ms) ms, p99.9 $(field "$work/sel" p999_ms) ms, max $(field "$work/sel" max_ms) ms," \
        "errors $(( $(field "$work/sel" wrong) + $(field "$work/sel" failed) ))"
    else
      echo "open loop $open_review at $open_rate rps, $(shown "$server"): no result"
    fi
  done
fi
if [ "$failures" -gt 0 ]; then
  echo "compare.sh: $failures runs had wrong or failed answers (see above)" >&2
  exit 1
fi
echo "every answer checked: all right"
