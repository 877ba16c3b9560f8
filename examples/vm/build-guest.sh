#!/usr/bin/env bash
# Builds the tiny test guest: Debian's cloud kernel and a busybox initramfs whose init loads the
# virtio NIC driver and prints the guest's NICs (name=MAC) on the serial console whenever they
# change, one line `hotnic-guest: nics: eth0=02:… eth1=…`. Boots in ~10 s under TCG, no disk.
#
#   examples/vm/build-guest.sh [OUTDIR]      # default target/vm-guest; writes vmlinuz, initrd.gz
#
# Needs apt (packages are downloaded with `apt-get download` and unpacked, not installed).
set -euo pipefail
out=${1:-target/vm-guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ]; then echo "$out: already built"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# The versioned kernel package the cloud metapackage points at (its name changes with updates).
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
[ -n "$kpkg" ] || { echo "cannot find the package linux-image-cloud-amd64 depends on" >&2; exit 1; }
apt-get download -q "$kpkg" busybox-static 2>&1 | grep -v 'unsandboxed' || true
mkdir kernel busybox root
dpkg-deb -x linux-image-*.deb kernel
dpkg-deb -x busybox-static_*.deb busybox
mods=$(echo kernel/lib/modules/*)
mkdir -p root/bin root/proc root/sys root/dev root/lib/modules
cp busybox/bin/busybox root/bin/busybox
# Load order: each module after the ones it needs.
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
  f=$(find "$mods" -name "$m.ko" -print -quit)
  [ -n "$f" ] || { echo "module $m not found in $kpkg" >&2; exit 1; }
  cp "$f" root/lib/modules/
done
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
  insmod /lib/modules/$m.ko 2>/dev/null
done
echo "hotnic-guest: up"
prev=unset
while true; do
  cur=""
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] && continue
    cur="$cur $n=$(cat "$d/address")"
  done
  if [ "$cur" != "$prev" ]; then echo "hotnic-guest: nics:$cur"; prev=$cur; fi
  sleep 0.2
done
INIT
chmod +x root/init
(cd root && find . | ./bin/busybox cpio -o -H newc 2>/dev/null | gzip -9) > "$out/initrd.gz"
cp kernel/boot/vmlinuz-* "$out/vmlinuz"
echo "$out: vmlinuz ($kpkg), initrd.gz"
