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
# then runs once. Rows with every expert in VRAM and on the CPU alone give the
# two resident speeds the offloaded rows sit between.
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
all=$((experts * expert_bytes + 64 * expert_bytes))
prompt="The tiered expert cache keeps the hottest experts in VRAM while the rest wait in DRAM and on NVMe, and"
# The first run packs the experts into model.experts (written once, kept).
"$build/daemon/expertd" run --model "$model" --gpu "$gpu" --dram-budget "$all" --prompt "$prompt" -n 1 >/dev/null 2>&1 || true
echo "== decode: VRAM tier $((vram >> 20)) MiB (5% of $experts experts), DRAM $((all >> 20)) MiB, $tokens tokens"
echo "   every run is a fresh process: DRAM starts empty and O_DIRECT reads bypass the page cache, so the time to"
echo "   first token includes reading the prompt's experts from NVMe; hit/hidden/miss are the compute tier's"
echo "   (VRAM, or DRAM for the cpu row), each access counted once"
printf '%-12s %-12s %-9s %-9s %-9s %9s %12s %7s %7s %7s %8s %9s\n' policy prefetch placement to-vram vram \
  "TTFT ms" "decode tok/s" hit hidden miss "on cpu" "stall ms"
# One configuration, run once. vram: the VRAM tier's budget ("5%", "all", or "none" for the CPU).
run_config() {
  local policy=$1 prefetch=$2 placement=$3 to_device=$4 vram_label=$5
  local args=(run --model "$model" --dram-budget "$all" --policy "$policy" --prefetch "$prefetch"
              --prompt "$prompt" -n "$tokens")
  case "$vram_label" in
    5%) args+=(--gpu "$gpu" --device-budget "$vram") ;;
    all) args+=(--gpu "$gpu" --device-budget "$all") ;;
    none) args+=(--gpu off) ;;
  esac
  [ "$placement" = off ] && args+=(--no-execution-placement)
  [ "$to_device" = off ] && args+=(--no-prefetch-to-device)
  local out tier
  out="$("$build/daemon/expertd" "${args[@]}" 2>"$work/last.err")" || { cat "$work/last.err" >&2; exit 1; }
  tier=device
  grep -q '^cache device' <<<"$out" || tier=dram
  local rates
  rates="$(sed -n "s/^cache $tier ([^)]*): [0-9]* accesses: hit \([0-9.]*\), hidden \([0-9.]*\), miss \([0-9.]*\) .*/\1 \2 \3/p" <<<"$out")"
  read -r hit hidden miss <<<"${rates:-- - -}"
  printf '%-12s %-12s %-9s %-9s %-9s %9s %12s %7s %7s %7s %8s %9s\n' "$policy" "$prefetch" "$placement" "$to_device" \
    "$vram_label" \
    "$(sed -n 's/.*first token after \([0-9.]*\) ms.*/\1/p' <<<"$out")" \
    "$(sed -n 's/.*decode: [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1/p' <<<"$out")" \
    "$hit" "$hidden" "$miss" \
    "$(sed -n 's/^gpu: .* \([0-9]*\) on the cpu.*/\1/p' <<<"$out")" \
    "$(sed -n 's/^stall: \([0-9.]*\) ms per token.*/\1/p' <<<"$out")"
}
run_config lru none on on 5%
run_config least-stale none on on 5%
run_config least-stale cross-layer on on 5%
run_config least-stale cross-layer off on 5%
# Prefetches stopping in DRAM instead of going on into VRAM.
run_config least-stale cross-layer on off 5%
# Every expert in VRAM (the GPU's resident speed), and the same model on the CPU alone.
run_config least-stale none on on all
run_config least-stale none on on none
