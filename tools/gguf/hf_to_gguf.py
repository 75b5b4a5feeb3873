#!/usr/bin/env python3
"""Writes a GGUF file of an HF MoE checkpoint, tensors in their own dtype.

For running llama.cpp on exactly the weights expertd runs (bench/vs_llamacpp):
our models are made here (tools/mkmodel), so llama.cpp's converter, which
needs torch and transformers, is not used; this writes the same layout with
the `gguf` package alone. Tensor names, shapes and metadata keys follow
llama.cpp's loader for each architecture (src/models/<arch>.cpp there).

  hf_to_gguf.py MODEL_DIR OUT.gguf [--type q8_0|q4_0]

Supported: OlmoeForCausalLM ("olmoe"), Qwen2MoeForCausalLM ("qwen2moe":
shared expert and q/k/v biases), Qwen3MoeForCausalLM ("qwen3moe"),
MixtralForCausalLM ("llama" with llama.expert_count; q and k rows permuted
to llama.cpp's RoPE layout as its converter does) and GptOssForCausalLM
("gpt-oss", src/models/openai-moe.cpp there: attn_sinks, biases on
attention, router and experts, post_attention_norm, HF's fused
[in][out] gate_up_proj split into ffn_gate_exps and ffn_up_exps [out][in]
and down_proj transposed, as llama.cpp's conversion/gpt_oss.py does;
{arch}.attention.sliding_window, the sliding layers as
{arch}.attention.sliding_window_pattern when they are not llama.cpp's
default (even layers), YaRN as rope.scaling.{type,factor,
original_context_length,yarn_beta_fast,yarn_beta_slow}); MXFP4 experts
(the released checkpoints' quant_method mxfp4) stay MXFP4, repacked into
GGML's block_mxfp4 (type 39). gpt-oss checkpoints whose SwiGLU alpha/limit
are not 1.702/7.0 (built into llama.cpp's graph) or whose YaRN rounds its
ramp (truncate not false: GGUF has no key for it) are refused.
DeepseekV2ForCausalLM ("deepseek2", src/models/deepseek2.cpp there) in the
layout with attn_kv_b whole (llama.cpp runs it as multi-head attention over
decompressed keys and values), or with --split-kv-b as llama.cpp's own
converter now writes it (attn_k_b, attn_v_b, key_length_mla): attn_q_a/attn_q_a_norm/attn_q_b or attn_q,
attn_kv_a_mqa, attn_kv_a_norm, the leading dense layers' ffn_*, shared
experts as ffn_*_shexp, expert_weights_scale (routed_scaling_factor),
expert_weights_norm, expert groups, YaRN with yarn_log_multiplier = 0.1 x
mscale_all_dim as llama.cpp's converter writes it. BF16 tensors stay BF16,
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
    "U8": (np.uint8, None),  # MXFP4 blocks and scales, repacked by their plan
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


# llama.cpp's gpt-oss graph hard-codes the experts' clamped SwiGLU
# (src/llama-graph.cpp, build_moe_ffn's LLM_FFN_SWIGLU_OAI_MOE: alpha 1.702,
# limit 7.0); a GGUF has no key for either.
GPT_OSS_SWIGLU_ALPHA = 1.702
GPT_OSS_SWIGLU_LIMIT = 7.0


def gpt_oss_rope_scaling(config):
    return config.get("rope_scaling") or config.get("rope_parameters") or {}


def gpt_oss_sliding(config, layers):
    """HF's layer_types as booleans (absent: sliding first, alternating)."""
    types = config.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention"
                                          for i in range(layers)]
    return [t == "sliding_attention" for t in types]


def check_gpt_oss(config):
    """What of a gpt-oss checkpoint a GGUF cannot say, refused by name."""
    alpha = config.get("swiglu_alpha", GPT_OSS_SWIGLU_ALPHA)
    limit = config.get("swiglu_limit", GPT_OSS_SWIGLU_LIMIT)
    if alpha != GPT_OSS_SWIGLU_ALPHA or limit != GPT_OSS_SWIGLU_LIMIT:
        sys.exit(f"swiglu_alpha {alpha} / swiglu_limit {limit}: "
                 f"llama.cpp's gpt-oss graph has {GPT_OSS_SWIGLU_ALPHA} and {GPT_OSS_SWIGLU_LIMIT} built in "
                 "and GGUF no key for them")
    if not config.get("sliding_window"):
        sys.exit("gpt-oss without a sliding_window: llama.cpp's gpt-oss needs one")
    rope = gpt_oss_rope_scaling(config)
    rope_type = rope.get("rope_type", rope.get("type"))
    if rope_type not in (None, "default", "yarn"):
        sys.exit(f"rope_scaling type {rope_type} is not supported for gpt-oss (yarn only)")
    if rope_type == "yarn" and rope.get("truncate", True) is not False:
        # HF rounds YaRN's ramp ends to whole dimensions unless truncate is
        # false; GGUF has no key for it, and expertd reads a gpt-oss GGUF as
        # the released models are (truncate false).
        sys.exit("rope_scaling.truncate must be false for gpt-oss (the released models'); GGUF cannot say otherwise")


