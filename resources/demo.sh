#!/usr/bin/env bash
# The demo: boots our VMM inside the nested rig (QEMU/TCG -> Linux L1 with KVM and VFIO -> our vmm -> Linux L2)
# and shows the console. Installs what it needs first; downloads are cached under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash resources/rig/setup.sh
bash resources/rig/build.sh
bash resources/rig/run.sh boot
echo
echo "console log: target/rig/logs/boot.log"
