#!/usr/bin/env python3
"""Writes the GGUF files gguf_file_test reads, and what a reader must find in them.

The files are written by llama.cpp's own `gguf` package (GGUFWriter), an
implementation independent of ours; the expectations come from what this
script asked it to write, and the tensor offsets and the data section's start
from the package's reader (GGUFReader). Both are committed under
tests/formats/testdata/ (a few KiB); rerun this after changing it:

  python3 -m venv build/venv && build/venv/bin/pip install gguf numpy
  build/venv/bin/python tests/formats/make_gguf_fixtures.py tests/formats/testdata

The output is the same bytes every run (no randomness, no timestamps).
"""

import argparse
import json
import struct
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as T

# Python ints and floats as GGUF values: (key, type, value, element type for arrays).
# Arrays of arrays name their inner element type with a nested tuple.
ALL_TYPES_METADATA = [
    ("test.uint8", T.UINT8, 200, None),
    ("test.int8", T.INT8, -100, None),
    ("test.uint16", T.UINT16, 65535, None),
    ("test.int16", T.INT16, -32768, None),
    ("test.uint32", T.UINT32, 4000000000, None),
    ("test.int32", T.INT32, -2000000000, None),
    ("test.float32", T.FLOAT32, 0.15625, None),
    ("test.bool_true", T.BOOL, True, None),
    ("test.bool_false", T.BOOL, False, None),
    ("test.string", T.STRING, "héllo wörld ✓", None),
    ("test.string_with_nul", T.STRING, "a\0b", None),
    ("test.uint64", T.UINT64, 2**64 - 1, None),
    ("test.int64", T.INT64, -(2**63), None),
    ("test.float64", T.FLOAT64, -2.5e300, None),
    ("test.small_uint64", T.UINT64, 7, None),
    ("test.array_uint8", T.ARRAY, [0, 1, 255], T.UINT8),
    ("test.array_int16", T.ARRAY, [-5, 0, 300], T.INT16),
    ("test.array_int32", T.ARRAY, [-1, 2, 2147483647], T.INT32),
    ("test.array_uint64", T.ARRAY, [1, 2**40], T.UINT64),
    ("test.array_float32", T.ARRAY, [0.5, -1.25, 3.0], T.FLOAT32),
    ("test.array_float64", T.ARRAY, [1e-300, 2.0], T.FLOAT64),
    ("test.array_bool", T.ARRAY, [True, False, True], T.BOOL),
    ("test.array_string", T.ARRAY, ["", "a", "Ġthe", "日本"], T.STRING),
    ("test.array_nested", T.ARRAY, [[1, 2], [3], [4, 5, 6]], (T.ARRAY, T.INT32)),
    ("test.array_nested_strings", T.ARRAY, [["a", "b"], ["c"]], (T.ARRAY, T.STRING)),
]


def type_name(t):
    return t.name.lower()


def expected_value(vtype, value, sub):
    if vtype != T.ARRAY:
        if vtype == T.STRING:
            return {"type": "string", "value": value}
        return {"type": type_name(vtype), "value": value}
    if isinstance(sub, tuple):
        return {
            "type": "array",
            "element_type": "array",
            "value": [expected_value(T.ARRAY, item, sub[1]) for item in value],
        }
    return {"type": "array", "element_type": type_name(sub), "value": value}


def add_metadata(writer, entries):
    for key, vtype, value, sub in entries:
        # Nested arrays: GGUFWriter infers the inner element type from the
        # Python values (int -> INT32, str -> STRING), as chosen above.
        writer.add_key_value(key, value, vtype, sub_type=sub[0] if isinstance(sub, tuple) else sub)


