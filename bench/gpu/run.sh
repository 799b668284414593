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
#    emulation (the CI check; needs a C++20 compiler, skipped without one). Then the PyTorch
#    references: encode/decode (torch_ref.py) and training (torch_train.py + train_compare.py).
cmake -S . -B build-gpu "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build-gpu -j "$jobs" --target saekit_gpu_check || exit 1
if cmake --build build-gpu -j "$jobs" --target saekit_kernel_emu >/dev/null 2>&1; then
  ./build-gpu/saekit_kernel_emu | tail -3 || status=1
else
  echo "(kernel emulation test not built here: no C++20 std::barrier)"
fi
./build-gpu/saekit_gpu_check "$report" || status=1
{ cat /tmp/saekit-gpu-header.txt; echo; cat "$report"; } > "$report.tmp" && mv "$report.tmp" "$report"
python3 bench/gpu/torch_ref.py "$report" || echo "torch reference failed" | tee -a "$report"

# The training peer (issue 20): bench/peers/torch_train.py on this card at the GPT-2 shape (batch
# 4096, 3 warm-up + 10 timed steps), as saekit computes it (eager autograd, fp32) and as sparsify
# ships it on CUDA (its fused encoder + embedding_bag decode under bf16 autocast); then
# train_compare.py appends both next to saekit's step line (above, from saekit_gpu_check) and the
# ratio. Like torch_ref.py, a failure goes into the report and leaves the exit status alone.
torch_train() {  # OUTPUT [ARGS...]: one run, its stdout+stderr (and a failure's exit status) in OUTPUT
  local out=$1
  shift
  timeout 120 python3 bench/peers/torch_train.py 768 24576 32 4096 "$jobs" 10 --device cuda --warmup 3 "$@" > "$out" 2>&1
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "(exit status $rc$([ "$rc" -eq 124 ] && echo ', timed out after 120 s')) $(grep -v '^[[:space:]]*$' "$out" | tail -1)" >> "$out"
    echo "PyTorch trainer failed: $(tail -1 "$out")"
  fi
}
torch_train /tmp/saekit-torch-train-eager.txt
torch_train /tmp/saekit-torch-train-fused.txt --impl fused --autocast-bf16
python3 bench/gpu/train_compare.py "$report" \
  "eager fp32 (autograd through topk, gather decode)=/tmp/saekit-torch-train-eager.txt" \
  "fused, bf16 autocast (sparsify's FusedEncoder + embedding_bag decode)=/tmp/saekit-torch-train-fused.txt" ||
  echo "training comparison (train_compare.py) failed" | tee -a "$report"

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
