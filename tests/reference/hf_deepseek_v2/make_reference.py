#!/usr/bin/env python3
"""Reference logits of Hugging Face transformers for DeepSeek-V2 test models.

An implementation independent of ours: transformers' DeepseekV2ForCausalLM
(modeling_deepseek_v2.py) runs, in f32 with eager attention, the random
models that `mkmodel --arch deepseek_v2` makes with the flags below, on the
tokens below, and the logits of every position are written to
<variant>.logits (one line per position, vocab floats). The plain-loop
reference (tests/reference/reference_model.cc) is checked against these files
by tests/engine/deepseek_test.cc, which makes the same models with the same
options (keep the two in step).

Run once, from the repository root, after building mkmodel:
  python3 -m venv build/hfvenv && build/hfvenv/bin/pip install torch transformers==5.24.0 safetensors
  build/hfvenv/bin/python tests/reference/hf_deepseek_v2/make_reference.py build/tools/mkmodel/mkmodel

Made with transformers 5.24.0 and torch on the CPU.
"""

import os
import subprocess
import sys
import tempfile

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))

TOKENS = [5, 17, 260, 99, 3, 42, 42, 1, 300, 77, 128, 64, 250, 11]

COMMON = ["--arch", "deepseek_v2", "--dtype", "f32", "--layers", "3", "--hidden", "64", "--experts", "8",
          "--ffn", "32", "--dense-ffn", "96", "--heads", "4", "--vocab", "320", "--kv-lora-rank", "32",
          "--qk-nope-head-dim", "16", "--qk-rope-head-dim", "8", "--v-head-dim", "16", "--first-dense-layers", "1",
          "--norm-topk-prob", "false"]

# V2-Lite's shape: a plain q_proj, greedy top-k, YaRN RoPE; and V2's: a
# low-rank query and group-limited routing.
VARIANTS = {
    "lite_yarn": ["--top-k", "2", "--q-lora-rank", "0", "--shared-experts", "2", "--routed-scaling-factor", "1.0",
                  "--yarn-factor", "4", "--yarn-original-max-position", "64", "--max-position", "256",
                  "--seed", "11"],
    "q_lora_grouped": ["--top-k", "3", "--q-lora-rank", "24", "--shared-experts", "1", "--n-group", "4",
                       "--topk-group", "2", "--routed-scaling-factor", "1.5", "--seed", "12"],
}


def main():
    mkmodel = sys.argv[1]
    torch.manual_seed(0)
    for name, flags in VARIANTS.items():
        with tempfile.TemporaryDirectory() as model_dir:
            subprocess.run([mkmodel, *COMMON, *flags, "--out", model_dir], check=True)
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
            # Every weight must come from the file: a missing one would be
            # initialised at random and the check would prove nothing.
            problems = {k: v for k, v in info.items() if v}
            if problems:
                sys.exit(f"{name}: transformers did not load the model as written: {problems}")
            model.eval()
            with torch.no_grad():
                logits = model(torch.tensor([TOKENS])).logits[0]
        with open(os.path.join(HERE, f"{name}.logits"), "w") as out:
            out.write(f"# transformers {transformers.__version__}, torch {torch.__version__}: "
                      f"mkmodel {' '.join(COMMON + flags)}; tokens {' '.join(map(str, TOKENS))}\n")
            for row in logits.tolist():
                out.write(" ".join(f"{v:.8g}" for v in row) + "\n")
        print(f"wrote {name}.logits: {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
