#!/usr/bin/env python3
"""Writes the GGUF files gguf_model_config_test compares with config.json.

For each family, a tiny random model from tools/mkmodel (its config.json and
weights) converted by tools/gguf/hf_to_gguf.py; config.json and model.gguf
are committed under tests/model/testdata/gguf_config/<family>/ (the weights
are kept tiny, the GGUF files are a few tens of KiB). The test needs neither
Python nor the gguf package; rerun this after changing either tool:

  cmake --build build --target mkmodel
  python3 -m venv build/venv && build/venv/bin/pip install gguf numpy
  build/venv/bin/python tests/model/make_gguf_config_fixtures.py build/tools/mkmodel/mkmodel \\
      tests/model/testdata/gguf_config
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--layers", "2", "--hidden", "16", "--heads", "2", "--experts", "4", "--top-k", "2",
        "--ffn", "8", "--vocab", "260", "--dtype", "bf16", "--max-position", "512"]
# The value of norm_topk_prob each family's GGUF implies (llama.cpp's graph),
# so the two configs can agree; Mixtral always normalises.
FAMILIES = {
    # llama.cpp's OLMoE takes K's norm over the whole hidden size: as many
    # KV heads as heads, like the real model.
    "olmoe": ["--arch", "olmoe", "--norm-topk-prob", "false", "--kv-heads", "2"],
    "qwen2moe": ["--arch", "qwen2_moe", "--kv-heads", "1", "--norm-topk-prob", "false", "--shared-ffn", "12", "--dense-ffn", "24"],
    "qwen3moe": ["--arch", "qwen3_moe", "--kv-heads", "1", "--norm-topk-prob", "true", "--head-dim", "4", "--tie-embeddings",
                 "--dense-ffn", "24"],
    "mixtral": ["--arch", "mixtral", "--kv-heads", "1", "--seed", "3"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mkmodel", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name, flags in FAMILIES.items():
            model = Path(scratch) / name
            subprocess.run([str(args.mkmodel), *TINY, *flags, "--out", str(model)], check=True)
            out = args.out_dir / name
            out.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(ROOT / "tools/gguf/hf_to_gguf.py"), str(model), str(out / "model.gguf")],
                           check=True)
            shutil.copy(model / "config.json", out / "config.json")


if __name__ == "__main__":
    main()
