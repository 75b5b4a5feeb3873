#!/usr/bin/env python3
"""Writes the GGUF models gguf_weights_test loads and compares with the same
model loaded from its HF directory.

For each family, a tiny random model from tools/mkmodel, written as F32 and as
BF16 (mkmodel --dtype), each converted by tools/gguf/hf_to_gguf.py, and the
F32 one also quantized to Q8_0 (hf_to_gguf.py --type q8_0: gguf-py's
reference quantizer). The test makes the same HF models at run time with the
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
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mkmodel", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    converter = str(ROOT / "tools/gguf/hf_to_gguf.py")
    with tempfile.TemporaryDirectory() as scratch:
        for name, flags in FAMILIES.items():
            for dtype in ("f32", "bf16"):
                model = Path(scratch) / f"{name}-{dtype}"
                subprocess.run([str(args.mkmodel), *SHAPE, *flags, "--dtype", dtype, "--out", str(model)], check=True)
                subprocess.run([sys.executable, converter, str(model), str(args.out_dir / f"{name}-{dtype}.gguf")],
                               check=True)
                if dtype == "f32":
                    subprocess.run([sys.executable, converter, str(model), str(args.out_dir / f"{name}-q8_0.gguf"),
                                    "--type", "q8_0"], check=True)


if __name__ == "__main__":
    main()
