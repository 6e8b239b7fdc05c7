#!/usr/bin/env bash
# Build the rig images (see resources/rig/README.md):
#   target/rig/cargo/...            static vmm + guest-tools
#   target/rig/l2-initramfs.cpio.gz busybox, /init = resources/rig/l2/init, guest-tools in /bin,
#                                   /rig/l2/*.sh, virtio-gpu module closure (/rig/l2-modules.list),
#                                   e1000e + xhci-pci closure (/rig/l2-irq-modules.list),
#                                   pvpanic-pci closure (/rig/l2-pvpanic-modules.list),
#                                   ACPI button + evdev closure (/rig/l2-power-modules.list),
#                                   virtio-input + evdev closure (/rig/l2-input-modules.list)
#   target/rig/l1-initramfs.cpio.gz busybox, KVM+VFIO module closure, virtio-9p closure
#                                   (/rig/9p-modules.list, for --l0-root), /bin/vmm, guest-tools,
#                                   /rig/l2/{vmlinuz,initramfs.cpio.gz}, /init, /rig/lib.sh, /rig/scenarios/
#   target/rig/vmlinuz              the L1 (and L2) kernel
# Runs fetch.sh first. Idempotent; cargo is incremental, the cpio archives are rebuilt (seconds).
# Env: RIG_SRC=<dir> builds the Rust binaries from another checkout (e.g. a git worktree) instead of this one.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG=$ROOT/target/rig
SRC=${RIG_SRC:-$ROOT}
TRIPLE=x86_64-unknown-linux-gnu
BIN=$RIG/cargo/$TRIPLE/release

say() { echo "rig-build: $*" >&2; }
die() { echo "rig-build: ERROR: $*" >&2; exit 1; }

for tool in cpio gzip cargo flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found; run resources/rig/setup.sh"
done

mkdir -p "$RIG"
exec 8>"$RIG/build.lock"
if ! flock -n 8; then
    say "waiting for another build.sh to finish..."
    flock 8
fi

"$HERE/fetch.sh"
VER=$(cat "$RIG/kernel/version")
MODDIR=$RIG/kernel/root/usr/lib/modules/$VER
BB=$RIG/busybox

say "cargo build (static, release) of vmm + guest-tools from $SRC..."
t0=$(date +%s)
(cd "$SRC" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$TRIPLE" \
    --target-dir "$RIG/cargo" -p vmm -p guest-tools) || die "cargo build failed (see above)"
say "cargo done in $(($(date +%s) - t0)) s"

# Names of the guest-tools binaries (src/bin/<name>.rs and src/bin/<name>/main.rs).
guest_tools=()
for f in "$SRC"/resources/guest-tools/src/bin/*.rs "$SRC"/resources/guest-tools/src/bin/*/main.rs; do
    [ -e "$f" ] || continue
    case "$f" in
        */main.rs) n=$(basename "$(dirname "$f")") ;;
        *) n=$(basename "$f" .rs) ;;
    esac
    [ -x "$BIN/$n" ] || die "guest-tools binary $n was not built"
    guest_tools+=("$n")
done
[ -x "$BIN/vmm" ] || die "vmm binary was not built"

# A minimal root: busybox + applet links, /dev/console, mount points.
make_root() {
    local r=$1
    rm -rf "$r"
    mkdir -p "$r"/{bin,dev,proc,sys,tmp,run,rig}
    ln -s bin "$r/sbin"
    mkdir -p "$r/usr"
    ln -s ../bin "$r/usr/bin"
    ln -s ../bin "$r/usr/sbin"
    cp "$BB" "$r/bin/busybox"
    local a
    for a in $("$BB" --list); do
        [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"
    done
    # The kernel opens /dev/console before /init runs; without the node init has no stdio.
    mknod -m 600 "$r/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$r/dev/null" c 1 3 2>/dev/null || true
    for t in "${guest_tools[@]}"; do
        cp "$BIN/$t" "$r/bin/$t"
    done
}

pack() { # DIR OUT
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1 >"$2.tmp")
    mv "$2.tmp" "$2"
}

# add_modules ROOT LIST < module names: copies the dependency closure of the named modules (as for
# modprobe; '#' comments allowed) decompressed into ROOT/lib/modules/$VER/ and writes their in-guest
# paths, in load order (dependencies first), to LIST.
add_modules() {
    local root=$1 list=$2 m deps kind path name out
    local ko=$root/lib/modules/$VER
    mkdir -p "$ko"
    : >"$list"
    declare -A seen=()
    while read -r m; do
        m=${m%%#*}
        m=$(echo "$m" | tr -d '[:space:]')
        [ -n "$m" ] || continue
        deps=$(modprobe -d "$RIG/kernel/root/usr" -S "$VER" --show-depends "$m") ||
            die "module $m not found for kernel $VER"
        while read -r kind path _; do
            [ "$kind" = insmod ] || continue # 'builtin ...' lines need nothing
            [ -z "${seen[$path]:-}" ] || continue
            seen[$path]=1
            name=$(basename "$path")
            case "$name" in
                *.ko.xz) out=${name%.xz}; xz -dc "$path" >"$ko/$out" ;;
                *.ko.zst) out=${name%.zst}; zstd -qdc "$path" >"$ko/$out" ;;
                *.ko.gz) out=${name%.gz}; gzip -dc "$path" >"$ko/$out" ;;
                *.ko) out=$name; cp "$path" "$ko/$out" ;;
                *) die "unexpected module file $path" ;;
            esac
            echo "/lib/modules/$VER/$out" >>"$list"
        done <<<"$deps"
    done
}

