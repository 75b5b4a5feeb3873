#!/usr/bin/env python3
"""Renders every fixture template over the conversations below with Python's
Jinja2, configured as Hugging Face transformers configures it for
apply_chat_template, and writes expected.json for chat_template_conformance_test.

    python3 tests/tokenizer/chat_templates/make_expected.py

The environment mirrors transformers' _compile_jinja_template: an
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop
controls; tojson as json.dumps(ensure_ascii=False, indent=..); the globals
raise_exception and strftime_now (here at a fixed instant, the test's clock);
render(messages=..., tools=None, documents=None, add_generation_prompt=..,
bos_token=.., eos_token=.., **kwargs). A case records the text, or the message
of a raise_exception, or that Jinja2 failed otherwise (the C++ side must fail
too).
"""
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
# 2026-01-15 12:00 UTC: the test clock. Noon keeps the date the same in any
# time zone within +-11 h, since strftime_now formats local time.
FIXED_NOW_UTC = datetime.datetime(2026, 1, 15, 12, 0, 0, tzinfo=datetime.timezone.utc)

# file -> (bos_token, eos_token) as the model's tokenizer_config.json names
# them; None when the model has none (then the variable is not passed, as
# transformers leaves unset special tokens out).
TEMPLATES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": (None, "<|im_end|>"),
    "Qwen-Qwen3-0.6B.jinja": (None, "<|im_end|>"),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("<s>", "</s>"),
    "mistralai-Mixtral-8x7B-Instruct-v0.1.jinja": ("<s>", "</s>"),
    "deepseek-ai-DeepSeek-V3.1.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "openai-gpt-oss-120b.jinja": ("<|startoftext|>", "<|return|>"),
    "allenai-OLMoE-1B-7B-0924-Instruct.jinja": ("<|endoftext|>", "<|endoftext|>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
    "google-gemma-2-2b-it.jinja": ("<bos>", "<eos>"),
    "HuggingFaceTB-SmolLM3-3B.jinja": (None, "<|im_end|>"),
    "moonshotai-Kimi-K2.jinja": ("[BOS]", "[EOS]"),
    "GLM-4.6.jinja": (None, "<|endoftext|>"),
    "ByteDance-Seed-OSS.jinja": ("<seed:bos>", "<seed:eos>"),
    "meetkai-functionary-medium-v3.1.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
}


def m(role, content, **extra):
    message = {"role": role, "content": content}
    message.update(extra)
    return message


CONVERSATIONS = {
    "one_user": [m("user", "Hi there")],
    "system_user": [m("system", "Be brief."), m("user", "Hi there")],
    "multi_turn": [m("user", "Hi"), m("assistant", "Hello!"), m("user", "How are you?")],
    "system_multi_turn": [m("system", "You are terse."), m("user", "Hi"), m("assistant", "Hello!"), m("user", "Bye")],
    "assistant_last": [m("user", "Name a colour."), m("assistant", "Blue.")],
    "system_assistant_last": [m("system", "Answer in one word."), m("user", "Sky?"), m("assistant", "Blue")],
    "three_rounds": [m("user", "1"), m("assistant", "one"), m("user", "2"), m("assistant", "two"), m("user", "3")],
    "unicode": [m("system", "Réponds en français, s'il te plaît."), m("user", "日本語で？ 🙂 «quotes» \"dq\" \\back\\slash"),
                m("assistant", "はい — ✓"), m("user", "Ünïcödé\ttab\nnewline")],
    "whitespace": [m("system", "  padded system  \n"), m("user", "\n  padded user \n\n"), m("assistant", "  answer  "),
                   m("user", " next ")],
    "empty_contents": [m("system", ""), m("user", ""), m("assistant", ""), m("user", "x")],
    "think_in_content": [m("user", "2+2?"), m("assistant", "<think>\nadd them\n</think>\n\n4"), m("user", "3+3?")],
    "think_last": [m("user", "2+2?"), m("assistant", "<think>\nadd them\n</think>\n\n4")],
    "reasoning_content": [m("user", "2+2?"), m("assistant", "4", reasoning_content="two and two make four"),
                          m("user", "And 3+3?")],
    "reasoning_content_last": [m("user", "2+2?"), m("assistant", "4", reasoning_content="two and two make four")],
    "thinking_field": [m("user", "2+2?"), m("assistant", "4", thinking="two and two"), m("user", "ok")],
    "two_system": [m("system", "First rule."), m("system", "Second rule."), m("user", "Go")],
    "user_user": [m("user", "a"), m("user", "b")],
    "assistant_first": [m("assistant", "I start."), m("user", "ok")],
    "system_only": [m("system", "Only a system prompt.")],
    "template_syntax_in_content": [m("user", "{{ messages }} {% if x %} {# c #} '\"")],
    "long_words": [m("user", "word " * 40), m("assistant", "ok " * 30), m("user", "end")],
    "tool_role_absent_tools": [m("user", "Weather?"), m("assistant", "Let me check."), m("user", "Thanks")],
    # OpenAI-style tool calls, for the templates' tool paths (tojson, macros).
    "tool_call": [m("system", "Use tools."), m("user", "Weather in Paris?"),
                  m("assistant", "", tool_calls=[{"id": "abc123def", "type": "function",
                                                  "function": {"name": "get_weather",
                                                               "arguments": {"city": "Paris", "unit": "c"}}}]),
                  m("tool", "{\"temp\": 20, \"sky\": \"clear\"}", tool_call_id="abc123def", name="get_weather"),
                  m("assistant", "It is 20 °C and clear.")],
    "tool_call_pending": [m("user", "Weather in Oslo?"),
                          m("assistant", "", tool_calls=[{"id": "xyz987uvw", "type": "function",
                                                          "function": {"name": "get_weather",
                                                                       "arguments": {"city": "Oslo"}}}]),
                          m("tool", "{\"temp\": -3}", tool_call_id="xyz987uvw", name="get_weather")],
}

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city (°C or °F)",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city's name"},
        "unit": {"type": "string", "enum": ["c", "f"], "description": "Degrees"},
        "days": {"type": "integer", "default": 1}},
        "required": ["city"]}}}]

