#!/usr/bin/env python3
"""How far one run's next-token distributions are from a reference run's.

  bench/logit_divergence.py REF.f32 RUN.f32 VOCAB

Both files are `expertd eval --logits-out` output (float32, little-endian,
[n_tokens][VOCAB]). Prints "KL TOP1": the mean over positions of
KL(softmax(ref) || softmax(run)) in nats, and the share of positions whose
argmax agrees. A finer measure than perplexity of what quantising the
experts changed: bench/mixed_precision uses it, as the bundled model's
perplexity moves by less than 0.02% between bf16 and 4-bit experts.
Python standard library only.
"""

import array
import math
import sys


def read(path):
    values = array.array("f")
    with open(path, "rb") as f:
        values.frombytes(f.read())
    if sys.byteorder != "little":
        values.byteswap()
    return values


def log_softmax(row):
    top = max(row)
    log_sum = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_sum for v in row]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ref, run, vocab = read(sys.argv[1]), read(sys.argv[2]), int(sys.argv[3])
    if len(ref) != len(run) or len(ref) % vocab != 0:
        sys.exit(f"{sys.argv[1]} and {sys.argv[2]} are not both [n][{vocab}] float32")
    positions = len(ref) // vocab
    kl_sum, agree = 0.0, 0
    for t in range(positions):
        p = log_softmax(ref[t * vocab:(t + 1) * vocab])
        q = log_softmax(run[t * vocab:(t + 1) * vocab])
        kl_sum += sum(math.exp(a) * (a - b) for a, b in zip(p, q))
        agree += p.index(max(p)) == q.index(max(q))
    print(f"{kl_sum / positions:.3e} {agree / positions:.4f}")


if __name__ == "__main__":
    main()
