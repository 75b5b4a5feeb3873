#!/usr/bin/env python3
"""Writes the bundled model's vocabulary (models/olmoe-kjv) as a GGUF file.

gguf_tokenizer_test checks that the tokenizer built from this file encodes
and decodes exactly as the one built from models/olmoe-kjv/tokenizer.json.
The vocabulary is written by tools/gguf/hf_to_gguf.py's own add_tokenizer
(the converter bench/vs_llamacpp runs llama.cpp on), into a file with no
tensors (about 40 KiB, committed as
tests/model/testdata/olmoe_kjv_tokenizer.gguf). Rerun after changing the
converter or the model:

  python3 -m venv build/venv && build/venv/bin/pip install gguf numpy
  build/venv/bin/python tests/model/make_gguf_tokenizer_fixture.py tests/model/testdata/olmoe_kjv_tokenizer.gguf
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "gguf"))

import gguf  # noqa: E402
import hf_to_gguf  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    model_dir = ROOT / "models" / "olmoe-kjv"
    config = json.loads((model_dir / "config.json").read_text())
    writer = gguf.GGUFWriter(str(out), "olmoe")
    writer.add_name("olmoe-kjv vocabulary")
    hf_to_gguf.add_tokenizer(writer, model_dir, config, "olmo")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
