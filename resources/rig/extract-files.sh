#!/usr/bin/env bash
# Decodes the files a scenario sent over L1's console (lib.sh rig_send_file: base64 between
# `RIG-FILE-BEGIN scenario=S name=N size=B sha256=H` and `RIG-FILE-END scenario=S name=N`) from a
# console log into a directory, checking each file's size and SHA-256. (rig-tests does the same in Rust.)
#
# Usage: resources/rig/extract-files.sh LOG DIR [PREFIX]
#   LOG     console log, e.g. target/rig/logs/gpu-bar-blob.log
#   DIR     output directory (created); files are written as DIR/PREFIX<name>
#   PREFIX  optional prefix of the output names
# Prints one line per file. Exit 0 iff at least one file was found and every file is intact.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then sed -n '2,10p' "$0" >&2; exit 2; fi
LOG=$1
DIR=$2
PREFIX=${3:-}
[ -r "$LOG" ] || { echo "extract-files: cannot read $LOG" >&2; exit 2; }
mkdir -p "$DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Split the log: TMP/<n>.b64 holds file n's base64, TMP/index one "n name size sha256" line per file.
tr -d '\r' <"$LOG" | awk -v tmp="$TMP" '
    function field(k,   i, kv) {
        for (i = 2; i <= NF; i++) { if (index($i, k "=") == 1) return substr($i, length(k) + 2) }
        return ""
    }
    /^RIG-FILE-BEGIN / { n++; out = tmp "/" n ".b64"; printf "" > out; open = 1
                         print n, field("name"), field("size"), field("sha256") > (tmp "/index"); next }
    /^RIG-FILE-END /   { if (open) close(out); open = 0; next }
    open               { print > out }
'
[ -s "$TMP/index" ] || { echo "extract-files: no RIG-FILE-BEGIN line in $LOG" >&2; exit 1; }

bad=0
while read -r n name size sha; do
    if ! [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || [ "$name" = . ] || [ "$name" = .. ]; then
        echo "extract-files: file $n: unsafe name '$name'" >&2
        bad=1
        continue
    fi
    out=$DIR/$PREFIX$name
    if ! base64 -d "$TMP/$n.b64" >"$out.tmp" 2>/dev/null; then
        echo "extract-files: $name: bad base64 (garbled console line?)" >&2
        bad=1
        rm -f "$out.tmp"
        continue
    fi
    got_size=$(stat -c %s "$out.tmp")
    got_sha=$(sha256sum "$out.tmp" | cut -d' ' -f1)
    if [ "$got_size" != "$size" ] || [ "$got_sha" != "$sha" ]; then
        echo "extract-files: $name: $got_size bytes sha256 $got_sha, sent $size bytes sha256 $sha" >&2
        bad=1
        rm -f "$out.tmp"
        continue
    fi
    mv "$out.tmp" "$out"
    echo "$out ($size bytes, sha256 ok)"
done <"$TMP/index"
exit "$bad"
