"""Which tokenizers get a BOS in Hugging Face transformers: the post-processor or add_bos_token?

Run with transformers and tokenizers installed (pip, no torch needed):
    python3 -m venv /tmp/v && /tmp/v/bin/pip install transformers tokenizers
    /tmp/v/bin/python tests/tokenizer/hf_reference/bos_rule.py > tests/tokenizer/hf_reference/bos_rule.txt
For every tokenizer_class, add_bos_token (absent/true/false) and post-processor
(with or without a leading BOS), on a byte-level tokenizer (the bundled
model's) and a SentencePiece-style one, prints whether HF puts a BOS first.
bos_rule.txt is its output with transformers 5.24.0 / tokenizers 0.23.3: the
post-processor alone decides, which tokenizer/tokenizer.cc follows and
tests/tokenizer/tokenizer_test.cc asserts.
"""
import itertools
import json
import os
import sys
import tempfile

import transformers
from transformers import AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
work = tempfile.mkdtemp()
print(f"transformers {transformers.__version__}")


def byte_level(template):
    t = json.load(open(os.path.join(ROOT, "models/olmoe-kjv/tokenizer.json")))
    if template:
        t["post_processor"] = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}}
    return t, "<|endoftext|>", "<|endoftext|>", 0


def sentencepiece(template):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "H": 4, "e": 5, "l": 6, "o": 7, "\u2581H": 8,
             "\u2581He": 9, "ll": 10, "llo": 11, "\u2581Hello": 12}
    merges = ["\u2581 H", "\u2581H e", "l l", "ll o", "\u2581He llo"]
    meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    t = {"version": "1.0", "truncation": None, "padding": None,
         "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                           "normalized": False, "special": True} for c, i in [("<unk>", 0), ("<s>", 1), ("</s>", 2)]],
         "normalizer": None, "pre_tokenizer": meta, "decoder": meta, "post_processor": None,
         "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": False, "ignore_merges": False,
                   "vocab": vocab, "merges": merges}}
    if template:
        t["post_processor"] = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return t, "<s>", "</s>", 1


disagreements = 0
for kind, make in (("byte-level", byte_level), ("sentencepiece", sentencepiece)):
    for cls, add_bos, template in itertools.product(
            ["PreTrainedTokenizerFast", "LlamaTokenizerFast", "Qwen2TokenizerFast", "GPT2TokenizerFast"],
            [None, True, False], [False, True]):
        tokenizer_json, bos, eos, bos_id = make(template)
        d = os.path.join(work, f"{kind}_{cls}_{add_bos}_{template}")
        os.makedirs(d)
        json.dump(tokenizer_json, open(os.path.join(d, "tokenizer.json"), "w"))
        config = {"tokenizer_class": cls, "bos_token": bos, "eos_token": eos}
        if add_bos is not None:
            config["add_bos_token"] = add_bos
        json.dump(config, open(os.path.join(d, "tokenizer_config.json"), "w"))
        try:
            ids = AutoTokenizer.from_pretrained(d)("Hello")["input_ids"]
        except Exception as error:  # a class that cannot load this tokenizer kind
            print(f"{kind:13s} {cls:24s} add_bos_token={str(add_bos):5s} bos_in_post_processor={template!s:5s} -> "
                  f"not loadable ({type(error).__name__})")
            continue
        has_bos = ids[0] == bos_id
        disagreements += has_bos != template
        print(f"{kind:13s} {cls:24s} add_bos_token={str(add_bos):5s} bos_in_post_processor={template!s:5s} -> "
              f"BOS {has_bos}")
print(f"cases where HF's BOS differs from the post-processor's: {disagreements}")
sys.exit(0)
