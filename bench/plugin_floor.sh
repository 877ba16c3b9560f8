#!/usr/bin/env bash
# The floor under the agent bench's 32-NIC figure: the CPU the CNI plugins alone need for N ADDs
# of the bridge plugin with host-local IPAM (the bench's pair), run one after another straight
# from the shell into one pod namespace: no agent, no cache. As in the bench, the node is a
# namespace of its own (the plugins run in it through `nsenter`), so the bridge, its gateway
# address and the forwarding sysctl stay out of this machine's own network. Divided by the
# cores, that is the least any agent can take to plug N NICs on this machine at this hour.
#
#   bench/plugin_floor.sh [N]     # as root; N defaults to 32; needs containernetworking-plugins
set -euo pipefail
n=${1:-32}
case "$n" in ''|*[!0-9]*|0) echo "plugin_floor.sh: N must be a positive integer" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "plugin_floor.sh: needs root (network namespaces)" >&2; exit 1; }
plugins=/usr/lib/cni
[ -x "$plugins/bridge" ] && [ -x "$plugins/host-local" ] ||
  { echo "plugin_floor.sh: no bridge/host-local in $plugins" >&2; exit 1; }

tag=hnfloor$$
work=$(mktemp -d)
cleanup() {
  ip netns del "$tag" 2>/dev/null || true
  ip netns del "${tag}n" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$tag"
ip netns add "${tag}n"
cat >"$work/conf" <<EOF
{"cniVersion":"1.0.0","name":"$tag","type":"bridge","bridge":"${tag:0:12}br","isGateway":true,
 "ipam":{"type":"host-local","subnet":"10.124.0.0/16","dataDir":"$work/ipam"}}
EOF
# run COMMAND: the N plugin calls, one after another.
cat >"$work/run" <<EOF
for i in \$(seq 1 $n); do
  CNI_COMMAND=\$1 CNI_CONTAINERID=floor\$i CNI_NETNS=/run/netns/$tag CNI_IFNAME=eth\$i \
    CNI_PATH=$plugins nsenter --net=/run/netns/${tag}n $plugins/bridge <"$work/conf" >/dev/null
done
EOF
# CPU time (user + system) of a command and its children, from bash's `times` in a subshell.
cpu_ms() {
  bash -c 'bash "$0" "$1"; times' "$work/run" "$1" | tail -1 |
    awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } printf "%.0f", t * 1000 }'
}
start=$(date +%s%N)
add=$(cpu_ms ADD)
wall=$((($(date +%s%N) - start) / 1000000))
del=$(cpu_ms DEL)
left=$(find "$work/ipam" -type f ! -name 'lock' ! -name 'last_reserved_ip*' | wc -l)
cores=$(nproc)
echo "$n bridge+host-local ADDs one after another: ${add} ms CPU (${wall} ms wall), $((add / n)) ms per ADD; DEL: ${del} ms CPU"
echo "floor on $cores cores: $((add / cores)) ms for $n NICs (leases left after DEL: $left)"
[ "$left" -eq 0 ]
