#!/usr/bin/env bash
# Build the rig's alternative L1 kernel from Debian's source: the same 7.3 source as the Debian kernel,
# but with IOMMUFD and the VFIO device cdev (/dev/iommu, /dev/vfio/devices/vfioN) that Debian's config
# lacks, and everything built in (CONFIG_MODULES=n). Used by `run.sh --l1-kernel iommufd`.
#
#   target/rig/cache/linux-source-<mm>_*.deb      Debian's linux-source-<mm> (private trixie-backports list)
#   target/rig/ksrc-iommufd/linux-source-<mm>/    the unpacked source tree and build products
#   target/rig/kernel-iommufd/{bzImage,config,release,fragment.sha256,objects}
#
# Config: make x86_64_defconfig, merge kernel/configs/kvm_guest.config, merge resources/rig/kernel/iommufd.config,
# make olddefconfig; then every CONFIG_X=... line of the fragment must be in .config verbatim and every
# "# CONFIG_X is not set" symbol off, or the script fails. Cached: no work when bzImage exists and the
# recorded hash (fragment + source package) matches.
#
# make's output goes to target/rig/logs/build-kernel-make.log (kept); every 30 s a progress line gives
# the elapsed time and the objects compiled so far (and how many the last build compiled), then the total.
#
# Usage: resources/rig/build-kernel.sh [--force]
# Env: RIG_KERNEL_JOBS=<n> (default: nproc), RIG_PROGRESS_SECS=<n> (seconds between progress lines, default 30)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG=$ROOT/target/rig
APT=$RIG/apt
CACHE=$RIG/cache
SRCDIR=$RIG/ksrc-iommufd
OUT=$RIG/kernel-iommufd
FRAG=$HERE/kernel/iommufd.config
SERIES=7.3
PKG=linux-source-$SERIES
JOBS=${RIG_KERNEL_JOBS:-$(nproc)}
FORCE=0
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-kernel.sh: unknown argument '$a'" >&2; exit 2 ;;
    esac
done

say() { echo "rig-kernel: $*" >&2; }
die() { echo "rig-kernel: ERROR: $*" >&2; exit 1; }

for tool in apt-get dpkg-deb xz make gcc flex bison bc sha256sum flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found; run resources/rig/setup.sh"
done
[ -f /usr/include/libelf.h ] || die "libelf.h missing (libelf-dev); run resources/rig/setup.sh"
[ -f /usr/include/openssl/ssl.h ] || die "openssl headers missing (libssl-dev); run resources/rig/setup.sh"
[ -f "$FRAG" ] || die "no config fragment $FRAG"

mkdir -p "$CACHE" "$OUT"
exec 7>"$RIG/build-kernel.lock"
if ! flock -n 7; then
    say "waiting for another build-kernel.sh to finish..."
    flock 7
fi

# ---------------------------------------------------------------- source package
# shellcheck source=resources/rig/host-apt.sh
. "$HERE/host-apt.sh"
# shellcheck source=resources/rig/progress.sh
. "$HERE/progress.sh"
if ! deb=$(first_deb "$PKG"); then
    rig_apt_init
    # fetch.sh's lists (same source) usually know the package already; update only if they do not.
    if ! apt-cache "${APT_OPTS[@]}" show "$PKG" >/dev/null 2>&1; then
        say "updating private apt lists (trixie-backports)..."
        apt-get -q "${APT_OPTS[@]}" update >&2 || die "apt-get update of the private trixie-backports list failed"
    fi
    say "downloading $PKG (about 170 MiB)..."
    (cd "$CACHE" && apt-get -q "${APT_OPTS[@]}" download "$PKG" >&2) || die "download of $PKG failed"
    deb=$(first_deb "$PKG") || die "$PKG downloaded but not found in $CACHE"
fi

want=$( (cat "$FRAG"; basename "$deb") | sha256sum | cut -d' ' -f1)
if [ "$FORCE" = 0 ] && [ -f "$OUT/bzImage" ] && [ "$(cat "$OUT/fragment.sha256" 2>/dev/null)" = "$want" ]; then
    say "cached: $OUT/bzImage ($(cat "$OUT/release"))"
    exit 0
fi

t0=$(date +%s)
TREE=$SRCDIR/$PKG
if [ ! -f "$SRCDIR/.stamp-$(basename "$deb")" ]; then
    say "unpacking $(basename "$deb")..."
    rm -rf "$SRCDIR"
    mkdir -p "$SRCDIR"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$PKG.tar.xz" | xz -dc -T"$JOBS" | tar -x -C "$SRCDIR"
    [ -f "$TREE/Makefile" ] || die "no $TREE/Makefile after unpacking $deb"
    touch "$SRCDIR/.stamp-$(basename "$deb")"
    say "unpacked in $(($(date +%s) - t0)) s"
fi

# ---------------------------------------------------------------- config
say "configuring (x86_64_defconfig + kvm_guest.config + $(basename "$FRAG"))..."
mk() { make -C "$TREE" -s "$@"; }
mk x86_64_defconfig >&2
(cd "$TREE" && scripts/kconfig/merge_config.sh -m -O . .config kernel/configs/kvm_guest.config "$FRAG" >/dev/null) ||
    die "merge_config.sh failed"
mk olddefconfig >&2
bad=()
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            grep -qxF -- "$line" "$TREE/.config" || bad+=("want '$line', have '$(grep -E "^(# )?${line%%=*}[= ]" "$TREE/.config" || echo absent)'")
            ;;
        "# CONFIG_"*" is not set")
            sym=${line#\# }
            sym=${sym%% *}
            if grep -qE "^$sym=" "$TREE/.config"; then bad+=("want $sym off, have '$(grep -E "^$sym=" "$TREE/.config")'"); fi
            ;;
    esac
done <"$FRAG"
if [ "${#bad[@]}" -gt 0 ]; then
    printf 'rig-kernel: config mismatch: %s\n' "${bad[@]}" >&2
    die "${#bad[@]} option(s) of $(basename "$FRAG") did not survive olddefconfig (dependencies?)"
fi
say "config checked: every option of $(basename "$FRAG") is as asked"

# ---------------------------------------------------------------- build
tb=$(date +%s)
mkdir -p "$RIG/logs"
MAKELOG=$RIG/logs/build-kernel-make.log
say "make -j$JOBS bzImage ($(gcc --version | head -n1)) (about 12 minutes with 2 jobs); its output goes to $MAKELOG"
# Progress: kbuild's "  CC      path.o" / "  AS      path.o" lines, one per object compiled.
last=$(cat "$OUT/objects" 2>/dev/null || true)
rig_progress "rig-kernel: make bzImage" "$MAKELOG" "${RIG_PROGRESS_SECS:-30}" '^  (CC|AS) +[^ ]+\.o$' "$last" \
    make -C "$TREE" -j"$JOBS" bzImage || die "kernel build failed (see $MAKELOG)"
echo "$RIG_PROGRESS_COUNT" >"$OUT/objects"
rel=$(mk kernelrelease)
cp "$TREE/arch/x86/boot/bzImage" "$OUT/bzImage.tmp"
cp "$TREE/.config" "$OUT/config"
echo "$rel" >"$OUT/release"
mv "$OUT/bzImage.tmp" "$OUT/bzImage"
echo "$want" >"$OUT/fragment.sha256"
say "built $rel: make $(($(date +%s) - tb)) s, total $(($(date +%s) - t0)) s; $OUT/bzImage $(du -k "$OUT/bzImage" | cut -f1) KiB"
