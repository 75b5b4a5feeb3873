#!/usr/bin/env python3
"""Writes a GGUF file of an HF MoE checkpoint, tensors in their own dtype.

For running llama.cpp on exactly the weights expertd runs (bench/vs_llamacpp):
our models are made here (tools/mkmodel), so llama.cpp's converter, which
needs torch and transformers, is not used; this writes the same layout with
the `gguf` package alone. Tensor names, shapes and metadata keys follow
llama.cpp's loader for each architecture (src/models/<arch>.cpp there).

  hf_to_gguf.py MODEL_DIR OUT.gguf [--type q8_0|q4_0]

Supported: OlmoeForCausalLM ("olmoe"), Qwen2MoeForCausalLM ("qwen2moe":
shared expert and q/k/v biases), Qwen3MoeForCausalLM ("qwen3moe") and
MixtralForCausalLM ("llama" with llama.expert_count; q and k rows permuted
to llama.cpp's RoPE layout as its converter does). BF16 tensors stay BF16,
F32 stay F32; with --type, every matrix but the routers is quantized with
gguf-py's reference quantizer (gguf.quants.quantize; Q8_0 and Q4_0, the
formats it implements), the embedding and LM head included, as llama.cpp's
llama-quantize leaves the routers (ffn_gate_inp) in F32. Where llama.cpp's loader falls back to the
embedding (qwen3moe, llama), a tied LM head is left out, as llama.cpp's own
converter leaves it; olmoe and qwen2moe require output.weight, so it is
written. Mixtral's vocabulary is written as "gpt2" (pre-tokenizer "gpt-2")
when its tokenizer.json is byte-level BPE (mkmodel's are); a SentencePiece-
style one is not converted: the file then says tokenizer.ggml.model "none"
and has no token list (llama.cpp runs it on token ids only), only
llama.vocab_size and the bos/eos ids. Qwen layers with a dense MLP
(mlp_only_layers) are not supported (llama.cpp's qwen graphs have none).
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
import gguf

# safetensors dtype -> (numpy storage dtype, GGML type)
DTYPES = {
    "BF16": (np.uint16, gguf.GGMLQuantizationType.BF16),
    "F16": (np.float16, gguf.GGMLQuantizationType.F16),
    "F32": (np.float32, gguf.GGMLQuantizationType.F32),
}


class Checkpoint:
    """The tensors of every *.safetensors file of a model directory, read
    lazily as numpy arrays of their raw storage (bf16 as uint16)."""

    def __init__(self, model_dir: Path):
        self.entries = {}
        for path in sorted(model_dir.glob("*.safetensors")):
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                self.entries[name] = (path, 8 + header_len, info)

    def __contains__(self, name):
        return name in self.entries

    def describe(self, name):
        """(shape, numpy storage dtype, GGML type) without reading data."""
        if name not in self.entries:
            sys.exit(f"the checkpoint has no tensor {name}")
        info = self.entries[name][2]
        if info["dtype"] not in DTYPES:
            sys.exit(f"{name}: dtype {info['dtype']} is not supported")
        storage, ggml_type = DTYPES[info["dtype"]]
        return tuple(info["shape"]), storage, ggml_type

    def get(self, name):
        path, base, info = self.entries[name]
        shape, storage, _ = self.describe(name)
        begin, end = info["data_offsets"]
        array = np.memmap(path, dtype=np.uint8, mode="r", offset=base + begin, shape=(end - begin,))
        return array.view(storage).reshape(shape)


def widen_to_f32(array):
    """F32 values of a BF16 (uint16 storage), F16 or F32 array."""
    if array.dtype == np.uint16:  # bf16: the upper half of an f32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, config: dict, pre: str):
    """Byte-level BPE as llama.cpp's "gpt2" tokenizer model. The vocabulary
    is padded to the model's vocab_size with unused tokens, as llama.cpp's
    own converter does, so the embedding and LM head keep their shape."""
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    model = tokenizer["model"]
    if model["type"] != "BPE":
        sys.exit(f"tokenizer model {model['type']} is not supported (BPE only)")
    vocab_size = config["vocab_size"]
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for text, token_id in model["vocab"].items():
        tokens[token_id] = text
        types[token_id] = gguf.TokenType.NORMAL
    for added in tokenizer.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if config.get("bos_token_id") is not None:
        writer.add_bos_token_id(config["bos_token_id"])
    if config.get("eos_token_id") is not None:
        writer.add_eos_token_id(config["eos_token_id"])
    writer.add_add_bos_token(False)


QUANT_TYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def convert(model_dir: Path, out: Path, quant: str | None = None):
    config = json.loads((model_dir / "config.json").read_text())
    architecture = config["architectures"][0]
    arch = {"OlmoeForCausalLM": "olmoe", "Qwen2MoeForCausalLM": "qwen2moe", "Qwen3MoeForCausalLM": "qwen3moe",
            "MixtralForCausalLM": "llama"}.get(architecture)
    if arch is None:
        sys.exit(f"{architecture} is not supported "
                 "(OlmoeForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, MixtralForCausalLM)")
    if config.get("mlp_only_layers") or config.get("decoder_sparse_step", 1) != 1:
        sys.exit("Qwen layers with a dense MLP (mlp_only_layers, decoder_sparse_step) are not supported")
    checkpoint = Checkpoint(model_dir)
    writer = gguf.GGUFWriter(str(out), arch)
    layers = config["num_hidden_layers"]
    experts = config["num_local_experts"] if arch == "llama" else config["num_experts"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    tied = config.get("tie_word_embeddings", False) or "lm_head.weight" not in checkpoint
    writer.add_name(model_dir.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_expert_count(experts)
    writer.add_expert_used_count(config["num_experts_per_tok"])
    if arch == "olmoe":
        writer.add_feed_forward_length(config["intermediate_size"])
        add_tokenizer(writer, model_dir, config, "olmo")
    elif arch == "llama":
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(config["vocab_size"])
        tokenizer_json = model_dir / "tokenizer.json"
        if tokenizer_json.exists() and json.loads(tokenizer_json.read_text())["model"]["type"] == "BPE":
            add_tokenizer(writer, model_dir, config, "gpt-2")
        else:
            writer.add_tokenizer_model("none")  # llama.cpp's "no vocabulary"
            if config.get("bos_token_id") is not None:
                writer.add_bos_token_id(config["bos_token_id"])
            if config.get("eos_token_id") is not None:
                writer.add_eos_token_id(config["eos_token_id"])
    else:
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_expert_feed_forward_length(config["moe_intermediate_size"])
        if arch == "qwen2moe":
            writer.add_expert_shared_feed_forward_length(config["shared_expert_intermediate_size"])
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        add_tokenizer(writer, model_dir, config, "qwen2")

    # Tensors are described first and read one at a time while writing, so
    # a model larger than memory converts.
    plan = []  # (gguf name, hf names: stacked along a new first axis when several, transform or None)

    def add(name, *hf_names, transform=None):
        plan.append((name, hf_names, transform))

    def add_if_present(name, hf_name):
        if hf_name in checkpoint:
            add(name, hf_name)

    def rope_permute(n_head):
        """llama.cpp's llama graph rotates adjacent pairs of a head (GGML's
        normal RoPE), HF's Llama the two halves: its converter reorders each
        head's rows from halves to pairs, and so does this."""
        def permute(w):
            return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        return permute

    add("token_embd.weight", "model.embed_tokens.weight")
    add("output_norm.weight", "model.norm.weight")
    if not tied or arch in ("olmoe", "qwen2moe"):
        add("output.weight", "model.embed_tokens.weight" if tied else "lm_head.weight")
    if arch == "llama":
        moe, gate, up, down = "block_sparse_moe", "w1", "w3", "w2"
    else:
        moe, gate, up, down = "mlp", "gate_proj", "up_proj", "down_proj"
    for i in range(layers):
        p = f"model.layers.{i}"
        add(f"blk.{i}.attn_norm.weight", f"{p}.input_layernorm.weight")
        add(f"blk.{i}.attn_q.weight", f"{p}.self_attn.q_proj.weight",
            transform=rope_permute(heads) if arch == "llama" else None)
        add(f"blk.{i}.attn_k.weight", f"{p}.self_attn.k_proj.weight",
            transform=rope_permute(kv_heads) if arch == "llama" else None)
        add(f"blk.{i}.attn_v.weight", f"{p}.self_attn.v_proj.weight")
        add(f"blk.{i}.attn_output.weight", f"{p}.self_attn.o_proj.weight")
        for proj in ("q", "k", "v"):
            add_if_present(f"blk.{i}.attn_{proj}.bias", f"{p}.self_attn.{proj}_proj.bias")
        add_if_present(f"blk.{i}.attn_q_norm.weight", f"{p}.self_attn.q_norm.weight")
        add_if_present(f"blk.{i}.attn_k_norm.weight", f"{p}.self_attn.k_norm.weight")
        add(f"blk.{i}.ffn_norm.weight", f"{p}.post_attention_layernorm.weight")
        add(f"blk.{i}.ffn_gate_inp.weight", f"{p}.{moe}.gate.weight")
        for gguf_name, projection in (("ffn_gate_exps", gate), ("ffn_up_exps", up), ("ffn_down_exps", down)):
            add(f"blk.{i}.{gguf_name}.weight",
                *[f"{p}.{moe}.experts.{e}.{projection}.weight" for e in range(experts)])
        if arch == "qwen2moe":
            for gguf_name, projection in (("ffn_gate_shexp", "gate_proj"), ("ffn_up_shexp", "up_proj"),
                                          ("ffn_down_shexp", "down_proj")):
                add(f"blk.{i}.{gguf_name}.weight", f"{p}.mlp.shared_expert.{projection}.weight")
            add(f"blk.{i}.ffn_gate_inp_shexp.weight", f"{p}.mlp.shared_expert_gate.weight")

    # Norm weights (1-D) and the router go to F32, as llama.cpp's converter
    # writes them: its element-wise ops take no BF16 operand. BF16 widens to
    # F32 exactly, so the values are the same.
    def as_f32(name, shape):
        return len(shape) == 1 or name.endswith("ffn_gate_inp.weight") or name.endswith("ffn_gate_inp_shexp.weight")

    quant_type = QUANT_TYPES[quant] if quant else None

    def quantized(name, shape):
        return quant_type is not None and not as_f32(name, shape)

    for name, hf_names, _ in plan:
        shape, storage, ggml_type = checkpoint.describe(hf_names[0])
        if len(hf_names) > 1:
            shape = (len(hf_names),) + shape
        if as_f32(name, shape):
            storage, ggml_type = np.float32, gguf.GGMLQuantizationType.F32
        nbytes = int(np.prod(shape)) * np.dtype(storage).itemsize
        if quantized(name, shape):
            block, block_bytes = gguf.GGML_QUANT_SIZES[quant_type]
            if shape[-1] % block != 0:
                sys.exit(f"{name}: rows of {shape[-1]} are not whole {quant} blocks of {block}")
            storage, ggml_type = np.float32, quant_type
            nbytes = int(np.prod(shape[:-1])) * (shape[-1] // block) * block_bytes
        writer.add_tensor_info(name, shape, np.dtype(storage), nbytes, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for done, (name, hf_names, transform) in enumerate(plan, 1):
        arrays = [checkpoint.get(n) for n in hf_names]
        array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        if transform is not None:
            array = transform(array)
        if as_f32(name, array.shape):
            array = widen_to_f32(array)
        elif quantized(name, array.shape):
            array = gguf.quants.quantize(widen_to_f32(np.ascontiguousarray(array)), quant_type)
        writer.write_tensor_data(array)
        if done % 50 == 0 or done == len(plan):
            print(f"{out}: {done}/{len(plan)} tensors", file=sys.stderr, flush=True)
    writer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--type", choices=sorted(QUANT_TYPES), help="quantize the matrices (not the routers)")
    args = parser.parse_args()
    convert(args.model_dir, args.out, args.type)


if __name__ == "__main__":
    main()
