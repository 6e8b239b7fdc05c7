#!/usr/bin/env bash
# L0's VNC clients for the rig's --l0-root scenario vnc, which runs them inside L1
# from L0's root (rig_l0 in lib.sh):
#   - checks the Debian packages setup.sh installs: vncsnapshot, gvncviewer (gvnccapture) and, for
#     vncdotool, python3 with python3-twisted, python3-pil and python3-cryptography;
#   - fetches vncdotool's wheel (PyPI only) with Debian's pip (`pip download`, whatever index pip is
#     configured with), cached in target/rig/cache/, and unpacks it into target/rig/vncdotool/ (a
#     PYTHONPATH entry for /usr/bin/python3: `python3 -m vncdotool.command ...`).
# Idempotent: once unpacked, no network. Prints one `client=<name> version=<v> [k=v...]` line per
# client (stdout).
#
# Usage: resources/rig/vnc-clients.sh [--versions]
#   --versions  only print the version lines (installs and fetches nothing, writes nothing; used by
#               scenarios inside L1 through rig_l0, where L0's root is read-only)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG=$ROOT/target/rig
CACHE=$RIG/cache
VNCDOTOOL_VERSION=1.4.2
VNCDOTOOL_DIR=$RIG/vncdotool
PYTHON=/usr/bin/python3
DEBS=(vncsnapshot gvncviewer python3 python3-twisted python3-pil python3-cryptography python3-pip)

say() { echo "rig-vnc-clients: $*" >&2; }
die() { echo "rig-vnc-clients: ERROR: $*" >&2; exit 1; }

deb_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

versions() {
    local v
    echo "client=vncsnapshot version=$(deb_version vncsnapshot)"
    echo "client=gvnccapture version=$(deb_version gvncviewer) package=gvncviewer"
    v=$(sed -n 's/^Version: //p' "$VNCDOTOOL_DIR"/vncdotool-*.dist-info/METADATA 2>/dev/null | head -n1)
    echo "client=vncdotool version=${v:-none} python3=$(deb_version python3)" \
        "twisted=$(deb_version python3-twisted) pil=$(deb_version python3-pil)" \
        "cryptography=$(deb_version python3-cryptography)"
}

case "${1:-}" in
    --versions) versions; exit 0 ;;
    '') ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac

for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        die "Debian package $p missing; run resources/rig/setup.sh"
done
command -v gvnccapture >/dev/null || die "gvnccapture not found (package gvncviewer)"

if [ ! -f "$VNCDOTOOL_DIR/.wheel-$VNCDOTOOL_VERSION" ]; then
    mkdir -p "$CACHE"
    wheel=$(find "$CACHE" -maxdepth 1 -name "vncdotool-$VNCDOTOOL_VERSION-*.whl" | head -n1)
    if [ -z "$wheel" ]; then
        say "downloading vncdotool $VNCDOTOOL_VERSION (pip download)..."
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE" \
            "vncdotool==$VNCDOTOOL_VERSION" >&2 || die "pip download vncdotool==$VNCDOTOOL_VERSION failed (network?)"
        wheel=$(find "$CACHE" -maxdepth 1 -name "vncdotool-$VNCDOTOOL_VERSION-*.whl" | head -n1)
        [ -n "$wheel" ] || die "pip download left no vncdotool-$VNCDOTOOL_VERSION wheel in $CACHE"
    fi
    say "unpacking $(basename "$wheel") into $VNCDOTOOL_DIR"
    rm -rf "$VNCDOTOOL_DIR" "$VNCDOTOOL_DIR.tmp"
    "$PYTHON" -m zipfile -e "$wheel" "$VNCDOTOOL_DIR.tmp" || die "cannot unpack $wheel"
    touch "$VNCDOTOOL_DIR.tmp/.wheel-$VNCDOTOOL_VERSION"
    mv "$VNCDOTOOL_DIR.tmp" "$VNCDOTOOL_DIR"
fi
PYTHONPATH=$VNCDOTOOL_DIR PYTHONDONTWRITEBYTECODE=1 "$PYTHON" -c 'import vncdotool.command' ||
    die "vncdotool does not import with $PYTHON (PYTHONPATH=$VNCDOTOOL_DIR)"
versions
