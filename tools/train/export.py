#!/usr/bin/python3
"""Exports a train.py checkpoint as a Hugging Face OLMoE model directory.

Writes to --out:
  config.json            OLMoE schema, as tools/mkmodel writes it (OlmoeForCausalLM)
  model.safetensors      written here byte by byte (no safetensors library):
                         u64 LE header length, JSON header (dtype, shape,
                         data_offsets per tensor, padded with spaces to 8
                         bytes), then the raw little-endian tensors
  tokenizer.json, tokenizer_config.json   copied from --tokenizer-dir
  heldout.txt            the held-out KJV chapters (perplexity, traces)
  reference_logits.json  the PyTorch model's logits on fixed held-out token
                         sequences, for tests/integration/trained_model_test.cc

The reference logits are computed in float64 from the exported (bf16-rounded)
weights, so they are the exact math of the checkpoint and the engine's f32
result differs from them only by its own rounding.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olmoe import Config, OlmoeModel, count_params, hf_state_dict  # noqa: E402

DTYPES = {"bf16": (torch.bfloat16, "BF16", "bfloat16"), "f32": (torch.float32, "F32", "float32")}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--tokenizer-dir", required=True)
    p.add_argument("--heldout-text", required=True)
    p.add_argument("--heldout-ids", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--ref-sequences", type=int, default=4)
    p.add_argument("--ref-length", type=int, default=32)
    p.add_argument("--ref-top", type=int, default=16, help="logits stored per position (the largest)")
    p.add_argument("--perplexity-tokens", type=int, default=8192,
                   help="held-out tokens for the PyTorch perplexity check per k (0: skip it; in float64 it "
                        "takes most of the export's time on a deep model)")
    return p.parse_args()


def tensor_bytes(t, torch_dtype):
    """Little-endian bytes of t in torch_dtype (bf16 via its raw 16-bit pattern)."""
    t = t.detach().to(torch_dtype).contiguous()
    if torch_dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype("<f4").tobytes()


def write_safetensors(path, tensors, torch_dtype, st_dtype):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = tensor_bytes(tensors[name], torch_dtype)
        header[name] = {"dtype": st_dtype, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header_json = json.dumps(header, separators=(",", ":")).encode()
    header_json += b" " * (-len(header_json) % 8)  # data section 8-byte aligned, as HF pads it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_json)))
        f.write(header_json)
        for blob in blobs:
            f.write(blob)


def config_json(c: Config, dtype_name, bos_eos_id):
    """The keys and order that tools/mkmodel/make_model.cc writes for --arch olmoe."""
    return {
        "architectures": ["OlmoeForCausalLM"],
        "model_type": "olmoe",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "max_position_embeddings": c.max_position_embeddings,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": False,
        "num_experts_per_tok": c.num_experts_per_tok,
        "bos_token_id": bos_eos_id,
        "eos_token_id": bos_eos_id,
        "torch_dtype": dtype_name,
        "num_experts": c.num_experts,
        "intermediate_size": c.intermediate_size,
        "norm_topk_prob": False,
        "clip_qkv": None,
        "attention_bias": False,
    }


@torch.no_grad()
def routing_margin(model, ids, k):
    """Smallest gap between the k-th and (k+1)-th router probability over all
    positions and layers: a near-tie could be broken differently by f32."""
    margins = []
    _, auxes = model(ids[None], k)
    x = model.embed_tokens(ids[None])
    # Recompute router probabilities layer by layer (the aux only keeps choices).
    from olmoe import rope_cos_sin
    t = ids.shape[0]
    cos, sin = rope_cos_sin(torch.arange(t), model.c.head_dim, model.c.rope_theta)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    for layer in model.layers:
        h = x + layer.self_attn(layer.input_layernorm(x), cos, sin, mask)
        probs = torch.softmax(layer.mlp.gate(layer.post_attention_layernorm(h)), dim=-1).reshape(t, -1)
        top = torch.topk(probs, k + 1, dim=-1).values if k < probs.shape[-1] else None
        if top is not None:
            margins.append((top[:, k - 1] - top[:, k]).min().item())
        moe_out, _ = layer.mlp(layer.post_attention_layernorm(h), k)
        x = h + moe_out
    return min(margins) if margins else 1.0


@torch.no_grad()
def reference_logits(model, heldout_ids, a):
    """Fixed held-out sequences (evenly spaced; one is skipped forward when
    its routing has a near-tie) with top logits and log-sum-exp per position,
    at the native k and at k = 1."""
    native = model.c.num_experts_per_tok
    n = len(heldout_ids)
    cases = []
    for k in sorted({native, 1}, reverse=True):
        sequences = []
        for i in range(a.ref_sequences):
            start = (i * (n - 4 * a.ref_length)) // a.ref_sequences
            while True:
                ids = heldout_ids[start:start + a.ref_length]
                margin = routing_margin(model, ids, k)
                if margin > 1e-4:
                    break
                start += 1
            logits, _ = model(ids[None], k)
            logits = logits[0]
            lse = torch.logsumexp(logits, dim=-1)
            top = torch.topk(logits, a.ref_top, dim=-1)
            sequences.append({
                "start": int(start),
                "min_routing_margin": margin,
                "ids": [int(x) for x in ids],
                "logsumexp": [float(x) for x in lse],
                "top_ids": [[int(x) for x in row] for row in top.indices],
                "top_logits": [[float(x) for x in row] for row in top.values],
            })
        cases.append({"k": k, "sequences": sequences})
    return cases


@torch.no_grad()
def heldout_perplexity(model, ids, context, k):
    """What `expertd perplexity --ctx context` computes: non-overlapping windows."""
    nll, count = 0.0, 0
    for begin in range(0, len(ids) - 1, context):
        window = ids[begin:begin + context]
        if len(window) < 2:
            break
        logits, _ = model(window[None], k)
        nll += F.cross_entropy(logits[0, :-1].float(), window[1:], reduction="sum").item()
        count += len(window) - 1
    return math.exp(nll / count)


def main():
    a = parse_args()
    torch.set_num_threads(1)
    ckpt = torch.load(a.ckpt)
    c = Config(**ckpt["config"])
    model = OlmoeModel(c)
    model.load_state_dict(ckpt["model"])
    torch_dtype, st_dtype, dtype_name = DTYPES[a.dtype]
    # Round every weight to the exported dtype so that the reference logits
    # below are those of the file, not of the f32 training weights.
    for p in model.parameters():
        p.data = p.data.to(torch_dtype).double()
    model.double().eval()

    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"), hf_state_dict(model), torch_dtype, st_dtype)
    with open(os.path.join(a.tokenizer_dir, "tokenizer.json")) as f:
        tokenizer = json.load(f)
    eos_id = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<|endoftext|>")
    with open(os.path.join(a.out, "config.json"), "w") as f:
        f.write(json.dumps(config_json(c, dtype_name, eos_id), indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(a.tokenizer_dir, name), os.path.join(a.out, name))
    shutil.copyfile(a.heldout_text, os.path.join(a.out, "heldout.txt"))

    heldout_ids = torch.from_numpy(np.fromfile(a.heldout_ids, dtype="<u2").astype(np.int64))
    reference = {
        "about": "PyTorch (tools/train/olmoe.py, float64, bf16-rounded weights) logits on held-out token "
                 "sequences: per position the log-sum-exp over the vocabulary and the largest logits.",
        "cases": reference_logits(model, heldout_ids, a),
    }
    with open(os.path.join(a.out, "reference_logits.json"), "w") as f:
        json.dump(reference, f, separators=(",", ":"))
        f.write("\n")
    total, active = count_params(c)
    print(f"exported step {ckpt['step']} to {a.out}: {total} params ({active} active), {a.dtype}")
    ppl_ids = heldout_ids[:a.perplexity_tokens]
    for k in range(1, c.num_experts_per_tok + 1 if a.perplexity_tokens > 0 else 1):
        print(f"pytorch held-out perplexity, first {len(ppl_ids)} tokens, ctx 512, k {k}: "
              f"{heldout_perplexity(model, ppl_ids, 512, k):.4f}")


if __name__ == "__main__":
    main()
