#!/usr/bin/env bash
# Builds what benches/gpu_run.sh needs on a GPU machine without a Rust toolchain (the same
# target triple): the bench binary, every test binary (stripped), the PyTorch peer and this
# checkout's revision, packed into one archive to copy there beside a copy of the repository.
#
#   benches/gpu_kit.sh [KIT]              default KIT: target/gpu-kit; writes KIT/kit.tar.xz
#
# On the GPU machine, in the repository's root (test binaries read repository files from
# there):
#   mkdir -p /tmp/kit && tar xJf KIT/kit.tar.xz -C /tmp/kit
#   BENCH=/tmp/kit/memory_access TESTS=/tmp/kit/tests PEER=/tmp/kit/torch_ntm_ops.py \
#     REVISION=$(cat /tmp/kit/REVISION) benches/gpu_run.sh
set -euo pipefail

KIT=${1:-target/gpu-kit}
case $KIT in /*) ;; *) KIT=$PWD/$KIT ;; esac
cd "$(dirname "$0")/.."

executables() { sed -n 's/.*"executable":"\([^"]*\)".*/\1/p'; }

rm -rf "$KIT/bin"
mkdir -p "$KIT/bin/tests"
bench=$(cargo bench --no-run --message-format=json | executables | grep '/memory_access-' | tail -n 1)
[ -n "$bench" ] || { echo "no bench binary built" >&2; exit 1; }
cp "$bench" "$KIT/bin/memory_access"
# The test harnesses only: `cargo test` also builds the examples.
cargo test --release --no-run --message-format=json | grep -v '"kind":\["example"\]' |
    executables | grep -v '/memory_access-' |
    while read -r t; do cp "$t" "$KIT/bin/tests/"; done
strip "$KIT/bin/memory_access" "$KIT"/bin/tests/* 2>/dev/null || echo "(not stripped: no strip)"
peer=../shared/peers/torch_ntm_ops.py
if [ -f "$peer" ]; then
    cp "$peer" "$KIT/bin/"
else
    echo "no PyTorch peer at $peer: the peer stage will need PEER" >&2
fi
git rev-parse HEAD >"$KIT/bin/REVISION" 2>/dev/null || echo unknown >"$KIT/bin/REVISION"
tar cJf "$KIT/kit.tar.xz" -C "$KIT/bin" .
echo "$KIT/kit.tar.xz: $(du -h "$KIT/kit.tar.xz" | cut -f1), $(ls "$KIT/bin/tests" | wc -l) test binaries, revision $(cat "$KIT/bin/REVISION")"
