#!/usr/bin/env python3
"""Reference logits of Hugging Face transformers for gpt-oss test models.

An implementation independent of ours: transformers' GptOssForCausalLM
(modeling_gpt_oss.py) runs, in f32 with eager attention, the random models
that `mkmodel --arch gpt_oss` makes with the flags below, on the tokens below
(longer than the sliding window, so the window matters), and the logits of
every position are written to <variant>.logits (one line per position, vocab
floats). The plain-loop reference (tests/reference/reference_model.cc) is
checked against these files by tests/engine/gpt_oss_test.cc, which makes the
same models with the same options (keep the two in step).

Run once, from the repository root, after building mkmodel:
  python3 -m venv build/hfvenv && build/hfvenv/bin/pip install torch transformers==5.24.0 safetensors
  build/hfvenv/bin/python tests/reference/hf_gpt_oss/make_reference.py build/tools/mkmodel/mkmodel

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

COMMON = ["--arch", "gpt_oss", "--dtype", "f32", "--hidden", "64", "--experts", "8", "--top-k", "4",
          "--ffn", "32", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--vocab", "320"]

# Two layers (sliding, full) with a window of 4 and YaRN x32 over an original
# context of 64 (the real models' factor); four layers with a window of 3,
# YaRN x4 and a looser clamp. max_position_embeddings is factor x original,
# as in the real models (transformers warns otherwise).
VARIANTS = {
    "window4": ["--layers", "2", "--sliding-window", "4", "--swiglu-limit", "1.0", "--yarn-factor", "32",
                "--yarn-original-max-position", "64", "--max-position", "2048", "--seed", "21"],
    "four_layers": ["--layers", "4", "--sliding-window", "3", "--swiglu-limit", "1.5", "--yarn-factor", "4",
                    "--yarn-original-max-position", "16", "--max-position", "64", "--seed", "22"],
    # The experts as the released checkpoints ship them: MXFP4 blocks and
    # scales, quantization_config quant_method mxfp4. Without triton's
    # kernels transformers dequantizes them on load (Mxfp4Config(dequantize=
    # True) says so explicitly) into the f32 parameters.
    "mxfp4": ["--layers", "2", "--sliding-window", "4", "--swiglu-limit", "1.0", "--yarn-factor", "32",
              "--yarn-original-max-position", "64", "--max-position", "2048", "--mxfp4-experts", "--seed", "23"],
}


def main():
    mkmodel = sys.argv[1]
    torch.manual_seed(0)
    for name, flags in VARIANTS.items():
        with tempfile.TemporaryDirectory() as model_dir:
            subprocess.run([mkmodel, *COMMON, *flags, "--out", model_dir], check=True)
            extra = {}
            if "--mxfp4-experts" in flags:
                extra["quantization_config"] = transformers.Mxfp4Config(dequantize=True)
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True, **extra)
            if "--mxfp4-experts" in flags:
                # Dequantized into f32 parameters, not run by an MXFP4 kernel.
                experts = model.model.layers[0].mlp.experts
                assert experts.gate_up_proj.dtype == torch.float32, experts.gate_up_proj.dtype
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
