#!/usr/bin/env python3
"""Writes ggml_reference.txt: GGML's own quantisation of fixed inputs.

The C++ tests (tests/kernels/quant_blocks_test.cc) read the output so CI
never needs llama.cpp. For each input row and each format it records the
blocks that GGML's reference quantiser (quantize_row_*_ref in libggml-base)
makes, GGML's dequantisation of those blocks (dequantize_row_*), and the
RMSE of that round trip, against which our quantiser is held.

Usage: make_reference.py /path/to/libggml-base.so > ggml_reference.txt
(made with llama.cpp's ggml as shipped in the llama-cpp-python 0.3.36 sdist,
built for the CPU; needs numpy).
"""
import ctypes
import sys

import numpy as np

# name, elements per block, bytes per block, ggml's function suffix
FORMATS = [
    ("q8_0", 32, 34, "q8_0"),
    ("q4_0", 32, 18, "q4_0"),
    ("q4_k", 256, 144, "q4_K"),
    ("q5_k", 256, 176, "q5_K"),
    ("q6_k", 256, 210, "q6_K"),
    ("mxfp4", 32, 17, "mxfp4"),
]
N = 2048         # elements per input row
N_DEQUANT = 512  # dequantised values recorded per (input, format)


def inputs():
    rng = np.random.default_rng(17)
    # Weight-like rows: normal, heavy-tailed (Student t, 3 dof, as trained
    # weights with outliers), and all-positive (the K-quants' min is clamped
    # at zero there).
    yield "normal", rng.standard_normal(N).astype(np.float32) * np.float32(0.02)
    yield "heavy", (rng.standard_t(3, N) * 0.01).astype(np.float32)
    yield "positive", rng.uniform(0.1, 1.0, N).astype(np.float32)


def hex_floats(values):
    return " ".join(f"{v:08x}" for v in np.asarray(values, dtype=np.float32).view(np.uint32))


def main():
    lib = ctypes.CDLL(sys.argv[1])
    out = sys.stdout
    out.write("# GGML reference quantisation, made by make_reference.py (see there).\n")
    out.write("# input NAME N FLOAT_BITS...\n")
    out.write("# quant FORMAT INPUT RMSE BLOCK_BYTES_HEX DEQUANT_FLOAT_BITS(first %d)...\n" % N_DEQUANT)
    for name, x in inputs():
        out.write(f"input {name} {N} {hex_floats(x)}\n")
        for fmt, block_elems, block_bytes, suffix in FORMATS:
            quantize = getattr(lib, f"quantize_row_{suffix}_ref")
            dequantize = getattr(lib, f"dequantize_row_{suffix}")
            quantize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            dequantize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            blocks = np.zeros(N // block_elems * block_bytes, dtype=np.uint8)
            y = np.zeros(N, dtype=np.float32)
            quantize(x.ctypes.data, blocks.ctypes.data, N)
            dequantize(blocks.ctypes.data, y.ctypes.data, N)
            rmse = float(np.sqrt(np.mean((y.astype(np.float64) - x.astype(np.float64)) ** 2)))
            out.write(f"quant {fmt} {name} {rmse:.9e} {blocks.tobytes().hex()} {hex_floats(y[:N_DEQUANT])}\n")


if __name__ == "__main__":
    main()