# ------------------------------------------------------------------ L2
say "L2 initramfs..."
L2=$RIG/l2-root
make_root "$L2"
install -m 755 "$HERE/l2/init" "$L2/init"
# L2's initramfs is unpacked by a nested guest: keep it small (symbols stay, line tables go).
for t in "${guest_tools[@]}"; do
    strip --strip-debug "$L2/bin/$t" 2>/dev/null || true
done
mkdir -p "$L2/rig/l2"
for s in "$HERE"/l2/*.sh; do
    [ -e "$s" ] && install -m 755 "$s" "$L2/rig/l2/"
done
# virtio-gpu's module closure for rig.l2=kms-blob (the stock driver gpu-kms-blob talks to). l2/init
# does NOT load it: only l2/kms-blob.sh insmods /rig/l2-modules.list, so other L2 programs
# (gpu-user-blob) find the device without a kernel driver.
add_modules "$L2" "$L2/rig/l2-modules.list" <"$HERE/l2/modules"
# Drivers for rig.l2=irq-modes, in their own list so that kms-blob.sh does not load them.
add_modules "$L2" "$L2/rig/l2-irq-modules.list" <"$HERE/l2/irq-modules"
# The pvpanic driver for rig.l2=vm-exit, loaded by l2/vm-exit.sh only.
add_modules "$L2" "$L2/rig/l2-pvpanic-modules.list" <"$HERE/l2/pvpanic-modules"
# The ACPI power button driver and evdev for rig.l2=power, loaded by l2/power.sh only.
add_modules "$L2" "$L2/rig/l2-power-modules.list" <"$HERE/l2/power-modules"
# The virtio-input driver and evdev for rig.l2=input, loaded by l2/input.sh only.
add_modules "$L2" "$L2/rig/l2-input-modules.list" <"$HERE/l2/input-modules"
pack "$L2" "$RIG/l2-initramfs.cpio.gz"

# ------------------------------------------------------------------ L1
say "L1 initramfs..."
L1=$RIG/l1-root
make_root "$L1"
install -m 755 "$HERE/l1/init" "$L1/init"
cp "$BIN/vmm" "$L1/bin/vmm"
install -m 644 "$HERE/lib.sh" "$L1/rig/lib.sh"
mkdir -p "$L1/rig/scenarios" "$L1/rig/l2"
for s in "$HERE"/scenarios/*.sh; do
    [ -e "$s" ] && install -m 755 "$s" "$L1/rig/scenarios/"
done
cp "$MODDIR/vmlinuz" "$L1/rig/l2/vmlinuz"
cp "$RIG/l2-initramfs.cpio.gz" "$L1/rig/l2/initramfs.cpio.gz"
# Two small archives for boot's initramfs of several archives (as Debian's, an uncompressed one
# first): early.cpio uncompressed and extra.cpio.zst in zstd, each with one marker file; boot
# puts them before and after the L2 initramfs.
layers=$RIG/l2-layers
rm -rf "$layers"
mkdir -p "$layers/early/rig-early" "$layers/extra/rig-extra"
echo early >"$layers/early/rig-early/marker"
echo extra >"$layers/extra/rig-extra/marker"
(cd "$layers/early" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
    >"$L1/rig/l2/early.cpio"
(cd "$layers/extra" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | zstd -q) \
    >"$L1/rig/l2/extra.cpio.zst"

add_modules "$L1" "$L1/rig/modules.list" <"$HERE/l1/modules"
# virtio-9p for L0's root (run.sh --l0-root), loaded by /init only when the device is there.
add_modules "$L1" "$L1/rig/9p-modules.list" <"$HERE/l1/9p-modules"
echo "$VER" >"$L1/rig/kernel-version"
pack "$L1" "$RIG/l1-initramfs.cpio.gz"
ln -sfn "kernel/root/usr/lib/modules/$VER/vmlinuz" "$RIG/vmlinuz"

say "L1 modules: $(xargs -n1 basename <"$L1/rig/modules.list" | tr '\n' ' ')"
say "L2 modules (not loaded by l2/init): $(xargs -n1 basename <"$L2/rig/l2-modules.list" | tr '\n' ' ')"
say "L2 irq-modes modules (not loaded by l2/init): $(xargs -n1 basename <"$L2/rig/l2-irq-modules.list" | tr '\n' ' ')"
say "L2 vm-exit modules (not loaded by l2/init): $(xargs -n1 basename <"$L2/rig/l2-pvpanic-modules.list" | tr '\n' ' ')"
say "L2 input modules (not loaded by l2/init): $(xargs -n1 basename <"$L2/rig/l2-input-modules.list" | tr '\n' ' ')"
say "L1 9p modules (loaded with --l0-root): $(xargs -n1 basename <"$L1/rig/9p-modules.list" | tr '\n' ' ')"
say "ready: $RIG/vmlinuz ($VER), l1-initramfs $(du -k "$RIG/l1-initramfs.cpio.gz" | cut -f1) KiB, l2-initramfs $(du -k "$RIG/l2-initramfs.cpio.gz" | cut -f1) KiB"
