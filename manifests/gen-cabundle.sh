#!/usr/bin/env bash
# Turns a `hotnic certs` directory into what `kubectl apply -k manifests/` installs:
#   manifests/webhook-tls/{ca.crt,tls.crt,tls.key}  -> the Secret (secretGenerator)
#   manifests/webhook-cabundle.patch.yaml           -> caBundle of both webhook configurations
#
# Usage (from anywhere):
#   manifests/gen-cabundle.sh                 # copy certs/ (the committed DEV set)
#   manifests/gen-cabundle.sh DIR             # copy another `hotnic certs --out DIR` set
#   manifests/gen-cabundle.sh --regenerate    # new DEV set in certs/ first (hotnic certs), then copy
# HOTNIC=/path/to/hotnic overrides the binary (default: `cargo run -q --`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
src="$root/certs"
case "${1:-}" in
  --regenerate)
    hotnic=(${HOTNIC:-cargo run -q --manifest-path "$root/Cargo.toml" --})
    # The same names as `hotnic webhook --dev` plus the in-cluster Service names.
    "${hotnic[@]}" certs --out "$src" \
      --dns localhost \
      --dns hotnic-webhook.hotnic-system.svc \
      --dns hotnic-webhook.hotnic-system.svc.cluster.local \
      --ip 127.0.0.1 --ip ::1 --days 3650 >/dev/null ;;
  "") ;;
  -*) sed -n '2,10p' "$0" >&2; exit 2 ;;
  *) src="$1" ;;
esac
for f in ca.crt tls.crt tls.key; do
  [ -s "$src/$f" ] || { echo "missing $src/$f (run: hotnic certs --out $src ...)" >&2; exit 1; }
done
mkdir -p "$here/webhook-tls"
install -m 0644 "$src/ca.crt" "$here/webhook-tls/ca.crt"
install -m 0644 "$src/tls.crt" "$here/webhook-tls/tls.crt"
install -m 0600 "$src/tls.key" "$here/webhook-tls/tls.key"
bundle="$(base64 -w0 < "$src/ca.crt")"
cat > "$here/webhook-cabundle.patch.yaml" <<PATCH
# Written by manifests/gen-cabundle.sh from $(basename "$src")/ca.crt: do not edit by hand.
# JSON 6902 patch applied to both webhook configurations (see manifests/kustomization.yaml).
- op: add
  path: /webhooks/0/clientConfig/caBundle
  value: $bundle
PATCH
echo "wrote $here/webhook-tls/ and $here/webhook-cabundle.patch.yaml (CA from $src/ca.crt)"
