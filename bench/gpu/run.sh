#!/usr/bin/env bash
# The GPU check, one command on a lent GPU machine (nvcc, CMake, ninja, python3 + torch; no
# Node, no registry). From the device tool:
#   run(command: "bash bench/gpu/run.sh", carry: ["gpu-carry"])
# after `bash bench/gpu/pack.sh` here (it puts an xz-compressed Node binary, the built JS and
# the few packages the addon build and dist/ need into gpu-carry/). Without gpu-carry/ the
# native part still runs. Writes bench/RESULTS.md (+ .json) and copies them to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
report=bench/RESULTS.md
status=0
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null | sed 's/^/card: /'
  nvcc --version | tail -1
} > /tmp/saekit-gpu-header.txt

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
jobs="$(nproc 2>/dev/null || echo 4)"

# 1. The native check: CPU vs CUDA parity and timings (saekit_gpu_check; since issue 20 also the
#    CUDA trainer vs the CPU trainer and its step time at the GPT-2 shape), and the kernels under
#    emulation (the CI check; needs a C++20 compiler, skipped without one).
cmake -S . -B build-gpu "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build-gpu -j "$jobs" --target saekit_gpu_check || exit 1
if cmake --build build-gpu -j "$jobs" --target saekit_kernel_emu >/dev/null 2>&1; then
  ./build-gpu/saekit_kernel_emu | tail -3 || status=1
else
  echo "(kernel emulation test not built here: no C++20 std::barrier)"
fi
./build-gpu/saekit_gpu_check "$report" || status=1
{ cat /tmp/saekit-gpu-header.txt; echo; cat "$report"; } > "$report.tmp" && mv "$report.tmp" "$report"
python3 bench/gpu/torch_ref.py "$report" || echo "torch reference failed" | tee -a "$report"

# 2. The Node path, when pack.sh's carry came along.
if [ -f gpu-carry/node.xz ]; then
  xz -dc gpu-carry/node.xz > gpu-carry/node && chmod +x gpu-carry/node
  export PATH="$PWD/gpu-carry:$PATH"
  [ -e node_modules ] || ln -s gpu-carry/node_modules node_modules
  [ -e dist ] || cp -r gpu-carry/dist dist  # a copy: the addon is found relative to the real path of dist/
  if cmake -S . -B build-node "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" >/dev/null &&
     cmake --build build-node -j "$jobs" --target saekit; then
    mkdir -p build/Release && cp build-node/saekit.node build/Release/saekit.node
    node bench/gpu/node_check.mjs "$report" || status=1
  else
    echo "Node addon build failed" | tee -a "$report"
    status=1
  fi
else
  echo "(no gpu-carry/: the Node path was not run)" | tee -a "$report"
fi
[ -n "${OUT:-}" ] && cp "$report" "$report.json" "$OUT/" 2>/dev/null
exit $status