def add_gpt_oss_keys(writer, config, layers, head_dim):
    """llama.cpp's gpt-oss keys (src/models/openai-moe.cpp, load_arch_hparams)."""
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_expert_feed_forward_length(config["intermediate_size"])
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_sliding_window(config["sliding_window"])
    # llama.cpp's default pattern is HF's default: layer i slides when i is
    # even. Any other layer_types is written out, one flag per layer.
    sliding = gpt_oss_sliding(config, layers)
    if sliding != [i % 2 == 0 for i in range(layers)]:
        writer.add_sliding_window_pattern(sliding)
    rope = gpt_oss_rope_scaling(config)
    if rope.get("rope_type", rope.get("type")) == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        writer.add_rope_scaling_yarn_beta_fast(rope.get("beta_fast", 32.0))
        writer.add_rope_scaling_yarn_beta_slow(rope.get("beta_slow", 1.0))
        if rope.get("attention_factor") is not None:
            writer.add_rope_scaling_yarn_attn_factor(rope["attention_factor"])


def hf_mxfp4_to_ggml(blocks, scales):
    """HF's MXFP4 pair (blocks [..., n, 16]: element 2k of a 32-element group
    in byte k's low nibble, 2k+1 in its high one; scales [..., n]: the shared
    E8M0 exponent) as GGML's block_mxfp4 rows [..., n * 17]: the exponent,
    then 16 bytes holding element j in the low nibble of byte j and element
    j + 16 in its high one (llama.cpp's conversion/gpt_oss.py repacks the
    same way)."""
    codes = np.empty(blocks.shape[:-1] + (32,), dtype=np.uint8)
    codes[..., 0::2] = blocks & 0x0F
    codes[..., 1::2] = blocks >> 4
    packed = codes[..., :16] | (codes[..., 16:] << 4)
    out = np.concatenate([scales[..., None], packed], axis=-1)
    return out.reshape(out.shape[:-2] + (out.shape[-2] * 17,))


