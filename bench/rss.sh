#!/usr/bin/env bash
# Memory under load: the webhook's RSS (VmRSS from /proc) after 10,000 mixed reviews and after
# 1,000,000, with the deployed arguments (--dev certificates and the in-memory allocator, JSON
# logs to a file). examples/loadgen.rs drives it, checking every answer: first 10,000 reviews
# open-loop (10,000/s for 1 s), then closed-loop runs until a million in total.
#
#   bench/rss.sh [TOTAL]          # TOTAL defaults to 1000000; release build first
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-1000000}
port=${PORT:-18443}
admin=${ADMIN:-18080}
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

target/release/hotnic webhook --dev --dev-certs-dir "$work/certs" --log-format json \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
load() {
    target/release/examples/loadgen --addr "127.0.0.1:$port" --ca "$work/certs/ca.crt" \
        --review mix --warmup 0 "$@" | tee -a "$work/loadgen.out" >&2
}
ok() { grep -o '([0-9]* ok' "$work/loadgen.out" | tr -dc '0-9\n' | paste -sd+ | bc; }

echo "RSS at start: $(rss) kB"
load --rate 10000 --seconds 1 >/dev/null
done_=$(ok)
echo "RSS after $done_ reviews: $(rss) kB"
while [ "$(ok)" -lt "$total" ]; do
    load --seconds 30 >/dev/null
done
echo "RSS after $(ok) reviews: $(rss) kB"
