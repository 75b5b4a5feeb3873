#!/usr/bin/env python3
"""Real GGUF vocabularies and their reference tokenizations for gguf_tokenizer_test.

Sources: llama.cpp's models/ggml-vocab-*.gguf (the vocabularies of real
models, converted by llama.cpp's convert_hf_to_gguf.py) and their .inp/.out
pairs (texts, and the ids Hugging Face's tokenizer of the same model gives
them, written by llama.cpp's convert_hf_to_gguf_update.py). Written to
tests/model/testdata/gguf_vocab/:

  texts.txt               the texts: llama.cpp's .inp set, then TEXTS below
                          (special tokens of each family, whitespace, digits,
                          contractions, punctuation runs, CJK, emoji), each
                          followed by "\\n__ggml_vocab_test__\\n"
  NAME.gguf               the vocabulary (tokenizer keys only)
  NAME.hf.out             Hugging Face's ids for the .inp texts (llama.cpp's
                          NAME.gguf.out), in NAME.gguf's numbering
  NAME.llamacpp.txt       llama.cpp's tokenization of every text with
                          NAME.gguf, one line per text (ids without BOS, tab,
                          ids with BOS, tab, llama.cpp's detokenization of the
                          first as hex): tools/gguf/llamacpp_tokenize.c

NAMEs:
  llama-spm      Llama 2's SentencePiece vocabulary (tokenizer.ggml.model
                 "llama": the scores, no merges; Mistral's and Mixtral's are
                 the same kind), copied whole (0.7 MB).
  deepseek-llm   DeepSeek-LLM's byte-level BPE (the pre-tokenizer DeepSeek-V2
                 uses), cut down (below).
  gpt-4o         no ggml-vocab file carries this pre-tokenizer, so Llama 3's
                 byte-level vocabulary (tiktoken-made, as gpt-oss's o200k is)
                 labelled tokenizer.ggml.pre "gpt-4o" stands in, cut down;
                 only llama.cpp's ids are the reference there.

Cutting down a byte-level BPE vocabulary (4-8 MB whole) keeps the tokens the
texts' tokenization ends in (with the fixture's pre-tokenizer and with a few
rival ones, so that splitting the rival's way would show), every token a
merge builds them from (recursively), the 256 byte symbols and the control
and user-defined tokens; and the merges among kept tokens, in their order. The merges BPE applies to
these texts all build kept tokens, and the merges dropped were never the
lowest-ranked pair at any step, so the texts tokenize the same with the cut
vocabulary. The script checks that: llama.cpp on the cut file must give the
renumbered ids of llama.cpp on the whole one.

  LLAMA_CPP_SRC=/tmp/llamacpp/src LLAMA_CPP_BUILD=/tmp/llamacpp/build \\
    python3 tests/model/make_gguf_vocab_fixtures.py

needs numpy and gguf (LLAMA_CPP_SRC/gguf-py is used when gguf is not
installed), a C compiler and libllama.so in LLAMA_CPP_BUILD/bin. The committed
files came from llama.cpp 0.25.3's source tree (libllama 0.5.0, CPU).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "model" / "testdata" / "gguf_vocab"
SRC = Path(os.environ.get("LLAMA_CPP_SRC", "/tmp/llamacpp/src"))
BUILD = Path(os.environ.get("LLAMA_CPP_BUILD", "/tmp/llamacpp/build"))
sys.path.insert(0, str(SRC / "gguf-py"))

import gguf  # noqa: E402

SEPARATOR = "\n__ggml_vocab_test__\n"

TEXTS = [
    "<s>Hello</s> world<unk>",
    "<s> leading space after BOS, and </s>\n</s>",
    "<｜begin▁of▁sentence｜>User: hi<｜end▁of▁sentence｜>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<|endoftext|> <|start|>assistant<|channel|>final<|message|>Hi!<|return|>",
    "    four spaces\tTab\t\ttwo tabs\r\nCRLF\n\n\nthree newlines  ",
    " leading space",
    "trailing space ",
    "12 345 6789 1234567890 3.14159 -42 1e10 0x1F ½ ² ٣",
    "I'm, you're, he's, we've, they'll, I'd; DON'T, Isn'T, O'Neil's",
    "!!! ??? ... --- === +++ *** ::: ;;; ((())) [[]] {{}} <<>> ''' \"\"\" ``` ~~~ @@@ ### $$$ %%% ^^^ &&&",
    "中文分词测试：这是一个句子。日本語のテキスト、カタカナ。한국어 문장입니다.",
    "Ümlaut façade naïve résumé Ελληνικά кириллица עברית العربية हिन्दी ไทย",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🦙🦀 𝕏 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0001F9EC",
    "CamelCaseWords HTTPServer iPhone XMLHttpRequest snake_case_words kebab-case-words",
    "def f(x):\n    return x**2 + 1  # comment\n\nif __name__ == \"__main__\":\n\tprint(f(3))",
    "a\u00a0b\u2009c\u3000d\u200be",  # no-break, thin, ideographic and zero-width spaces
    "path/to/file.txt https://example.com/a?b=c&d=e#f user@example.com",
    "\n",
    "x",
]


def read_vocab(path):
    """The tokenizer.* keys of a GGUF file as Python values."""
    reader = gguf.GGUFReader(str(path))
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.") or key == "general.architecture":
            fields[key] = (field.contents(), field.types)
    return fields


def write_vocab(path, fields):
    writer = gguf.GGUFWriter(str(path), fields["general.architecture"][0])
    for key, (value, types) in fields.items():
        if key == "general.architecture":
            continue
        # The element type goes with the array, so scores stay float32 and
        # token types int32.
        sub_type = types[1] if len(types) > 1 else None
        writer.add_key_value(key, list(value) if sub_type is not None else value, types[0], sub_type=sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def build_tool(scratch):
    tool = scratch / "llamacpp_tokenize"
    subprocess.run(["cc", "-O1", "-o", str(tool), str(ROOT / "tools" / "gguf" / "llamacpp_tokenize.c"),
                    f"-I{SRC / 'include'}", f"-I{SRC / 'ggml' / 'include'}", f"-L{BUILD / 'bin'}", "-lllama",
                    f"-Wl,-rpath,{BUILD / 'bin'}"], check=True)
    return tool


def llamacpp(tool, gguf_path, texts_path):
    """[(ids without BOS, ids with BOS, detokenized hex)] per text."""
    out = subprocess.run([str(tool), str(gguf_path), str(texts_path)], check=True, capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.split("\n")[:-1]:
        plain, special, decoded = line.split("\t")
        rows.append(([int(t) for t in plain.split()], [int(t) for t in special.split()], decoded))
    return rows


def byte_symbols():
    """GPT-2's printable spelling of the 256 bytes (byte-level BPE's base symbols)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def cut_down(fields, used_ids):
    """fields with only the tokens used_ids need (see the module comment); and old id -> new id."""
    tokens = fields["tokenizer.ggml.tokens"][0]
    types = fields["tokenizer.ggml.token_type"][0]
    merges = fields["tokenizer.ggml.merges"][0]
    id_of = {t: i for i, t in enumerate(tokens)}
    producers = {}
    split_merges = []
    for merge in merges:
        left, right = merge.split(" ")
        split_merges.append((left, right))
        producers.setdefault(left + right, []).append((left, right))
    keep = {tokens[i] for i in used_ids}
    keep |= {t for t, ty in zip(tokens, types) if ty in (3, 4)}
    keep |= {s for s in byte_symbols() if s in id_of}
    work = list(keep)
    while work:
        token = work.pop()
        for left, right in producers.get(token, ()):
            for part in (left, right):
                if part not in keep:
                    keep.add(part)
                    work.append(part)
    kept_ids = sorted(id_of[t] for t in keep)
    new_id = {old: new for new, old in enumerate(kept_ids)}
    out = dict(fields)
    out["tokenizer.ggml.tokens"] = ([tokens[i] for i in kept_ids], fields["tokenizer.ggml.tokens"][1])
    out["tokenizer.ggml.token_type"] = ([types[i] for i in kept_ids], fields["tokenizer.ggml.token_type"][1])
    out["tokenizer.ggml.merges"] = (
        [f"{l} {r}" for l, r in split_merges if l in keep and r in keep and l + r in keep],
        fields["tokenizer.ggml.merges"][1])
    for key in ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id", "eot_token_id"):
        key = f"tokenizer.ggml.{key}"
        if key in out:
            out[key] = (new_id[int(out[key][0])], out[key][1])
    print(f"  {len(tokens)} tokens, {len(merges)} merges -> {len(kept_ids)} tokens, "
          f"{len(out['tokenizer.ggml.merges'][0])} merges")
    return out, new_id


