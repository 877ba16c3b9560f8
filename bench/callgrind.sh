#!/usr/bin/env bash
# Instructions per review, whole request (TLS record, HTTP, routing, policy, answer, log line),
# counted by valgrind's callgrind: machine-independent, unlike a timing.
#
#   bench/callgrind.sh [SERVER-BINARY [ARGS...]]
#
# Default server: target/release/hotnic webhook --dev --log-format json (the deployed logging).
# For the limit server: bench/callgrind.sh target/release/examples/limit_server --dev --log-format
# json. Any server works that takes hotnic webhook's --listen and --admin-listen (the script adds
# both) and serves the dev certificate of certs/.
#
# Method: the server runs under callgrind with counting on; after a warm-up, counters are zeroed,
# one keep-alive TLS connection (curl) posts N1 reviews, counters are dumped; the same with N2.
# Each run has one TLS handshake, so (I(N2) - I(N1)) / (N2 - N1) is the cost of one review.
# Reviews: the 4-NIC Multus CREATE (fixture 001, four NICs, no MACs, no capacity) on /mutate,
# and a 32-NIC hot-plug UPDATE (31 NICs with MACs → 32) on /mutate. Needs valgrind, curl,
# python3. Release build first: cargo build --release (and --example limit_server).
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-100}
N2=${N2:-600}
PORT=${PORT:-18443}
ADMIN=${ADMIN:-18080}
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

if [ $# -eq 0 ]; then
    set -- target/release/hotnic webhook --dev --log-format json
fi
bin=$1
shift
args=("$@")
args+=(--listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN")

python3 - "$work" <<'EOF'
import copy, json, sys
work = sys.argv[1]
base = json.load(open("tests/fixtures/apiserver-v1.32/001-mutate-create-pod-web-multus.json"))
def nets(n, macs):
    return json.dumps([dict({"name": "bridge-conf", "namespace": "demo", "interface": f"eth{i+1}"},
                            **({"mac": "02:aa:00:00:%02x:%02x" % (i // 256, i % 256)} if i < macs else {}))
                       for i in range(n)], separators=(",", ":"))
def pod(n, macs, capacity):
    o = copy.deepcopy(base["request"]["object"])
    a = o["metadata"]["annotations"]
    a.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    a.pop("hotnic.io/interface-capacity", None)
    if capacity:
        a["hotnic.io/interface-capacity"] = capacity
    a["k8s.v1.cni.cncf.io/networks"] = nets(n, macs)
    return o
create = copy.deepcopy(base)
create["request"]["object"] = pod(4, 0, None)
update = copy.deepcopy(base)
update["request"]["operation"] = "UPDATE"
update["request"]["uid"] = "callgrind-update"
update["request"]["oldObject"] = pod(31, 31, "32")
update["request"]["object"] = pod(32, 31, "32")
json.dump(create, open(f"{work}/create.json", "w"))
json.dump(update, open(f"{work}/update.json", "w"))
EOF

valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$bin" "${args[@]}" \
    >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    curl -s -o /dev/null --cacert certs/ca.crt "https://localhost:$PORT/" 2>/dev/null && break
    sleep 0.2
done

# Posts BODY N times on one keep-alive connection.
post() {
    local body=$1 n=$2 cfg="$work/curl.cfg"
    : >"$cfg"
    for _ in $(seq "$n"); do
        printf 'url = "https://localhost:%s/mutate"\noutput = "/dev/null"\n' "$PORT" >>"$cfg"
    done
    curl -s --fail --http1.1 --cacert certs/ca.crt -H 'Content-Type: application/json' \
        --data-binary "@$body" -K "$cfg"
}

# Instructions counted since the last zeroing (callgrind_control dumps the totals).
count() {
    callgrind_control -d "$pid" >/dev/null 2>&1
    local f
    f=$(ls -t "$work"/cg.* | head -1)
    awk '/^(summary|totals):/ {print $2; exit}' "$f"
    # PROFILE=DIR keeps each dump for callgrind_annotate.
    if [ -n "${PROFILE:-}" ]; then mkdir -p "$PROFILE" && cp "$f" "$PROFILE/"; fi
    rm -f "$work"/cg.*.*
}

measure() {
    local body=$1
    post "$body" 50
    callgrind_control -z "$pid" >/dev/null 2>&1
    post "$body" "$N1"
    local a
    a=$(count)
    callgrind_control -z "$pid" >/dev/null 2>&1
    post "$body" "$N2"
    local b
    b=$(count)
    echo $(((b - a) / (N2 - N1)))
}

c=$(measure "$work/create.json")
u=$(measure "$work/update.json")
echo "$(basename "$bin"): instructions per review: 4-NIC create $c, 32-NIC hot-plug update $u"
