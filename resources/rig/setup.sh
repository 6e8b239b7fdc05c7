#!/usr/bin/env bash
# Install what the rig needs on a fresh Debian machine (idempotent, quiet):
#   qemu-system-x86 (L0's QEMU), busybox-static, kmod (depmod/modprobe for the module closure),
#   cpio, xz-utils, zstd, debian-archive-keyring (the private trixie-backports apt list),
#   libc6-dev + gcc (static glibc and libgcc for `-C target-feature=+crt-static`),
#   make flex bison bc libelf-dev libssl-dev (build-kernel.sh: the iommufd L1 kernel from source),
#   the VNC clients that --l0-root scenarios run from L0's root inside L1: vncsnapshot, gvncviewer
#   (gvnccapture), and for vncdotool (PyPI only; vnc-clients.sh fetches its wheel) python3,
#   python3-twisted, python3-pil, python3-cryptography and python3-pip,
# and checks the Rust target x86_64-unknown-linux-gnu. Needs root (or sudo) for apt-get.
set -euo pipefail

PKGS=(qemu-system-x86 busybox-static kmod cpio xz-utils zstd debian-archive-keyring libc6-dev gcc
    make flex bison bc libelf-dev libssl-dev
    vncsnapshot gvncviewer python3 python3-twisted python3-pil python3-cryptography python3-pip
    weston)
say() { echo "rig-setup: $*" >&2; }
die() { echo "rig-setup: ERROR: $*" >&2; exit 1; }

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        SUDO=(sudo)
    fi
    say "installing: ${missing[*]}"
    say "apt-get update..."
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq update >/dev/null || die "apt-get update failed"
    say "apt-get install..."
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    say "installed ${#missing[@]} package(s)"
else
    say "packages present: ${PKGS[*]}"
fi

command -v rustc >/dev/null || die "rustc not found: install Rust (rustup) first"
host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$host" != x86_64-unknown-linux-gnu ]; then
    command -v rustup >/dev/null || die "host is $host; need the x86_64-unknown-linux-gnu target (rustup target add)"
    say "adding Rust target x86_64-unknown-linux-gnu..."
    rustup target add x86_64-unknown-linux-gnu >/dev/null
fi
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || die "static glibc (libc.a) missing after installing libc6-dev"
say "ready (rust host $host, $(qemu-system-x86_64 --version | head -n1))"
