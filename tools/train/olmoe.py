"""An OLMoE-architecture MoE language model in plain PyTorch operators.

It mirrors the math of expertd's engine (engine/forward.cc) and of Hugging
Face's OlmoeForCausalLM, so the exported checkpoint runs unchanged in both:
  - RMSNorm: x / sqrt(mean(x^2) + eps) * weight, computed in f32.
  - Attention: q/k/v/o projections without bias; OLMoE's QK-norm is one
    RMSNorm over the whole q projection (and one over the whole k projection),
    not per head; no clip_qkv; RoPE rotate-half (non-interleaved) with f32
    angles position * inv_freq; grouped-query attention; causal softmax with
    scale 1/sqrt(head_dim).
  - MoE: router logits -> softmax over all experts -> top-k; the expert
    weights are the softmax probabilities themselves (norm_topk_prob false,
    as in OLMoE); SwiGLU experts down(silu(gate(x)) * up(x)).
  - Untied lm_head.
Parameter names are the HF tensor names (see export.py).
"""

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    vocab_size: int = 2048
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    intermediate_size: int = 128  # per routed expert
    num_experts: int = 16
    num_experts_per_tok: int = 4
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    def to_dict(self):
        return asdict(self)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_cos_sin(positions, head_dim, theta):
    """cos, sin of shape [T, head_dim] (each half repeated), angles in f32 as HF computes them."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        q_size = c.num_attention_heads * c.head_dim
        kv_size = c.num_key_value_heads * c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, q_size, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, kv_size, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, kv_size, bias=False)
        self.o_proj = nn.Linear(q_size, c.hidden_size, bias=False)
        self.q_norm = RMSNorm(q_size, c.rms_norm_eps)
        self.k_norm = RMSNorm(kv_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        c = self.c
        q = self.q_norm(self.q_proj(x)).view(b, t, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = self.k_norm(self.k_proj(x)).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = c.num_attention_heads // c.num_key_value_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(c.head_dim)
        scores = scores.masked_fill(mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class SparseMoe(nn.Module):
    """Top-k routed SwiGLU experts; each expert's weights are stored as one
    slice of a stacked parameter so that export can name them per expert."""

    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        e, h, f = c.num_experts, c.hidden_size, c.intermediate_size
        self.gate = nn.Linear(h, e, bias=False)  # the router
        self.gate_proj = nn.Parameter(torch.empty(e, f, h))
        self.up_proj = nn.Parameter(torch.empty(e, f, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, f))

    def forward(self, x, k=None):
        """Returns (output, aux) where aux holds the load-balancing statistics."""
        c = self.c
        k = k or c.num_experts_per_tok
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits = self.gate(x)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        weights, experts = torch.topk(probs, k, dim=-1)  # no renormalisation (norm_topk_prob false)
        out = torch.zeros_like(x)
        flat_experts = experts.reshape(-1)
        flat_weights = weights.reshape(-1)
        token_of_slot = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
        order = torch.argsort(flat_experts)
        counts = torch.bincount(flat_experts, minlength=c.num_experts).tolist()
        # unbind once: indexing the stacked parameter per expert would make
        # autograd build a full-size zero gradient for every expert.
        gate_w, up_w, down_w = self.gate_proj.unbind(0), self.up_proj.unbind(0), self.down_proj.unbind(0)
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            slots = order[start:start + count]
            start += count
            tokens = token_of_slot[slots]
            xe = x.index_select(0, tokens)
            hidden = F.silu(xe @ gate_w[e].t()) * (xe @ up_w[e].t())
            ye = (hidden @ down_w[e].t()) * flat_weights[slots, None]
            out.index_add_(0, tokens, ye)
        # Switch-Transformer balance loss terms: fraction of routed slots per
        # expert (not differentiable) and mean router probability per expert.
        fraction = torch.bincount(flat_experts, minlength=c.num_experts).float() / flat_experts.numel()
        mean_prob = probs.mean(0)
        z = torch.logsumexp(logits, dim=-1).pow(2).mean()
        return out.view(shape), (fraction, mean_prob, z, experts)


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = SparseMoe(c)

    def forward(self, x, cos, sin, mask, k=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        moe_out, aux = self.mlp(self.post_attention_layernorm(x), k)
        return x + moe_out, aux


class OlmoeModel(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def init_weights(self, std=0.02):
        """OLMoE's initialisation: normal(0, 0.02) everywhere, norms at 1."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, k=None):
        """ids [B, T] -> logits [B, T, V] (f32), list of per-layer routing aux."""
        t = ids.shape[1]
        cos, sin = rope_cos_sin(torch.arange(t), self.c.head_dim, self.c.rope_theta)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        x = self.embed_tokens(ids)
        auxes = []
        for layer in self.layers:
            x, aux = layer(x, cos, sin, mask, k)
            auxes.append(aux)
        return self.lm_head(self.norm(x)), auxes


def hf_state_dict(model: OlmoeModel):
    """The model's tensors under Hugging Face OLMoE names, experts split out."""
    out = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if parts[-1] in ("gate_proj", "up_proj", "down_proj") and "mlp" in parts:
            prefix = ".".join(parts[:-1])
            for e in range(tensor.shape[0]):
                out[f"model.{prefix}.experts.{e}.{parts[-1]}.weight"] = tensor[e]
        elif name.startswith("lm_head"):
            out[name] = tensor
        else:
            out["model." + name] = tensor
    return out


def count_params(c: Config):
    """(total, active per token) parameter counts, embeddings and lm_head included."""
    h, f, e = c.hidden_size, c.intermediate_size, c.num_experts
    q = c.num_attention_heads * c.head_dim
    kv = c.num_key_value_heads * c.head_dim
    attn = h * q * 2 + h * kv * 2 + q + kv
    expert = 3 * h * f
    per_layer_shared = attn + 2 * h + e * h
    embed = 2 * c.vocab_size * h + h
    total = embed + c.num_hidden_layers * (per_layer_shared + e * expert)
    active = embed + c.num_hidden_layers * (per_layer_shared + c.num_experts_per_tok * expert)
    return total, active
