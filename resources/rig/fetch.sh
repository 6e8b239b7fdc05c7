#!/usr/bin/env bash
# Fetch the rig's inputs and cache them under target/rig/:
#   - a Debian kernel >= 6.19 with its modules (trixie-backports, private apt source list:
#     the system's apt sources are not touched),
#   - busybox-static.
# Checks CONFIG_VFIO_PCI_DMABUF=y in the kernel config. Idempotent: once cached, no network.
#
# Usage: resources/rig/fetch.sh [--refresh]
#   --refresh   re-resolve the newest kernel in trixie-backports even if one is cached.
# Env: RIG_KERNEL_VERSION=<ver> pins the kernel (e.g. 7.3.4+deb13-amd64).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RIG=$ROOT/target/rig
APT=$RIG/apt
CACHE=$RIG/cache
KDIR=$RIG/kernel
MIN_KERNEL=6.19
REFRESH=0
for a in "$@"; do
    case "$a" in
        --refresh) REFRESH=1 ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "fetch.sh: unknown argument '$a'" >&2; exit 2 ;;
    esac
done

say() { echo "rig-fetch: $*" >&2; }
die() { echo "rig-fetch: ERROR: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb depmod modprobe xz; do
    command -v "$tool" >/dev/null ||
        die "'$tool' not found; run resources/rig/setup.sh (installs qemu-system-x86 busybox-static kmod cpio xz-utils zstd)"
done

# shellcheck source=resources/rig/host-apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-apt.sh"
rig_apt_init
mkdir -p "$KDIR"

apt_update_once() {
    if [ ! -f "$APT/.updated" ] || [ "$REFRESH" = 1 ]; then
        say "updating private apt lists (trixie-backports)..."
        apt-get -q "${APT_OPTS[@]}" update >&2 || die "apt-get update of the private trixie-backports list failed (network?)"
        touch "$APT/.updated"
    fi
}

# ---------------------------------------------------------------- kernel
VER=${RIG_KERNEL_VERSION:-}
if [ -z "$VER" ] && [ "$REFRESH" = 0 ] && [ -f "$KDIR/version" ]; then
    VER=$(cat "$KDIR/version")
fi
if [ -z "$VER" ]; then
    apt_update_once
    VER=$(apt-cache "${APT_OPTS[@]}" depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1)
    [ -n "$VER" ] || die "could not resolve linux-image-amd64 in trixie-backports"
fi
UPSTREAM=${VER%%+*}
UPSTREAM=${UPSTREAM%%-*}
if [ "$(printf '%s\n%s\n' "$MIN_KERNEL" "$UPSTREAM" | sort -V | head -n1)" != "$MIN_KERNEL" ]; then
    die "kernel $VER is older than $MIN_KERNEL (VFIO dma-buf export needs >= $MIN_KERNEL)"
fi

MODDIR=$KDIR/root/usr/lib/modules/$VER
if [ -f "$KDIR/.stamp-$VER" ] && [ -f "$MODDIR/vmlinuz" ] && [ -f "$MODDIR/modules.dep" ]; then
    say "kernel $VER cached"
else
    apt_update_once
    PKGS=("linux-binary-$VER" "linux-modules-$VER" "linux-base-$VER")
    for p in "${PKGS[@]}"; do
        if first_deb "$p" >/dev/null; then
            say "$p: cached"
        else
            size=$(apt-cache "${APT_OPTS[@]}" show "$p" 2>/dev/null | sed -n 's/^Size: //p' | head -n1)
            [ -n "$size" ] || die "package $p not found in trixie-backports"
            say "downloading $p ($((size / 1048576)) MiB)..."
            (cd "$CACHE" && apt-get -q "${APT_OPTS[@]}" download "$p" >&2) || die "download of $p failed"
        fi
    done
    say "unpacking kernel $VER..."
    rm -rf "$KDIR/root"
    mkdir -p "$KDIR/root"
    for p in "${PKGS[@]}"; do
        dpkg-deb -x "$(first_deb "$p")" "$KDIR/root"
    done
    [ -f "$MODDIR/vmlinuz" ] || die "no vmlinuz in linux-binary-$VER"
    [ -f "$MODDIR/config" ] || die "no config in linux-base-$VER"
    say "running depmod for $VER..."
    depmod -b "$KDIR/root/usr" "$VER" || die "depmod failed"
    touch "$KDIR/.stamp-$VER"
fi

if ! grep -qx 'CONFIG_VFIO_PCI_DMABUF=y' "$MODDIR/config"; then
    die "kernel $VER lacks CONFIG_VFIO_PCI_DMABUF=y (found: $(grep 'VFIO_PCI_DMABUF' "$MODDIR/config" || echo 'not set')); the rig needs VFIO dma-buf export"
fi
echo "$VER" >"$KDIR/version"
ln -sfn "root/usr/lib/modules/$VER/vmlinuz" "$KDIR/vmlinuz"

# ---------------------------------------------------------------- busybox
if [ ! -x "$RIG/busybox" ]; then
    deb=$(first_deb busybox-static || true)
    if [ -z "$deb" ]; then
        say "downloading busybox-static..."
        (cd "$CACHE" && apt-get -q -o APT::Sandbox::User=root download busybox-static >&2) || true
        deb=$(first_deb busybox-static || true)
    fi
    if [ -n "$deb" ]; then
        tmp=$(mktemp -d)
        dpkg-deb -x "$deb" "$tmp"
        cp "$tmp/bin/busybox" "$RIG/busybox"
        rm -rf "$tmp"
    elif dpkg -s busybox-static >/dev/null 2>&1; then
        say "using the installed busybox-static (/bin/busybox)"
        cp /bin/busybox "$RIG/busybox"
    else
        die "busybox-static neither downloadable nor installed; run resources/rig/setup.sh"
    fi
fi

say "ready: kernel $VER (CONFIG_VFIO_PCI_DMABUF=y), busybox $("$RIG/busybox" 2>&1 | head -n1 | awk '{print $2}')"
