#!/usr/bin/env bash
# Where the GPU's resident decode time goes, on a 4-layer model of the
# OLMoE-1B-7B shape (hidden 2048, 64 experts of 1024, top-8, vocab 50304):
#   - every expert uploaded with the dense weights (no cache): the GPU pass's
#     own speed, kernels plus launches plus one host sync per MoE layer;
#   - every expert in the VRAM tier through the cache (with and without
#     execution placement): the same plus the cache's layer cycle;
#   - the CPU alone with every expert in DRAM.
# Decode tokens/s of each, one run each, 256 tokens.
#
#   bench/gpu_resident_split.sh BUILD_DIR [WORK_DIR]
set -euo pipefail
build="$(cd "${1:?usage: gpu_resident_split.sh BUILD_DIR [WORK_DIR]}" && pwd)"
work="${2:-/tmp/expertd-gpu-split}"
model="$work/olmoe-shape-4l"
mkdir -p "$work"
[ -f "$model/config.json" ] || "$build/tools/mkmodel/mkmodel" --arch olmoe --layers 4 --experts 64 --top-k 8 \
  --hidden 2048 --ffn 1024 --heads 16 --kv-heads 16 --vocab 50304 --max-position 4096 --dtype bf16 --seed 1 \
  --out "$model" >/dev/null
prompt="The tiered expert cache keeps the hottest experts in VRAM while the rest wait in DRAM and on NVMe, and"
# Every expert (256 of 12 MiB) plus room.
all=$((280 * 12582912))
run() {
  echo "== expertd run $*"
  "$build/daemon/expertd" run --model "$model" --prompt "$prompt" -n 256 "$@" 2>/dev/null |
    grep -E '^(prompt:|gpu:|cache device|cache dram|stall:)'
}
run --gpu on
run --gpu on --dram-budget "$all" --device-budget "$all"
run --gpu on --dram-budget "$all" --device-budget "$all" --no-execution-placement
run --gpu off --dram-budget "$all"
