#!/usr/bin/env bash
# Writes testdata/gguf_weights/qwen3moe-q4_k_m.gguf: a Qwen3-MoE model from
# mkmodel (256 wide, as K-quant rows are whole 256-element super-blocks; the
# options are gguf_weights_test's KQuantOptions), converted to F32 GGUF by
# tools/gguf/hf_to_gguf.py and quantized to Q4_K_M by llama.cpp's own
# quantizer (tools/gguf/llamacpp_quantize.c over libllama), which mixes Q4_K
# and Q6_K as it does for the files people download. Then run
# make_gguf_llamacpp_reference.sh for its llama.cpp logits.
#
#   PYTHONPATH=LLAMA_CPP_SRC/gguf-py tests/engine/make_gguf_kquant_fixture.sh MKMODEL LLAMA_CPP_SRC LLAMA_CPP_BUILD
set -euo pipefail
mkmodel="$1"
src="$2"
build="$3"
root="$(cd "$(dirname "$0")/../.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cc -O1 -o "$scratch/llamacpp_quantize" "$root/tools/gguf/llamacpp_quantize.c" -I"$src/include" -I"$src/ggml/include" \
  -L"$build/bin" -lllama -Wl,-rpath,"$build/bin"
"$mkmodel" --arch qwen3_moe --layers 2 --hidden 256 --heads 4 --kv-heads 1 --experts 2 --top-k 2 --ffn 256 \
  --vocab 260 --max-position 512 --norm-topk-prob true --tie-embeddings --seed 15 --dtype f32 --out "$scratch/model"
"${PYTHON:-python3}" "$root/tools/gguf/hf_to_gguf.py" "$scratch/model" "$scratch/f32.gguf"
"$scratch/llamacpp_quantize" "$scratch/f32.gguf" "$root/tests/engine/testdata/gguf_weights/qwen3moe-q4_k_m.gguf" q4_k_m \
  > "$scratch/quantize.log" 2>&1 || { cat "$scratch/quantize.log" >&2; exit 1; }
grep -E "converting to" "$scratch/quantize.log" | sed -E 's/^\[[^]]*\] *([^ ]+) .*converting to ([^ ]+) .*/\1 \2/'
