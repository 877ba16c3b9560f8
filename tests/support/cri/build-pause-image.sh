#!/bin/sh
# Build the hotnic test pause image with no registry:
#   build-pause-image.sh OUT.tar IMAGE-NAME
# compiles pause.c (next to this script) with `gcc -static`, packs it as a one-layer OCI image layout
# (uncompressed layer) and tars the layout into OUT.tar. The index carries the annotations
# `io.containerd.image.name` (= IMAGE-NAME, the name `ctr images import` registers) and
# `org.opencontainers.image.ref.name` (its tag). Needs: sh, gcc (static libc), tar, sha256sum.
set -eu
out=$1
name=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/hotnic-pause.XXXXXX")
trap 'rm -rf "$work"' EXIT

case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) echo "build-pause-image.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

mkdir -p "$work/rootfs" "$work/layout/blobs/sha256"
gcc -static -Os -s -o "$work/rootfs/pause" "$here/pause.c"
chmod 0755 "$work/rootfs/pause"

blob() { # blob FILE -> prints "DIGEST SIZE" and stores FILE under blobs/sha256/
	d=$(sha256sum "$1" | cut -d' ' -f1)
	s=$(wc -c <"$1" | tr -d ' ')
	cp "$1" "$work/layout/blobs/sha256/$d"
	echo "$d $s"
}

tar -C "$work/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$work/layer.tar" pause
set -- $(blob "$work/layer.tar"); layer=$1; layer_size=$2

printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/pause"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
	"$arch" "$layer" >"$work/config.json"
set -- $(blob "$work/config.json"); config=$1; config_size=$2

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
	"$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
set -- $(blob "$work/manifest.json"); manifest=$1; manifest_size=$2

tag=${name##*:}
case $tag in */*) tag=latest ;; esac
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
	"$manifest" "$manifest_size" "$arch" "$name" "$tag" >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

tar -C "$work/layout" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out" oci-layout index.json blobs
