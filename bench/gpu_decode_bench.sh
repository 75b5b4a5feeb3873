#!/usr/bin/env bash
# Issue 8's GPU benchmark, everything from one run on one machine:
#   1. gpu_bench: plain pinned cudaMemcpy H2D (the link's ceiling) against the
#      VRAM tier's expert copies, and the bf16 matvec kernel's bandwidth;
#   2. decode on the GPU of an OLMoE-1B-7B-shaped bf16 model made by mkmodel
#      (16 layers, 64 experts, top-8, hidden 2048, ffn 1024: 12 MiB experts,
#      12.9 GB of them), VRAM tier 5% of the experts (as in SpecMD), DRAM
#      holding all of them: decode tokens/s and time to first token for LRU
#      and Least-Stale, prefetch off and cross-layer, execution placement on
#      and off; and once with prefetches stopping in DRAM
#      (--no-prefetch-to-device).
# The first run packs the experts (12.9 GB written once); each configuration
# runs twice and the second (DRAM warm) is the one reported.
#
#   bench/gpu_decode_bench.sh BUILD_DIR [WORK_DIR] [TOKENS]
#
# SMOKE=1 runs the same steps on a small model on the CPU (--gpu off), to
# check the script itself on a machine without a GPU.
set -euo pipefail
build="$(cd "${1:?usage: gpu_decode_bench.sh BUILD_DIR [WORK_DIR] [TOKENS]}" && pwd)"
work="${2:-/tmp/expertd-gpu-bench}"
tokens="${3:-64}"
mkdir -p "$work"

echo "== copies and kernels (bench/gpu_bench)"
"$build/bench/gpu_bench"

if [ "${SMOKE:-0}" = 1 ]; then
  model="$work/smoke" gpu=off layers=4 num_experts=16 top_k=4 hidden=256 ffn=128 heads=4 vocab=512
else
  model="$work/olmoe-1b-7b-shaped" gpu=on layers=16 num_experts=64 top_k=8 hidden=2048 ffn=1024 heads=16 vocab=50304
fi
if [ ! -f "$model/config.json" ]; then
  echo "== making $model"
  "$build/tools/mkmodel/mkmodel" --arch olmoe --layers "$layers" --experts "$num_experts" --top-k "$top_k" \
    --hidden "$hidden" --ffn "$ffn" --heads "$heads" --kv-heads "$heads" --vocab "$vocab" --max-position 4096 \
    --dtype bf16 --seed 1 --out "$model"
fi

expert_bytes=$((3 * hidden * ffn * 2))
experts=$((layers * num_experts))
vram=$((experts * expert_bytes * 5 / 100))
# The tier must hold one layer's top-k.
[ "$vram" -ge $((top_k * expert_bytes)) ] || vram=$((top_k * expert_bytes))
dram=$((experts * expert_bytes + 64 * expert_bytes))
prompt="The tiered expert cache keeps the hottest experts in VRAM while the rest wait in DRAM and on NVMe, and"
echo "== decode: VRAM tier $((vram >> 20)) MiB (5% of $experts experts), DRAM $((dram >> 20)) MiB, $tokens tokens"
printf '%-12s %-12s %-9s %-9s %10s %12s %10s %10s %10s\n' policy prefetch placement to-vram "TTFT ms" \
  "decode tok/s" "vram hit" "on cpu" "stall ms"
# One configuration: a warm-up run (it packs the experts the first time and
# fills DRAM), then the measured run.
run_config() {
  local policy=$1 prefetch=$2 placement=$3 to_device=$4
  local args=(run --model "$model" --gpu "$gpu" --dram-budget "$dram" --device-budget "$vram" --policy "$policy"
              --prefetch "$prefetch" --prompt "$prompt" -n "$tokens")
  [ "$placement" = off ] && args+=(--no-execution-placement)
  [ "$to_device" = off ] && args+=(--no-prefetch-to-device)
  "$build/daemon/expertd" "${args[@]}" >/dev/null 2>&1 || true
  local out
  out="$("$build/daemon/expertd" "${args[@]}" 2>"$work/last.err")" || { cat "$work/last.err" >&2; exit 1; }
  printf '%-12s %-12s %-9s %-9s %10s %12s %10s %10s %10s\n' "$policy" "$prefetch" "$placement" "$to_device" \
    "$(sed -n 's/.*first token after \([0-9.]*\) ms.*/\1/p' <<<"$out")" \
    "$(sed -n 's/.*decode: [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1/p' <<<"$out")" \
    "$(sed -n 's/^cache device ([^)]*): hit rate \([0-9.]*\),.*/\1/p' <<<"$out")" \
    "$(sed -n 's/^gpu: .* \([0-9]*\) on the cpu.*/\1/p' <<<"$out")" \
    "$(sed -n 's/^stall: \([0-9.]*\) ms per token.*/\1/p' <<<"$out")"
}
for policy in lru least-stale; do
  for prefetch in none cross-layer; do
    for placement in on off; do
      run_config "$policy" "$prefetch" "$placement" on
    done
  done
done
# Prefetches stopping in DRAM instead of going on into VRAM.
run_config least-stale cross-layer on off
