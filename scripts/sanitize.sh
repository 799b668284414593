#!/usr/bin/env bash
# The native code under AddressSanitizer + UndefinedBehaviorSanitizer (issue 17, item 3).
# Builds the addon and the CUDA-kernel emulation test into build-sanitize/ (CPU backend only:
# the sanitizers do not see inside nvcc's device code) and runs the tests that drive the native
# kernels, the trainer, the N-API layer and the emulated CUDA kernels on that build. Any
# sanitizer report aborts the process, which fails the test that ran it.
#   bash scripts/sanitize.sh            # build + run (a few minutes on 2 cores)
#   SAEKIT_SANITIZE_TESTS="test/encode.test.ts" bash scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export SAEKIT_CPU_ONLY=1 SAEKIT_SANITIZE=address,undefined
npx cmake-js compile --out build-sanitize >build-sanitize.log 2>&1 || { tail -40 build-sanitize.log; exit 1; }
addon=$(find "$PWD/build-sanitize" -name saekit.node -print -quit)
emu=$(find "$PWD/build-sanitize" -name saekit_kernel_emu -type f -print -quit)
train_emu=$(find "$PWD/build-sanitize" -name saekit_train_emu -type f -print -quit)
[ -n "$addon" ] || { echo "sanitize: build-sanitize/ has no saekit.node"; exit 1; }
# Proof the build is instrumented: its code calls the sanitizers' report hooks. (Read into a
# variable first: `nm | grep -q` would fail under pipefail when grep stops reading early.)
syms=$(nm -D "$addon")
grep -q __asan_report <<<"$syms" || { echo "sanitize: $addon is not built with AddressSanitizer"; exit 1; }
grep -q __ubsan_handle <<<"$syms" || { echo "sanitize: $addon is not built with UndefinedBehaviorSanitizer"; exit 1; }
echo "sanitize: $addon instrumented ($(grep -c '__asan_report\|__ubsan_handle' <<<"$syms") report hooks)"

# node is not built with ASan: its runtime must come first, so it is preloaded. Leak checking is
# off (V8 and node keep allocations to exit by design); everything else is on.
LIBASAN=$(${CXX:-g++} -print-file-name=libasan.so)
export LD_PRELOAD="$LIBASAN"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0:handle_segv=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export SAEKIT_ADDON="$addon" SAEKIT_SANITIZED=1 SAEKIT_SOAK_CALLS=${SAEKIT_SOAK_CALLS:-3000}
[ -n "$emu" ] && export SAEKIT_KERNEL_EMU="$emu"
[ -n "$train_emu" ] && export SAEKIT_TRAIN_EMU="$train_emu"

tests=${SAEKIT_SANITIZE_TESTS:-"test/encode.test.ts test/screen.test.ts test/screen.variants.test.ts test/kernelChoice.test.ts test/train.native.test.ts test/train.reference.test.ts test/train.transcoder.test.ts test/train.resample.test.ts test/api.test.ts test/eventloop.test.ts test/analysis.stats.test.ts test/sae-dirs.test.ts test/native.guards.test.ts test/soak.api.test.ts test/abort.test.ts test/cuda.emu.test.ts"}
# shellcheck disable=SC2086
npx vitest run $tests