def plan_gpt_oss(config, add):
    """gpt-oss's layers in llama.cpp's names and layout. HF fuses each
    layer's experts, [in][out] per expert, gate and up interleaved along the
    last axis of gate_up_proj; llama.cpp stores gate, up and down as their
    own stacks of [out][in] matrices, so the converter transposes and
    de-interleaves (as llama.cpp's conversion/gpt_oss.py does)."""
    experts = config["num_local_experts"]
    hidden = config["hidden_size"]
    ffn = config["intermediate_size"]
    # The released checkpoints' experts (quant_method mxfp4) stay MXFP4.
    mxfp4 = (config.get("quantization_config") or {}).get("quant_method") == "mxfp4"
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        add(f"blk.{i}.attn_norm.weight", f"{p}.input_layernorm.weight")
        add(f"blk.{i}.post_attention_norm.weight", f"{p}.post_attention_layernorm.weight")
        for proj in ("q", "k", "v"):
            add(f"blk.{i}.attn_{proj}.weight", f"{p}.self_attn.{proj}_proj.weight")
            add(f"blk.{i}.attn_{proj}.bias", f"{p}.self_attn.{proj}_proj.bias")
        add(f"blk.{i}.attn_output.weight", f"{p}.self_attn.o_proj.weight")
        add(f"blk.{i}.attn_output.bias", f"{p}.self_attn.o_proj.bias")
        add(f"blk.{i}.attn_sinks.weight", f"{p}.self_attn.sinks")
        add(f"blk.{i}.ffn_gate_inp.weight", f"{p}.mlp.router.weight")
        add(f"blk.{i}.ffn_gate_inp.bias", f"{p}.mlp.router.bias")
        gate_up = f"{p}.mlp.experts.gate_up_proj"
        down = f"{p}.mlp.experts.down_proj"
        if mxfp4:
            # HF's MXFP4 experts are [out][in] already, gate and up rows
            # interleaved: the rows are split and the blocks repacked.
            mx = gguf.GGMLQuantizationType.MXFP4
            add(f"blk.{i}.ffn_gate_exps.weight", f"{gate_up}_blocks", f"{gate_up}_scales", ggml_type=mx,
                transform=lambda b, s: hf_mxfp4_to_ggml(b[:, 0::2], s[:, 0::2]), shape=(experts, ffn, hidden))
            add(f"blk.{i}.ffn_up_exps.weight", f"{gate_up}_blocks", f"{gate_up}_scales", ggml_type=mx,
                transform=lambda b, s: hf_mxfp4_to_ggml(b[:, 1::2], s[:, 1::2]), shape=(experts, ffn, hidden))
            add(f"blk.{i}.ffn_down_exps.weight", f"{down}_blocks", f"{down}_scales", ggml_type=mx,
                transform=hf_mxfp4_to_ggml, shape=(experts, hidden, ffn))
        else:
            add(f"blk.{i}.ffn_gate_exps.weight", gate_up, transform=lambda w: w.swapaxes(1, 2)[:, 0::2, :],
                shape=(experts, ffn, hidden))
            add(f"blk.{i}.ffn_up_exps.weight", gate_up, transform=lambda w: w.swapaxes(1, 2)[:, 1::2, :],
                shape=(experts, ffn, hidden))
            add(f"blk.{i}.ffn_down_exps.weight", down, transform=lambda w: w.swapaxes(1, 2),
                shape=(experts, hidden, ffn))
        add(f"blk.{i}.ffn_gate_exps.bias", f"{gate_up}_bias", transform=lambda b: b[:, 0::2], shape=(experts, ffn))
        add(f"blk.{i}.ffn_up_exps.bias", f"{gate_up}_bias", transform=lambda b: b[:, 1::2], shape=(experts, ffn))
        add(f"blk.{i}.ffn_down_exps.bias", f"{p}.mlp.experts.down_proj_bias")


def add_deepseek2_keys(writer, config, split_kv_b):
    """llama.cpp's deepseek2 keys (src/models/deepseek2.cpp,
    load_arch_hparams) for the layout with attn_kv_b whole, which llama.cpp
    runs as multi-head attention over the decompressed keys and values: the
    key and value lengths are a head's, and every head has its own KV head;
    or, with split_kv_b, as llama.cpp's own converter now writes it: kv_b
    split into attn_k_b and attn_v_b, one KV head of the latent, a head's
    sizes in key_length_mla and value_length_mla."""
    nope, rope_dim, v_dim = config["qk_nope_head_dim"], config["qk_rope_head_dim"], config["v_head_dim"]
    if split_kv_b:
        # llama.cpp's current layout: one KV head holding the latent.
        writer.add_key_length(config["kv_lora_rank"] + rope_dim)
        writer.add_value_length(config["kv_lora_rank"])
        writer.add_key_length_mla(nope + rope_dim)
        writer.add_value_length_mla(v_dim)
    else:
        writer.add_key_length(nope + rope_dim)
        writer.add_value_length(v_dim)
    writer.add_rope_dimension_count(rope_dim)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_feed_forward_length(config.get("intermediate_size") or config["moe_intermediate_size"])
    writer.add_leading_dense_block_count(config.get("first_k_dense_replace") or 0)
    # Required by llama.cpp for every model but the Lite layer counts; 0:
    # a plain q_proj.
    writer.add_q_lora_rank(config.get("q_lora_rank") or 0)
    writer.add_kv_lora_rank(config["kv_lora_rank"])
    writer.add_expert_feed_forward_length(config["moe_intermediate_size"])
    writer.add_expert_shared_count(config.get("n_shared_experts") or 0)
    writer.add_expert_weights_scale(config.get("routed_scaling_factor", 1.0))
    if config.get("norm_topk_prob"):
        writer.add_expert_weights_norm(True)
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SOFTMAX)
    if config.get("topk_method") == "group_limited_greedy":
        writer.add_expert_group_count(config["n_group"])
        writer.add_expert_group_used_count(config["topk_group"])
    if (config.get("moe_layer_freq") or 1) != 1:
        sys.exit("moe_layer_freq other than 1 is not supported (llama.cpp's deepseek2 has no key for it)")
    rope = config.get("rope_scaling") or {}
    if rope.get("type", rope.get("rope_type")) == "yarn":
        if rope.get("mscale", 0) != rope.get("mscale_all_dim", 0):
            sys.exit("YaRN with mscale != mscale_all_dim: llama.cpp's deepseek2 has one key for both")
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        writer.add_rope_scaling_yarn_beta_fast(rope.get("beta_fast", 32.0))
        writer.add_rope_scaling_yarn_beta_slow(rope.get("beta_slow", 1.0))
        # 0.1 x mscale_all_dim, as llama.cpp's converter writes it
        # ([TAG_DEEPSEEK2_YARN_LOG_MUL_FIX] there).
        writer.add_rope_scaling_yarn_log_mul(0.1 * rope.get("mscale_all_dim", 0.0))
    elif rope:
        sys.exit(f"rope_scaling {rope} is not supported for DeepSeek-V2 (yarn only)")


