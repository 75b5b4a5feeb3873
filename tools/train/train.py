#!/usr/bin/python3
"""Trains the small OLMoE-architecture MoE of models/olmoe-kjv on KJV token ids.

Input: uint16 little-endian token ids written by train_tokenizer --encode
(tools/mkmodel/train_tokenizer_main.cc). Output, in --out: ckpt.pt (model,
optimizer, step and RNG states; written every --ckpt-every steps so a crash
loses little, and resumed from when present), and log.csv (the loss curve).
Export to Hugging Face format is export.py's job.

Deterministic for a given seed and thread count: batches are drawn by a
seeded numpy generator, weights by a seeded torch generator. The command used
for the bundled model is in tools/train/README.md.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olmoe import Config, OlmoeModel, count_params  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-ids", required=True)
    p.add_argument("--heldout-ids", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--ffn", type=int, default=128, help="routed expert intermediate size")
    p.add_argument("--seq", type=int, default=256, help="training window in tokens")
    p.add_argument("--batch", type=int, default=8, help="windows per step")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--aux-coef", type=float, default=0.01, help="load-balancing loss weight (OLMoE: 0.01)")
    p.add_argument("--z-coef", type=float, default=0.001, help="router z-loss weight (OLMoE: 0.001)")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-windows", type=int, default=16)
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--max-minutes", type=float, default=60.0,
                   help="stop early (and say so) when training has run this long")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest on a shared 2-core machine (OpenMP spin-waits otherwise)")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args()


def lr_at(step, a):
    """Linear warm-up, then cosine decay from lr to lr * min_lr_ratio at the last step."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    progress = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def load_ids(path):
    return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))


def balance_loss(auxes, num_experts):
    """Switch Transformer / OLMoE load-balancing loss: E * sum_e f_e * P_e per
    layer (1.0 when routing is uniform), averaged over layers; and the router
    z-loss (mean squared log-sum-exp of the router logits)."""
    lb = sum(num_experts * (fraction * mean_prob).sum() for fraction, mean_prob, _, _ in auxes) / len(auxes)
    z = sum(z for _, _, z, _ in auxes) / len(auxes)
    return lb, z


@torch.no_grad()
def evaluate(model, heldout, a):
    """Mean held-out cross-entropy (nats/token) over fixed, evenly spaced windows,
    and the per-layer share of routed slots of the busiest expert."""
    model.eval()
    starts = np.linspace(0, len(heldout) - a.seq - 1, a.eval_windows).astype(np.int64)
    batch = torch.stack([heldout[s:s + a.seq + 1] for s in starts])
    logits, auxes = model(batch[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).item()
    busiest = [round(aux[0].max().item(), 3) for aux in auxes]
    model.train()
    return loss, busiest


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    train_ids, heldout_ids = load_ids(a.train_ids), load_ids(a.heldout_ids)
    config = Config(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                    num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, intermediate_size=a.ffn,
                    num_experts=a.experts, num_experts_per_tok=a.top_k)
    torch.manual_seed(a.seed)
    model = OlmoeModel(config)
    model.init_weights()
    # No weight decay on norms (they start at 1 and decay would pull them to 0).
    decay = [p for n, p in model.named_parameters() if not n.endswith("norm.weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(a.seed)
    step = 0
    ckpt_path = os.path.join(a.out, "ckpt.pt")
    log_path = os.path.join(a.out, "log.csv")
    if os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        step = ckpt["step"]
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    else:
        with open(log_path, "w") as f:
            f.write("step,tokens,lr,train_loss,balance_loss,z_loss,heldout_loss,elapsed_s\n")
    total, active = count_params(config)
    print(f"config {config.to_dict()}", flush=True)
    print(f"params: {total} total, {active} active per token; {len(train_ids)} training tokens, "
          f"{len(heldout_ids)} held-out tokens; {a.batch * a.seq} tokens/step", flush=True)

    def save(step):
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "config": config.to_dict(),
                    "args": vars(a)}, tmp)
        os.replace(tmp, ckpt_path)  # atomic: a crash mid-write keeps the previous checkpoint

    start = time.time()
    window_start, window_tokens, smooth = time.time(), 0, None
    while step < a.steps:
        if (time.time() - start) / 60 > a.max_minutes:
            print(f"stopping early at step {step}: --max-minutes {a.max_minutes} reached", flush=True)
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a)
        offsets = rng.integers(0, len(train_ids) - a.seq - 1, size=a.batch)
        batch = torch.stack([train_ids[o:o + a.seq + 1] for o in offsets])
        logits, auxes = model(batch[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        lb, z = balance_loss(auxes, config.num_experts)
        loss = ce + a.aux_coef * lb + a.z_coef * z
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        step += 1
        window_tokens += a.batch * a.seq
        smooth = ce.item() if smooth is None else 0.95 * smooth + 0.05 * ce.item()
        heldout_loss = ""
        if step % a.eval_every == 0 or step == a.steps:
            heldout_loss, busiest = evaluate(model, heldout_ids, a)
            print(f"step {step} heldout_loss {heldout_loss:.4f} (ppl {math.exp(heldout_loss):.2f}) "
                  f"busiest expert share per layer {busiest}", flush=True)
        with open(log_path, "a") as f:
            f.write(f"{step},{step * a.batch * a.seq},{lr_at(step - 1, a):.6g},{ce.item():.4f},{lb.item():.4f},"
                    f"{z.item():.4f},{heldout_loss if heldout_loss == '' else f'{heldout_loss:.4f}'},"
                    f"{time.time() - start:.1f}\n")
        if step % 10 == 0:
            rate = window_tokens / (time.time() - window_start)
            window_start, window_tokens = time.time(), 0
            print(f"step {step}/{a.steps} loss {ce.item():.4f} (smoothed {smooth:.4f}) balance {lb.item():.3f} "
                  f"z {z.item():.2f} lr {lr_at(step - 1, a):.2e} {rate:.0f} tok/s "
                  f"elapsed {(time.time() - start) / 60:.1f} min", flush=True)
        if step % a.ckpt_every == 0 or step == a.steps:
            save(step)
    save(step)
    print(f"done: {step} steps, {step * a.batch * a.seq} tokens, {(time.time() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
