#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the API docs, unit tests and the kernel-in-the-loop rig.
# Installs what it needs (Debian packages through apt, as root) first. Downloads are cached under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n== %s (+%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "installing the rig's packages"
bash resources/rig/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo test (unit tests and rig scenarios)"
cargo test --workspace --locked --features rig-tests/rig -- --test-threads=1 --nocapture

step "all tests passed in $(( $(date +%s) - start ))s"