def bf16_bits(values):
    """BF16 storage (uint16) of float32 values, truncated (exact for these)."""
    return (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write(out_dir: Path, name: str, arch: str, metadata, tensors, alignment=None, version=None):
    """tensors: (name, numpy array as stored, GGML type or None, row-major shape)."""
    path = out_dir / name
    writer = gguf.GGUFWriter(str(path), arch)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    add_metadata(writer, metadata)
    for tname, array, raw_dtype, _ in tensors:
        writer.add_tensor(tname, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if version is not None:
        # Versions 2 and 3 lay out a little-endian file alike (3 added
        # big-endian files); only the version field differs.
        data = bytearray(path.read_bytes())
        data[4:8] = struct.pack("<I", version)
        path.write_bytes(bytes(data))

    reader = gguf.GGUFReader(str(path))
    found = {t.name: t for t in reader.tensors}
    entries = [("general.architecture", T.STRING, arch, None)]
    if alignment is not None:
        entries.append(("general.alignment", T.UINT32, alignment, None))
    entries += list(metadata)
    # What GGUFReader found must be what was asked for, key by key.
    assert list(reader.fields)[3:] == [e[0] for e in entries], list(reader.fields)
    expected_tensors = []
    for tname, array, raw_dtype, shape in tensors:
        t = found[tname]
        ggml_type = raw_dtype if raw_dtype is not None else {np.float32: Q.F32, np.float16: Q.F16}[array.dtype.type]
        dims = [int(d) for d in t.shape]
        assert dims == list(reversed(shape)), (tname, dims, shape)
        assert t.n_bytes == array.nbytes
        expected_tensors.append({
            "name": tname,
            "type": ggml_type.name,
            "dims": dims,
            "offset": int(t.data_offset - reader.data_offset),
            "file_offset": int(t.data_offset),
            "size_bytes": int(t.n_bytes),
            "data_hex": array.tobytes().hex(),
        })
    return {
        "file": name,
        "version": version or gguf.GGUF_VERSION,
        "alignment": alignment or gguf.GGUF_DEFAULT_ALIGNMENT,
        "data_offset": int(reader.data_offset),
        "file_size": path.stat().st_size,
        "metadata": [dict(key=k, **expected_value(v, x, s)) for k, v, x, s in entries],
        "tensors": expected_tensors,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    out_dir = parser.parse_args().out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    f32 = np.arange(12, dtype=np.float32).reshape(3, 4) / 4 - 1
    f16 = np.linspace(-2, 2, 8, dtype=np.float32).astype(np.float16)
    bf16 = bf16_bits(np.arange(16, dtype=np.float32).reshape(2, 2, 4) - 8)
    q8_source = (np.arange(128, dtype=np.float32).reshape(2, 64) - 64) / 16
    q8 = gguf.quants.quantize(q8_source, Q.Q8_0)
    files = [
        write(out_dir, "all_types.gguf", "testarch", ALL_TYPES_METADATA, [
            ("f32.weight", f32, None, [3, 4]),
            ("f16.weight", f16, None, [8]),
            ("bf16.experts", bf16, Q.BF16, [2, 2, 4]),
            ("q8_0.weight", q8, Q.Q8_0, [2, 64]),
        ]),
        # A 64-byte alignment, version 2, and tensors whose sizes are not
        # multiples of it, so the writer pads between them.
        write(out_dir, "aligned64_v2.gguf", "llama", [
            ("llama.block_count", T.UINT32, 2, None),
            ("tokenizer.ggml.tokens", T.ARRAY, ["<s>", "</s>", "a"], T.STRING),
        ], [
            ("a", np.array([1, 2, 3, 4, 5], dtype=np.float32), None, [5]),
            ("b", np.array([6, 7, 8], dtype=np.float16), None, [3]),
            ("c", np.ones((2, 3), dtype=np.float32), None, [2, 3]),
        ], alignment=64, version=2),
        write(out_dir, "metadata_only.gguf", "olmoe", [
            ("olmoe.context_length", T.UINT32, 4096, None),
            ("general.name", T.STRING, "no tensors", None),
        ], []),
        # A whole model's metadata and a byte-level vocabulary, in a few
        # hundred bytes: the seed of fuzz/gguf_model_fuzz.
        write(out_dir, "tiny_model.gguf", "qwen3moe", [
            ("qwen3moe.context_length", T.UINT32, 64, None),
            ("qwen3moe.embedding_length", T.UINT32, 8, None),
            ("qwen3moe.block_count", T.UINT32, 1, None),
            ("qwen3moe.attention.head_count", T.UINT32, 2, None),
            ("qwen3moe.attention.head_count_kv", T.UINT32, 1, None),
            ("qwen3moe.attention.key_length", T.UINT32, 4, None),
            ("qwen3moe.attention.value_length", T.UINT32, 4, None),
            ("qwen3moe.rope.freq_base", T.FLOAT32, 10000.0, None),
            ("qwen3moe.attention.layer_norm_rms_epsilon", T.FLOAT32, 1e-6, None),
            ("qwen3moe.expert_count", T.UINT32, 4, None),
            ("qwen3moe.expert_used_count", T.UINT32, 2, None),
            ("qwen3moe.feed_forward_length", T.UINT32, 16, None),
            ("qwen3moe.expert_feed_forward_length", T.UINT32, 4, None),
            ("tokenizer.ggml.model", T.STRING, "gpt2", None),
            ("tokenizer.ggml.pre", T.STRING, "qwen2", None),
            ("tokenizer.ggml.tokens", T.ARRAY, ["a", "b", "ab", "Ġ", "1", "<|end|>", "<x>", "[PAD7]"], T.STRING),
            ("tokenizer.ggml.token_type", T.ARRAY, [1, 1, 1, 1, 1, 3, 4, 5], T.INT32),
            ("tokenizer.ggml.merges", T.ARRAY, ["a b"], T.STRING),
            ("tokenizer.ggml.bos_token_id", T.UINT32, 5, None),
            ("tokenizer.ggml.eos_token_id", T.UINT32, 5, None),
            ("tokenizer.ggml.add_bos_token", T.BOOL, False, None),
            ("tokenizer.chat_template", T.STRING, "{{ bos_token }}", None),
        ], [
            ("blk.0.ffn_gate_inp.weight", np.zeros((4, 8), dtype=np.float32), None, [4, 8]),
        ]),
    ]
    (out_dir / "expected.json").write_text(json.dumps({"files": files}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