def plan_deepseek2(config, add, split_kv_b):
    """DeepSeek-V2's layers in llama.cpp's deepseek2 names; kv_b whole, or
    split as llama.cpp's conversion/deepseek.py splits it (k_b: each head's
    key rows, transposed to [rank][nope]; v_b: its value rows)."""
    experts = config["n_routed_experts"]
    heads, rank = config["num_attention_heads"], config["kv_lora_rank"]
    nope, v_dim = config["qk_nope_head_dim"], config["v_head_dim"]
    first_dense = config.get("first_k_dense_replace") or 0
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        add(f"blk.{i}.attn_norm.weight", f"{p}.input_layernorm.weight")
        if config.get("q_lora_rank"):
            add(f"blk.{i}.attn_q_a.weight", f"{a}.q_a_proj.weight")
            add(f"blk.{i}.attn_q_a_norm.weight", f"{a}.q_a_layernorm.weight")
            add(f"blk.{i}.attn_q_b.weight", f"{a}.q_b_proj.weight")
        else:
            add(f"blk.{i}.attn_q.weight", f"{a}.q_proj.weight")
        add(f"blk.{i}.attn_kv_a_mqa.weight", f"{a}.kv_a_proj_with_mqa.weight")
        add(f"blk.{i}.attn_kv_a_norm.weight", f"{a}.kv_a_layernorm.weight")
        if split_kv_b:
            add(f"blk.{i}.attn_k_b.weight", f"{a}.kv_b_proj.weight", shape=(heads, rank, nope),
                transform=lambda w: w.reshape(heads, nope + v_dim, rank)[:, :nope, :].swapaxes(1, 2))
            add(f"blk.{i}.attn_v_b.weight", f"{a}.kv_b_proj.weight", shape=(heads, v_dim, rank),
                transform=lambda w: w.reshape(heads, nope + v_dim, rank)[:, nope:, :])
        else:
            add(f"blk.{i}.attn_kv_b.weight", f"{a}.kv_b_proj.weight")
        add(f"blk.{i}.attn_output.weight", f"{a}.o_proj.weight")
        add(f"blk.{i}.ffn_norm.weight", f"{p}.post_attention_layernorm.weight")
        if i < first_dense:
            for proj in ("gate", "up", "down"):
                add(f"blk.{i}.ffn_{proj}.weight", f"{p}.mlp.{proj}_proj.weight")
            continue
        add(f"blk.{i}.ffn_gate_inp.weight", f"{p}.mlp.gate.weight")
        for proj in ("gate", "up", "down"):
            add(f"blk.{i}.ffn_{proj}_exps.weight", *[f"{p}.mlp.experts.{e}.{proj}_proj.weight" for e in range(experts)])
        if config.get("n_shared_experts"):
            for proj in ("gate", "up", "down"):
                add(f"blk.{i}.ffn_{proj}_shexp.weight", f"{p}.mlp.shared_experts.{proj}_proj.weight")


