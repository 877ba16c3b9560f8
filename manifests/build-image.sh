#!/bin/sh
# Build the hotnic container image OFFLINE, as an OCI image archive (no engine, no registry):
#
#   manifests/build-image.sh [--binary PATH] [--name NAME:TAG] OUT.tar
#
#   --binary PATH   the hotnic binary to pack (default: target/release/hotnic of this repository,
#                   or $CARGO_TARGET_DIR/release/hotnic; build it with `cargo build --release --locked`)
#   --name NAME:TAG the image name recorded in the archive (default: ghcr.io/hotnic/hotnic:0.1.0,
#                   the image manifests/base deploys)
#
# The image has one uncompressed layer holding:
#   /usr/local/bin/hotnic                  the binary (0755)
#   every shared library `ldd` reports for it and the dynamic loader, at the paths ldd reports
#   /etc/passwd, /etc/group               root and nonroot (65532)
#   /tmp                                   1777 (empty; the webhook writes nothing anywhere)
# and the config Entrypoint ["/usr/local/bin/hotnic"], User 65532:65532, WorkingDir /, with the
# same OCI labels as the Containerfile (version from `hotnic --version`). No CA certificates: the
# webhook only serves TLS, and the agent's Kubernetes client uses the cluster CA of its kubeconfig or
# service account.
#
# The archive is an OCI image layout tarball whose index carries `io.containerd.image.name`
# (= NAME:TAG), so `ctr -n k8s.io images import OUT.tar` registers the name (tested by
# tests/image_containerd.rs). `kind load image-archive OUT.tar` (which imports into the nodes'
# containerd) and `skopeo copy oci-archive:OUT.tar docker://...` take OCI archives too; not tried here.
# Reproducible: same binary and libraries => same bytes (owner 0:0, mtime 0, sorted entries).
#
# Needs: sh, ldd (glibc), tar (GNU), sha256sum, od. The Containerfile at the repository root is
# the engine-based equivalent (its runtime image, distroless/cc, carries glibc and libgcc as well).
set -eu

prog=build-image.sh
die() {
	echo "$prog: $*" >&2
	exit 1
}
usage() {
	echo "usage: manifests/build-image.sh [--binary PATH] [--name NAME:TAG] OUT.tar" >&2
	exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
binary=${CARGO_TARGET_DIR:-$root/target}/release/hotnic
binary_given=
name=ghcr.io/hotnic/hotnic:0.1.0
out=
while [ $# -gt 0 ]; do
	case $1 in
	--binary) [ $# -ge 2 ] || usage; binary=$2; binary_given=1; shift 2 ;;
	--binary=*) binary=${1#--binary=}; binary_given=1; shift ;;
	--name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
	--name=*) name=${1#--name=}; shift ;;
	-h | --help) usage ;;
	-*) echo "$prog: unknown option $1" >&2; usage ;;
	*) [ -z "$out" ] || usage; out=$1; shift ;;
	esac
done
[ -n "$out" ] || usage

# The binary.
if [ ! -e "$binary" ]; then
	if [ -n "$binary_given" ]; then
		die "binary $binary not found"
	fi
	die "binary $binary not found: build it first (cargo build --release --locked) or pass --binary PATH"
fi
[ -f "$binary" ] || die "$binary is not a regular file"
[ -x "$binary" ] || die "$binary is not executable"
magic=$(od -An -c -N4 "$binary" | tr -d ' ')
[ "$magic" = '177ELF' ] || die "$binary is not an ELF executable"

