#!/usr/bin/env python3
"""Writes the GGUF models gguf_weights_test loads and compares with the same
model loaded from its HF directory.

For each family, a tiny random model from tools/mkmodel, written as F32 and as
BF16 (mkmodel --dtype), each converted by tools/gguf/hf_to_gguf.py, and the
F32 one also quantized to Q8_0 (hf_to_gguf.py --type q8_0: gguf-py's
reference quantizer); and SINGLE's one-dtype models (gpt-oss with MXFP4
experts, DeepSeek-V2 in F32 and BF16). Names after the directory make only those, e.g. `... gpt-oss
gpt-oss-mxfp4`. The test makes the same HF models at run time with the
mkmodel library (same options, so the same bytes) and needs neither Python nor
the gguf package; the options below are the test's kFamilies, keep them
equal. Rerun after changing mkmodel or the converter:

  cmake --build build --target mkmodel
  PYTHONPATH=/path/to/llama.cpp/gguf-py python3 tests/engine/make_gguf_weight_fixtures.py \\
      build/tools/mkmodel/mkmodel tests/engine/testdata/gguf_weights

(or a venv with `pip install gguf numpy`). Every file is under 300 KiB.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Widths are multiples of 32 so every matrix is whole Q8_0 blocks.
SHAPE = ["--layers", "2", "--hidden", "32", "--heads", "2", "--experts", "4", "--top-k", "2",
         "--ffn", "32", "--vocab", "260", "--max-position", "512"]
FAMILIES = {
    "olmoe": ["--arch", "olmoe", "--kv-heads", "2", "--norm-topk-prob", "false", "--seed", "11"],
    "qwen2moe": ["--arch", "qwen2_moe", "--kv-heads", "1", "--norm-topk-prob", "false", "--shared-ffn", "64",
                 "--seed", "12"],
    # Tied: the GGUF has no output.weight, the LM head is the embedding.
    "qwen3moe": ["--arch", "qwen3_moe", "--kv-heads", "1", "--norm-topk-prob", "true", "--tie-embeddings",
                 "--seed", "13"],
    "mixtral": ["--arch", "mixtral", "--kv-heads", "1", "--seed", "14"],
    # Sinks, biases, a window of 4 (the prompt is 12 long) on layer 0 and
    # YaRN x32 as the released models, over an original context of 16 so
    # that the ramp's ends (0 and 0.63 dimensions) round to the same whole
    # dimensions (0 and 1): llama.cpp always rounds them, HF's gpt-oss does
    # not, and this way the two compute the same RoPE. (Over an original 64
    # the upper end is 1.56, rounded to 2 by llama.cpp: its logits then
    # differ from expertd's, which equal transformers', by up to 3.7% of the
    # largest logit from position 1 on, against 0.06% here.) SwiGLU limit 7,
    # the one llama.cpp's graph has built in.
    "gpt-oss": ["--arch", "gpt_oss", "--kv-heads", "1", "--head-dim", "16", "--sliding-window", "4",
                "--yarn-factor", "32", "--yarn-original-max-position", "16", "--swiglu-limit", "7", "--seed", "18"],
}
# Files of one dtype: gpt-oss with its experts in MXFP4 as the released
# checkpoints ship them (the rest F32), the converter repacking HF's blocks.
# DeepSeek-V2 with a low-rank query (q_lora_rank 24), a dense first layer,
# a shared expert, renormalised top-2 scaled by 1.5; llama.cpp's deepseek2
# with attn_kv_b whole.
DEEPSEEK2 = ["--arch", "deepseek_v2", "--q-lora-rank", "24", "--kv-lora-rank", "32", "--dense-ffn", "32",
             "--first-dense-layers", "1", "--shared-experts", "1", "--routed-scaling-factor", "1.5", "--seed", "19"]
# As V2-Lite: a plain q_proj, two shared experts, YaRN (x4 over an original
# 64, mscale = mscale_all_dim = 0.707).
DEEPSEEK2_LITE = ["--arch", "deepseek_v2", "--q-lora-rank", "0", "--kv-lora-rank", "32", "--dense-ffn", "32",
                  "--first-dense-layers", "1", "--shared-experts", "2", "--yarn-factor", "4",
                  "--yarn-original-max-position", "64", "--seed", "20"]
# name: (mkmodel flags, converter flags)
SINGLE = {
    "gpt-oss-mxfp4": ([*FAMILIES["gpt-oss"][:-1], "17", "--mxfp4-experts", "--dtype", "f32"], []),
    "deepseek2-f32": ([*DEEPSEEK2, "--dtype", "f32"], []),
    "deepseek2-bf16": ([*DEEPSEEK2, "--dtype", "bf16"], []),
    # kv_b as attn_k_b and attn_v_b, as llama.cpp's converter writes it.
    "deepseek2-split-f32": ([*DEEPSEEK2, "--dtype", "f32"], ["--split-kv-b"]),
    "deepseek2-lite-f32": ([*DEEPSEEK2_LITE, "--dtype", "f32"], ["--split-kv-b"]),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mkmodel", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("families", nargs="*", help="only these (default: all)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    converter = str(ROOT / "tools/gguf/hf_to_gguf.py")
    with tempfile.TemporaryDirectory() as scratch:
        for name, flags in FAMILIES.items():
            if args.families and name not in args.families:
                continue
            for dtype in ("f32", "bf16"):
                model = Path(scratch) / f"{name}-{dtype}"
                subprocess.run([str(args.mkmodel), *SHAPE, *flags, "--dtype", dtype, "--out", str(model)], check=True)
                subprocess.run([sys.executable, converter, str(model), str(args.out_dir / f"{name}-{dtype}.gguf")],
                               check=True)
                if dtype == "f32":
                    subprocess.run([sys.executable, converter, str(model), str(args.out_dir / f"{name}-q8_0.gguf"),
                                    "--type", "q8_0"], check=True)
        for name, (flags, converter_flags) in SINGLE.items():
            if args.families and name not in args.families:
                continue
            model = Path(scratch) / name
            subprocess.run([str(args.mkmodel), *SHAPE, *flags, "--out", str(model)], check=True)
            subprocess.run([sys.executable, converter, str(model), str(args.out_dir / f"{name}.gguf"),
                            *converter_flags], check=True)


if __name__ == "__main__":
    main()
