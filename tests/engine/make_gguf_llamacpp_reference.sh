#!/usr/bin/env bash
# Records llama.cpp's logits on each GGUF fixture of gguf_weights_test
# (testdata/gguf_weights/<name>.gguf -> <name>.llamacpp.f32: float32
# [12 tokens][260 vocab], the test's kPrompt), so the test compares expertd
# with llama.cpp without either llama.cpp or Python:
#
#   tests/engine/make_gguf_llamacpp_reference.sh LLAMA_CPP_SRC LLAMA_CPP_BUILD [NAME...]
#
# NAMEs (e.g. gpt-oss-f32) record those fixtures only; default all.
#
# LLAMA_CPP_SRC holds include/llama.h and ggml/include; LLAMA_CPP_BUILD/bin
# holds libllama.so (bench/vs_llamacpp builds one from the source PyPI's
# llama-cpp-python ships; the committed files came from llama-cpp-python
# 0.3.36's llama.cpp, CPU backend, one thread).
set -euo pipefail
src="$1"
build="$2"
shift 2
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="$root/tests/engine/testdata/gguf_weights"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cc -O1 -o "$scratch/llamacpp_logits" "$root/tools/gguf/llamacpp_logits.c" -I"$src/include" -I"$src/ggml/include" \
  -L"$build/bin" -lllama -Wl,-rpath,"$build/bin"
# gguf_weights_test.cc's kPrompt.
prompt=(5 17 200 99 3 42 42 1 259 77 128 0)
models=("$data"/*.gguf)
if [ $# -gt 0 ]; then
  models=()
  for name in "$@"; do models+=("$data/$name.gguf"); done
fi
for model in "${models[@]}"; do
  name="$(basename "$model" .gguf)"
  "$scratch/llamacpp_logits" "$model" "${prompt[@]}" > "$data/$name.llamacpp.f32" 2> "$scratch/$name.log" || {
    cat "$scratch/$name.log" >&2
    exit 1
  }
  echo "$name: $(stat -c %s "$data/$name.llamacpp.f32") bytes"
done