# The image name: letters, digits and ._-/: only (it goes into JSON unescaped), with a tag.
case $name in
*[!A-Za-z0-9._/:-]* | '') die "invalid image name '$name'" ;;
esac
tag=${name##*:}
case $tag in
"$name" | */*) die "image name '$name' has no tag; use e.g. ghcr.io/hotnic/hotnic:0.1.0" ;;
esac

# The architecture, from the ELF header (e_machine, little-endian, at offset 18).
machine=$(od -An -tu2 -j18 -N2 "$binary" | tr -d ' ')
case $machine in
62) arch=amd64 ;;
183) arch=arm64 ;;
*) die "$binary: unsupported ELF machine $machine (amd64 and arm64 are supported)" ;;
esac

# The version label: what the binary says it is ("hotnic 0.1.0").
version=$("$binary" --version 2>/dev/null | sed -n 's/^hotnic //p') ||
	die "$binary --version failed (is it a hotnic binary for this machine?)"
case $version in
'' | *[!A-Za-z0-9.+-]*) die "$binary --version did not print 'hotnic VERSION'" ;;
esac

export LC_ALL=C
umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/hotnic-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$work/layout/blobs/sha256"
chmod 1777 "$rootfs/tmp"
cp "$binary" "$rootfs/usr/local/bin/hotnic"
chmod 0755 "$rootfs/usr/local/bin/hotnic"

# The shared libraries, exactly as ldd reports them:
#   linux-vdso.so.1 (0x...)                          kernel-provided: nothing to copy
#   libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
#   /lib64/ld-linux-x86-64.so.2 (0x...)              the dynamic loader
ldd_out=$(ldd "$binary" 2>&1) || {
	case $ldd_out in
	*"not a dynamic executable"* | *"statically linked"*) ldd_out= ;;
	*) die "ldd $binary failed: $ldd_out" ;;
	esac
}
if printf '%s\n' "$ldd_out" | grep -q '=> not found'; then
	die "ldd $binary: missing libraries:
$(printf '%s\n' "$ldd_out" | grep '=> not found')"
fi
libs=$(printf '%s\n' "$ldd_out" | sed -n \
	-e 's/^[[:space:]]*[^[:space:]]* => \(\/[^[:space:]]*\) (0x[0-9a-f]*)$/\1/p' \
	-e 's/^[[:space:]]*\(\/[^[:space:]]*\) (0x[0-9a-f]*)$/\1/p' | sort -u)
for lib in $libs; do
	[ -f "$lib" ] || die "ldd reported $lib, which is not a file"
	mkdir -p "$rootfs$(dirname "$lib")"
	cp -L "$lib" "$rootfs$lib" # the file, not the symlink, at the path the loader looks for
	case $(basename "$lib") in
	ld-linux*) chmod 0755 "$rootfs$lib" ;; # the kernel executes the loader
	*) chmod 0644 "$rootfs$lib" ;;
	esac
done

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

blob() { # blob FILE -> prints "DIGEST SIZE" and moves FILE to blobs/sha256/DIGEST
	d=$(sha256sum "$1" | cut -d' ' -f1)
	s=$(wc -c <"$1" | tr -d ' ')
	mv "$1" "$work/layout/blobs/sha256/$d"
	echo "$d $s"
}

# shellcheck disable=SC2046 # the top-level entries, sorted; no "./" prefix
tar -C "$rootfs" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
	-cf "$work/layer.tar" $(cd "$rootfs" && ls -A | sort)
set -- $(blob "$work/layer.tar")
layer=$1 layer_size=$2

labels=$(printf '"org.opencontainers.image.title":"hotnic","org.opencontainers.image.description":"NIC hot-plug for Kubernetes: admission webhook and node agent","org.opencontainers.image.source":"https://github.com/hotnic/hotnic","org.opencontainers.image.licenses":"Apache-2.0","org.opencontainers.image.version":"%s"' "$version")
printf '{"architecture":"%s","os":"linux","config":{"User":"65532:65532","Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Entrypoint":["/usr/local/bin/hotnic"],"WorkingDir":"/","Labels":{%s}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"manifests/build-image.sh"}]}' \
	"$arch" "$labels" "$layer" >"$work/config.json"
set -- $(blob "$work/config.json")
config=$1 config_size=$2

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
	"$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
set -- $(blob "$work/manifest.json")
manifest=$1 manifest_size=$2

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
	"$manifest" "$manifest_size" "$arch" "$name" "$tag" >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

# Written next to OUT first, then renamed: OUT is never a half-written archive.
tmp_out="$out.partial.$$"
trap 'rm -rf "$work" "$tmp_out"' EXIT
tar -C "$work/layout" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
	-cf "$tmp_out" oci-layout index.json blobs
mv -f "$tmp_out" "$out"
size=$(wc -c <"$out" | tr -d ' ')
echo "$prog: wrote $out ($size bytes): $name ($arch, hotnic $version), manifest sha256:$manifest"
