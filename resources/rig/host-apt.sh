# shellcheck shell=bash
# The rig's private apt sources, for the host-side scripts (the system's apt sources are not touched):
# trixie-backports for fetch.sh and build-kernel.sh (rig_apt_init needs $APT, the apt state dir, and
# $CACHE, where downloaded .debs go, set before it is called), trixie for weston-root.sh
# (rig_apt_root_init).

# rig_debian_mirror [DIR]: the Debian archive URI this machine's own apt sources use (the first
# `.../debian` URI of a deb822 `*.sources` stanza or a one-line `deb` entry under DIR, default
# /etc/apt), without a trailing slash; non-zero with a message if there is none.
rig_debian_mirror() {
    local dir=${1:-/etc/apt} f uri
    for f in "$dir"/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
            {
                deb = 0; uri = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) deb = 1
                    if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uri = u[1] }
                }
                sub(/\/$/, "", uri)
                if (deb && uri ~ /\/debian$/) { print uri; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    for f in "$dir"/sources.list "$dir"/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        uri=$(sed -n 's|^deb[ \t]\{1,\}\(\[[^]]*\][ \t]\{1,\}\)\{0,1\}\([^ \t]*/debian\)/\{0,1\}[ \t].*|\2|p' "$f" | head -n 1)
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    echo "rig: no Debian archive (a URI ending in /debian) in the apt sources under $dir" >&2
    return 1
}

# rig_apt_init: writes $APT/sources.list (trixie-backports from this machine's Debian mirror) and
# sets APT_OPTS for apt-get/apt-cache.
rig_apt_init() {
    local mirror
    mirror=$(rig_debian_mirror /etc/apt) || return 1
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$CACHE"
    # A new file replaces the list (never rewritten in place: target/rig may hold hard links into
    # a shared cache).
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie-backports main\n' \
        "$mirror" >"$APT/sources.list.tmp"
    mv "$APT/sources.list.tmp" "$APT/sources.list"
    # shellcheck disable=SC2034 # used by the scripts that source this file
    APT_OPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root)
}

# first_deb NAME -> path of the cached NAME_*.deb in $CACHE; non-zero if none.
first_deb() {
    local f
    for f in "$CACHE/$1"_*.deb; do
        [ -e "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

# rig_apt_root_init DIR SUITE: a private apt state in DIR for resolving and downloading a whole
# root's packages: DIR/sources.list (SUITE main from this machine's Debian mirror) and an empty
# dpkg status (DIR/status), so that apt resolves the complete dependency closure, libc6 included.
# Sets APT_OPTS for apt-get/apt-cache.
rig_apt_root_init() {
    local dir=$1 suite=$2 mirror
    mirror=$(rig_debian_mirror /etc/apt) || return 1
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    [ -e "$dir/status" ] || : >"$dir/status"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
        "$mirror" "$suite" >"$dir/sources.list.tmp"
    mv "$dir/sources.list.tmp" "$dir/sources.list"
    # shellcheck disable=SC2034 # used by the scripts that source this file
    APT_OPTS=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State=$dir" -o "Dir::State::Lists=$dir/lists" -o "Dir::State::status=$dir/status"
        -o "Dir::Cache=$dir/cache" -o Dir::Etc::Preferences=/dev/null
        -o Dir::Etc::PreferencesParts=/dev/null -o APT::Architecture=amd64
        -o APT::Architectures=amd64 -o APT::Sandbox::User=root)
}