def write_rows(path, rows):
    with open(path, "w") as f:
        for plain, special, decoded in rows:
            f.write(" ".join(map(str, plain)) + "\t" + " ".join(map(str, special)) + "\t" + decoded + "\n")


def hf_out(name):
    return [[int(t) for t in line.split()]
            for line in (SRC / "models" / f"ggml-vocab-{name}.gguf.out").read_text().split("\n")[:-1]]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    inp = (SRC / "models" / "ggml-vocab-llama-spm.gguf.inp").read_text(encoding="utf-8")
    for name in ("deepseek-llm", "llama-bpe"):
        other = (SRC / "models" / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8")
        assert other == inp, f"{name}'s .inp differs from llama-spm's"
    texts_path = OUT / "texts.txt"
    texts_path.write_text(inp + SEPARATOR.join(TEXTS) + SEPARATOR, encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        tool = build_tool(scratch)

        print("llama-spm")
        shutil.copyfile(SRC / "models" / "ggml-vocab-llama-spm.gguf", OUT / "llama-spm.gguf")
        write_rows(OUT / "llama-spm.llamacpp.txt", llamacpp(tool, OUT / "llama-spm.gguf", texts_path))
        (OUT / "llama-spm.hf.out").write_text(
            "".join(" ".join(map(str, ids)) + "\n" for ids in hf_out("llama-spm")))

        # (fixture, source vocabulary, pre-tokenizer, rival pre-tokenizers):
        # the cut vocabulary also keeps what the rivals' tokenizations need,
        # so a tokenizer that split with a rival's regex would find the
        # merges across the right regex's boundaries and tokenize some texts
        # differently (checked below), instead of agreeing by construction.
        byte_level = (
            ("deepseek-llm", "deepseek-llm", "deepseek-llm", ("deepseek-coder", "llama-bpe", "gpt-2")),
            ("gpt-4o", "llama-bpe", "gpt-4o", ("llama-bpe", "qwen2", "gpt-2")),
        )
        for name, source, pre, rivals in byte_level:
            print(name)
            fields = read_vocab(SRC / "models" / f"ggml-vocab-{source}.gguf")
            original_pre = fields["tokenizer.ggml.pre"][0]
            fields["tokenizer.ggml.pre"] = (pre, fields["tokenizer.ggml.pre"][1])
            whole = scratch / f"{name}.whole.gguf"
            write_vocab(whole, fields)
            rows = llamacpp(tool, whole, texts_path)
            used = {i for plain, special, _ in rows for i in plain + special}
            for rival in rivals:
                write_vocab(whole, dict(fields, **{"tokenizer.ggml.pre": (rival, fields["tokenizer.ggml.pre"][1])}))
                used |= {i for plain, special, _ in llamacpp(tool, whole, texts_path) for i in plain + special}
            reference = hf_out(source) if pre == original_pre else None
            if reference is not None:
                used |= {i for ids in reference for i in ids}
            cut, new_id = cut_down(fields, used)
            write_vocab(OUT / f"{name}.gguf", cut)
            cut_rows = llamacpp(tool, OUT / f"{name}.gguf", texts_path)
            renumbered = [([new_id[i] for i in p], [new_id[i] for i in s], d) for p, s, d in rows]
            for k, (expected, got) in enumerate(zip(renumbered, cut_rows)):
                assert expected == got, f"{name}: text {k} tokenizes differently with the cut vocabulary"
            for rival in rivals:
                rival_path = scratch / f"{name}.{rival}.gguf"
                write_vocab(rival_path, dict(cut, **{"tokenizer.ggml.pre": (rival, cut["tokenizer.ggml.pre"][1])}))
                differ = sum(a[0] != b[0] for a, b in zip(llamacpp(tool, rival_path, texts_path), cut_rows))
                print(f"  split as {rival} instead: {differ} of {len(cut_rows)} texts tokenize differently")
                assert differ > 0, f"{name}: the texts do not tell {pre} from {rival}"
            write_rows(OUT / f"{name}.llamacpp.txt", cut_rows)
            if reference is not None:
                (OUT / f"{name}.hf.out").write_text(
                    "".join(" ".join(str(new_id[i]) for i in ids) + "\n" for ids in reference))
    for path in sorted(OUT.iterdir()):
        print(f"  {path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
