#!/usr/bin/env bash
# Build the boot benchmark's L1 initramfs: target/rig/l1-bench-initramfs.cpio.gz = the rig's L1
# initramfs (build.sh) followed by a second cpio archive with this machine's QEMU under /opt/qemu
# (the binary, the shared libraries it needs with their loader, and the firmware microvm uses), so
# that scenario boot-bench can boot L2 with QEMU and with our vmm in the same L1.
# Run build.sh first. Idempotent; takes a few seconds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG=$ROOT/target/rig
say() { echo "rig-bench-image: $*" >&2; }
die() { echo "rig-bench-image: ERROR: $*" >&2; exit 1; }

QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found; run resources/rig/setup.sh"
[ -e "$RIG/l1-initramfs.cpio.gz" ] || die "$RIG/l1-initramfs.cpio.gz missing; run resources/rig/build.sh first"
FW=/usr/share/qemu

root=$RIG/bench-root
rm -rf "$root"
mkdir -p "$root/opt/qemu/lib" "$root/opt/qemu/share"
cp -L "$QEMU" "$root/opt/qemu/qemu-system-x86_64"
# Every library ldd resolves, and the loader (the "=>"-less absolute path line).
ldd "$QEMU" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
    while read -r lib; do
        cp -L "$lib" "$root/opt/qemu/lib/"
    done
[ -e "$root/opt/qemu/lib/ld-linux-x86-64.so.2" ] || die "no ld-linux-x86-64.so.2 among $QEMU's libraries"
for f in bios-microvm.bin qboot.rom linuxboot_dma.bin kvmvapic.bin; do
    [ -e "$FW/$f" ] || die "$FW/$f missing (package qemu-system-data)"
    cp -L "$FW/$f" "$root/opt/qemu/share/"
done
# A wrapper with the loader and library path, so scenarios run it like any program.
cat >"$root/opt/qemu/qemu" <<'EOT'
#!/bin/sh
exec /opt/qemu/lib/ld-linux-x86-64.so.2 --library-path /opt/qemu/lib /opt/qemu/qemu-system-x86_64 -L /opt/qemu/share "$@"
EOT
chmod 755 "$root/opt/qemu/qemu"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1 >"$RIG/bench-extra.cpio.gz")
# Concatenated gzip'd cpio archives are one initramfs to Linux.
cat "$RIG/l1-initramfs.cpio.gz" "$RIG/bench-extra.cpio.gz" >"$RIG/l1-bench-initramfs.cpio.gz.tmp"
mv "$RIG/l1-bench-initramfs.cpio.gz.tmp" "$RIG/l1-bench-initramfs.cpio.gz"
say "$("$QEMU" --version | head -n1); $(ls "$root/opt/qemu/lib" | wc -l) libraries; $(du -h "$RIG/bench-extra.cpio.gz" | cut -f1) added"