QUANT_TYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def convert(model_dir: Path, out: Path, quant: str | None = None, split_kv_b: bool = False):
    config = json.loads((model_dir / "config.json").read_text())
    architecture = config["architectures"][0]
    arch = {"OlmoeForCausalLM": "olmoe", "Qwen2MoeForCausalLM": "qwen2moe", "Qwen3MoeForCausalLM": "qwen3moe",
            "MixtralForCausalLM": "llama", "GptOssForCausalLM": "gpt-oss",
            "DeepseekV2ForCausalLM": "deepseek2"}.get(architecture)
    if arch is None:
        sys.exit(f"{architecture} is not supported (OlmoeForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, "
                 "MixtralForCausalLM, GptOssForCausalLM, DeepseekV2ForCausalLM)")
    if config.get("mlp_only_layers") or config.get("decoder_sparse_step", 1) != 1:
        sys.exit("Qwen layers with a dense MLP (mlp_only_layers, decoder_sparse_step) are not supported")
    checkpoint = Checkpoint(model_dir)
    if arch == "gpt-oss":
        check_gpt_oss(config)
    writer = gguf.GGUFWriter(str(out), arch)
    layers = config["num_hidden_layers"]
    experts = {"llama": config.get("num_local_experts"), "gpt-oss": config.get("num_local_experts"),
               "deepseek2": config.get("n_routed_experts")}.get(arch, config.get("num_experts"))
    heads = config["num_attention_heads"]
    # deepseek2 with kv_b whole is multi-head: a KV head per head; split,
    # one KV head (the latent).
    kv_heads = (1 if split_kv_b else heads) if arch == "deepseek2" else config.get("num_key_value_heads", heads)
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
    elif arch == "deepseek2":
        add_deepseek2_keys(writer, config, split_kv_b)
        add_tokenizer(writer, model_dir, config, "gpt-2")
    elif arch == "gpt-oss":
        add_gpt_oss_keys(writer, config, layers, head_dim)
        # mkmodel's byte-level BPE has GPT-2's pre-tokenizer; the released
        # models' o200k vocabulary is llama.cpp's "gpt-4o".
        add_tokenizer(writer, model_dir, config, "gpt-2")
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
    # (gguf name, hf names: stacked along a new first axis when several,
    # transform or None, shape, GGML type or None)
    plan = []

    def add(name, *hf_names, transform=None, shape=None, ggml_type=None):
        """shape: the written shape where the transform changes it. With
        ggml_type, the transform gets every named tensor and returns that
        type's blocks, written as they are."""
        plan.append((name, hf_names, transform, shape, ggml_type))

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
    if not tied or arch in ("olmoe", "qwen2moe", "gpt-oss"):
        add("output.weight", "model.embed_tokens.weight" if tied else "lm_head.weight")

    def plan_layers(add):
        """The other families' layers: one tensor per HF tensor, experts stacked."""
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

    if arch == "gpt-oss":
        plan_gpt_oss(config, add)
    elif arch == "deepseek2":
        plan_deepseek2(config, add, split_kv_b)
    else:
        plan_layers(add)

    # Norm weights (1-D) and the router go to F32, as llama.cpp's converter
    # writes them: its element-wise ops take no BF16 operand. BF16 widens to
    # F32 exactly, so the values are the same.
    def as_f32(name, shape):
        # gpt-oss's biases (the experts' are [experts][rows]) and sinks are
        # added to F32 activations, so F32 too.
        return (len(shape) == 1 or name.endswith("ffn_gate_inp.weight") or name.endswith("ffn_gate_inp_shexp.weight")
                or name.endswith(".bias") or name.endswith("attn_sinks.weight"))

    quant_type = QUANT_TYPES[quant] if quant else None

    def quantized(name, shape):
        return quant_type is not None and not as_f32(name, shape)

    for name, hf_names, _, written_shape, raw_type in plan:
        if raw_type is not None:
            block, block_bytes = gguf.GGML_QUANT_SIZES[raw_type]
            nbytes = int(np.prod(written_shape[:-1])) * (written_shape[-1] // block) * block_bytes
            writer.add_tensor_info(name, written_shape, np.dtype(np.float32), nbytes, raw_dtype=raw_type)
            continue
        shape, storage, ggml_type = checkpoint.describe(hf_names[0])
        if len(hf_names) > 1:
            shape = (len(hf_names),) + shape
        if written_shape is not None:
            shape = tuple(written_shape)
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
    for done, (name, hf_names, transform, written_shape, raw_type) in enumerate(plan, 1):
        if raw_type is not None:
            writer.write_tensor_data(np.ascontiguousarray(transform(*[checkpoint.get(n) for n in hf_names])))
            continue
        arrays = [checkpoint.get(n) for n in hf_names]
        array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        if transform is not None:
            array = np.ascontiguousarray(transform(array))
        if written_shape is not None and array.shape != tuple(written_shape):
            sys.exit(f"{name}: made shape {array.shape}, planned {tuple(written_shape)}")
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
    parser.add_argument("--split-kv-b", action="store_true",
                        help="DeepSeek-V2: kv_b as attn_k_b and attn_v_b, as llama.cpp's converter writes it")
    args = parser.parse_args()
    convert(args.model_dir, args.out, args.type, args.split_kv_b)


if __name__ == "__main__":
    main()
