# shellcheck shell=bash
# The rig's private apt source (trixie-backports), for the host-side scripts fetch.sh and
# build-kernel.sh (the system's apt sources are not touched). Needs $APT (apt state dir) and
# $CACHE (where downloaded .debs go) set before it is sourced.

# rig_apt_init: writes $APT/sources.list and sets APT_OPTS for apt-get/apt-cache.
rig_apt_init() {
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$CACHE"
    # A new file replaces the list (never rewritten in place: target/rig may hold hard links into
    # a shared cache).
    printf '%s\n' 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main' \
        >"$APT/sources.list.tmp"
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