KWARG_SETS = {
    "default": {},
    "thinking_off": {"enable_thinking": False},
    "thinking_on": {"enable_thinking": True},
    # tools is a render() argument of its own in transformers; here it rides
    # with the kwargs and replaces the tools=None default.
    "with_tools": {"tools": TOOLS},
}


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker, minus the token mask: {% generation %}
    renders its body as is."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def make_environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW_UTC.astimezone().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    # make_expected.py [DIR]: every *.jinja in DIR with unknown specials
    # (to try templates before adding them as fixtures); default: HERE.
    here = sys.argv[1] if len(sys.argv) > 1 else HERE
    templates = TEMPLATES if here == HERE else {
        f: ("<s>", "</s>") for f in sorted(os.listdir(here)) if f.endswith(".jinja")}
    env = make_environment()
    cases = []
    # Rendered texts repeat (most templates ignore enable_thinking), so each
    # is stored once in "texts" and a case names it by index.
    texts = []
    text_index = {}

    def render(**variables):
        text = template.render(**variables)
        if text not in text_index:
            text_index[text] = len(texts)
            texts.append(text)
        return text_index[text]

    for file, (bos, eos) in templates.items():
        with open(os.path.join(here, file), encoding="utf-8") as f:
            try:
                template = env.from_string(f.read())
            except jinja2.exceptions.TemplateSyntaxError as e:
                print(file, "does not parse in Jinja2:", e, file=sys.stderr)
                continue
        for conversation, messages in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                for kwargs_name, kwargs in KWARG_SETS.items():
                    variables = dict(kwargs)
                    tools = variables.pop("tools", None)
                    if bos is not None:
                        variables["bos_token"] = bos
                    if eos is not None:
                        variables["eos_token"] = eos
                    case = {
                        "template": file,
                        "conversation": conversation,
                        "add_generation_prompt": add_generation_prompt,
                        "kwargs": kwargs_name,
                        "bos_token": bos,
                        "eos_token": eos,
                    }
                    try:
                        case["expected"] = render(messages=json.loads(json.dumps(messages)), tools=tools,
                                                           documents=None, add_generation_prompt=add_generation_prompt,
                                                           **variables)
                    except jinja2.exceptions.TemplateError as e:
                        if type(e) is jinja2.exceptions.TemplateError:
                            case["raises"] = e.message
                        else:
                            case["fails"] = f"{type(e).__name__}: {e}"
                    except Exception as e:  # a TypeError and the like: the C++ side must fail too
                        case["fails"] = f"{type(e).__name__}: {e}"
                    cases.append(case)
    header = {
        "generated_by": "tests/tokenizer/chat_templates/make_expected.py",
        "jinja2_version": jinja2.__version__,
        "now_utc": FIXED_NOW_UTC.isoformat(),
        "conversations": CONVERSATIONS,
        "kwargs": KWARG_SETS,
    }
    # One case and one text per line, so a regenerated file diffs readably.
    with open(os.path.join(here, "expected.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(header, ensure_ascii=False)[:-1])
        f.write(',\n"cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write('\n],\n"texts": [\n')
        f.write(",\n".join(json.dumps(t, ensure_ascii=False) for t in texts))
        f.write("\n]}\n")
    counts = {}
    for c in cases:
        kind = "expected" if "expected" in c else "raises" if "raises" in c else "fails"
        counts.setdefault(c["template"], {}).setdefault(kind, 0)
        counts[c["template"]][kind] += 1
    for file, kinds in counts.items():
        print(file, kinds, file=sys.stderr)


if __name__ == "__main__":
    main()
