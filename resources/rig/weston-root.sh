#!/usr/bin/env bash
# Weston for the rig's Wayland scenarios: a self-contained Debian 13 (trixie) root in
# target/rig/weston-root/, run by lib.sh's rig_weston_* in a chroot inside L1 (run.sh --l0-root: L1
# sees it read-only at /l0<checkout>/target/rig/weston-root). L0 is Debian 12, whose glibc is too
# old for trixie's binaries, so the root carries its own libc6.
#   - resolves the dependency closure of PACKAGES (below) in a private apt state
#     (target/rig/apt-trixie/: trixie main from this machine's Debian mirror, an empty dpkg status,
#     so libc6 and everything else is in the closure; the system's apt is not touched),
#   - downloads the .debs into target/rig/cache/ (those already there are kept),
#   - unpacks each with dpkg-deb -x (no maintainer scripts), adds the merged-/usr links, the mount
#     points lib.sh uses and /etc/rig-weston.ini (desktop shell, no panel, black background),
#   - checks that weston, its headless backend, both renderers, the desktop shell and the clients
#     the scenarios use find all their libraries (the root's own ld.so --list, no chroot).
# Idempotent: once built (stamp = this script's hash), no network. Prints `package=<name>
# version=<v>` lines for weston, libweston, mesa, wayland-utils, libwayland-server, pixman (stdout).
#
# Usage: resources/rig/weston-root.sh [--refresh] [--versions]
#   --refresh   resolve and unpack again even if the root is current (apt update included)
#   --versions  only print the version lines of the built root (nothing fetched or written)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG=$ROOT/target/rig
CACHE=$RIG/cache
APTDIR=$RIG/apt-trixie
WROOT=$RIG/weston-root
SUITE=trixie
# weston (compositor, headless backend, gl and pixman renderers, desktop shell, weston-screenshooter,
# weston-simple-shm), wayland-utils (wayland-info), Mesa's software GL (llvmpipe: the gl renderer
# without a GPU), xkb-data (keymaps weston compiles at start), fonts-dejavu-core (fontconfig).
PACKAGES=(weston wayland-utils libgl1-mesa-dri libegl-mesa0 xkb-data fonts-dejavu-core)
VERSION_PKGS=(weston libweston-14-0 mesa-libgallium wayland-utils libwayland-server0 libpixman-1-0)
REFRESH=0
for a in "$@"; do
    case "$a" in
        --refresh) REFRESH=1 ;;
        --versions)
            [ -f "$WROOT/rig-packages.txt" ] || { echo "rig-weston-root: no root built in $WROOT" >&2; exit 1; }
            for p in "${VERSION_PKGS[@]}"; do
                awk -v p="$p" '$1 == p { print "package=" $1 " version=" $2 }' "$WROOT/rig-packages.txt"
            done
            exit 0
            ;;
        *) sed -n '2,19p' "$0" >&2; exit 2 ;;
    esac
done

say() { echo "rig-weston-root: $*" >&2; }
die() { echo "rig-weston-root: ERROR: $*" >&2; exit 1; }

for tool in apt-get dpkg-deb sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found; run resources/rig/setup.sh"
done

stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [ "$REFRESH" = 0 ] && [ "$(cat "$WROOT/.rig-stamp" 2>/dev/null)" = "$stamp" ]; then
    say "cached: $WROOT ($(awk '$1 == "weston" { print "weston " $2 }' "$WROOT/rig-packages.txt"))"
    exec "$0" --versions
fi

# shellcheck source=resources/rig/host-apt.sh
. "$HERE/host-apt.sh"
rig_apt_root_init "$APTDIR" "$SUITE"
mkdir -p "$CACHE"
t0=$(date +%s.%N)
if [ ! -f "$APTDIR/.updated" ] || [ "$REFRESH" = 1 ]; then
    say "updating the private apt lists ($SUITE main)..."
    apt-get -q "${APT_OPTS[@]}" update >&2 || die "apt-get update of the private $SUITE list failed (network?)"
    touch "$APTDIR/.updated"
fi

# The closure: what `apt-get install` would unpack on an empty system (no Recommends).
apt-get -s "${APT_OPTS[@]}" install --no-install-recommends "${PACKAGES[@]}" >"$APTDIR/simulate.txt" 2>&1 ||
    die "apt cannot resolve ${PACKAGES[*]} in $SUITE (see $APTDIR/simulate.txt)"
sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1 \2/p' "$APTDIR/simulate.txt" | LC_ALL=C sort >"$APTDIR/closure.txt"
n=$(wc -l <"$APTDIR/closure.txt")
[ "$n" -gt 0 ] || die "empty package closure (see $APTDIR/simulate.txt)"

# File names as apt-get download writes them; download the missing ones.
mapfile -t names < <(cut -d' ' -f1 "$APTDIR/closure.txt")
apt-get -q "${APT_OPTS[@]}" --print-uris download "${names[@]}" >"$APTDIR/uris.txt" ||
    die "apt-get --print-uris download failed"
missing=()
debs=()
while read -r _uri file _size _hash; do
    debs+=("$CACHE/$file")
    [ -f "$CACHE/$file" ] || missing+=("$(echo "$file" | cut -d_ -f1)")
done <"$APTDIR/uris.txt"
[ "${#debs[@]}" = "$n" ] || die "apt gave ${#debs[@]} file names for $n packages"
if [ "${#missing[@]}" -gt 0 ]; then
    say "downloading ${#missing[@]} of $n packages into $CACHE..."
    (cd "$CACHE" && apt-get -qq "${APT_OPTS[@]}" download "${missing[@]}" >&2) || die "download failed"
fi
t1=$(date +%s.%N)

say "unpacking $n packages..."
rm -rf "$WROOT.tmp"
mkdir -p "$WROOT.tmp"
for d in "${debs[@]}"; do
    [ -f "$d" ] || die "$d missing after the download"
    dpkg-deb -x "$d" "$WROOT.tmp" || die "dpkg-deb -x $d failed"
done
r=$WROOT.tmp
rm -rf "$r"/usr/share/doc "$r"/usr/share/man "$r"/usr/share/info "$r"/usr/share/locale "$r"/usr/share/lintian
# Merged /usr (base-files makes these links on a real system; it is not in the closure).
for d in bin sbin lib lib64; do
    [ -e "$r/$d" ] || [ -L "$r/$d" ] || ln -s "usr/$d" "$r/$d"
done
# Mount points for lib.sh's rig_weston_start (proc, sys, dev, tmp: L1's runtime directory).
mkdir -p "$r"/proc "$r"/sys "$r"/dev "$r"/tmp "$r"/run
cat >"$r/etc/rig-weston.ini" <<'INI'
# The rig's weston.ini (lib.sh rig_weston_start passes it with --config): the desktop shell without
# panel, lock screen or animations, on a black background, so that a screenshot shows the
# clients' pixels and black elsewhere.
[core]
idle-time=0
require-input=false

[shell]
panel-position=none
background-color=0xff000000
locking=false
animation=none
close-animation=none
startup-animation=none
focus-animation=none
INI
cp "$APTDIR/closure.txt" "$r/rig-packages.txt"

# Every ELF that the scenarios load must find its libraries inside the root.
ldso=$r/usr/lib64/ld-linux-x86-64.so.2
[ -x "$ldso" ] || die "no ld-linux-x86-64.so.2 in the root"
libpath=$r/usr/lib/x86_64-linux-gnu
for f in usr/bin/weston usr/bin/wayland-info usr/bin/weston-screenshooter usr/bin/weston-simple-shm \
    usr/libexec/weston-desktop-shell usr/libexec/weston-keyboard \
    usr/lib/x86_64-linux-gnu/libweston-14/headless-backend.so \
    usr/lib/x86_64-linux-gnu/libweston-14/gl-renderer.so \
    usr/lib/x86_64-linux-gnu/weston/desktop-shell.so usr/lib/x86_64-linux-gnu/libEGL_mesa.so.0; do
    [ -e "$r/$f" ] || die "$f is not in the root"
    # The root's own loader and libraries only (--library-path; /etc/ld.so.cache is L0's).
    if "$ldso" --library-path "$libpath" --list "$r/$f" 2>&1 | grep -q 'not found'; then
        "$ldso" --library-path "$libpath" --list "$r/$f" >&2 || true
        die "$f lacks libraries in the root"
    fi
done

rm -rf "$WROOT"
mv "$WROOT.tmp" "$WROOT"
echo "$stamp" >"$WROOT/.rig-stamp"
t2=$(date +%s.%N)
say "ready: $WROOT, $n packages, $(du -sm "$WROOT" | cut -f1) MiB; resolve+download" \
    "$(awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.1f s, unpack+check %.1f s", b - a, c - b }')"
exec "$0" --versions
