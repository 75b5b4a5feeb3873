"""expertd through the official `openai` Python client (run.sh starts the daemon).

Each test makes the calls an application makes and checks what the client
parsed: the types, fields and errors OpenAI's SDK expects, over the daemon's
Unix socket.
"""
import os
import unittest

import httpx
import openai


def make_client():
    transport = httpx.HTTPTransport(uds=os.environ["EXPERTD_SOCKET"])
    return openai.OpenAI(base_url="http://expertd/v1", api_key="unused",
                         http_client=httpx.Client(transport=transport), max_retries=0)


class OpenAIClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = make_client()
        models = cls.client.models.list()
        cls.model = models.data[0].id

    def test_models_list(self):
        models = self.client.models.list()
        self.assertEqual(len(models.data), 1)
        entry = models.data[0]
        self.assertEqual(entry.object, "model")
        self.assertGreater(entry.created, 1_700_000_000)
        self.assertEqual(entry.owned_by, "expertd")

    def test_completion(self):
        answer = self.client.completions.create(model=self.model, prompt="In the beginning", max_tokens=8,
                                                temperature=0)
        self.assertEqual(answer.object, "text_completion")
        self.assertEqual(len(answer.choices), 1)
        self.assertIsInstance(answer.choices[0].text, str)
        self.assertIn(answer.choices[0].finish_reason, ("length", "stop"))
        self.assertEqual(answer.usage.total_tokens, answer.usage.prompt_tokens + answer.usage.completion_tokens)
        # Greedy decoding is deterministic.
        again = self.client.completions.create(model=self.model, prompt="In the beginning", max_tokens=8,
                                               temperature=0)
        self.assertEqual(again.choices[0].text, answer.choices[0].text)

    def test_completion_prompt_forms_and_n(self):
        answer = self.client.completions.create(model=self.model, prompt=["And God said", "In the beginning"],
                                                n=2, max_tokens=4, temperature=0.8, seed=3)
        self.assertEqual([c.index for c in answer.choices], [0, 1, 2, 3])
        one = self.client.completions.create(model=self.model, prompt="In the beginning", max_tokens=4,
                                             temperature=0.8, seed=4)
        self.assertEqual(answer.choices[3].text, one.choices[0].text)
        ids = self.client.completions.create(model=self.model, prompt=[[1, 2, 3], [4, 5]], max_tokens=2)
        self.assertEqual(len(ids.choices), 2)

    def test_completion_logprobs(self):
        answer = self.client.completions.create(model=self.model, prompt="And God said", max_tokens=5,
                                                temperature=0, logprobs=2)
        logprobs = answer.choices[0].logprobs
        self.assertEqual(len(logprobs.tokens), answer.usage.completion_tokens)
        self.assertEqual("".join(logprobs.tokens), answer.choices[0].text)
        for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
            self.assertLessEqual(logprob, 0.0)
            self.assertEqual(len(top), 2)
            # Greedy: the chosen token is the most likely one.
            self.assertAlmostEqual(max(top.values()), logprob, places=4)

    def test_chat(self):
        answer = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "system", "content": "You are terse."},
                                        {"role": "user", "content": "Who said let there be light?"}],
            max_tokens=8, temperature=0)
        self.assertEqual(answer.object, "chat.completion")
        message = answer.choices[0].message
        self.assertEqual(message.role, "assistant")
        self.assertIsInstance(message.content, str)
        self.assertGreater(answer.usage.prompt_tokens, 0)

    def test_chat_logprobs(self):
        answer = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0,
            logprobs=True, top_logprobs=3)
        content = answer.choices[0].logprobs.content
        self.assertEqual(len(content), answer.usage.completion_tokens)
        for token in content:
            self.assertEqual(len(token.top_logprobs), 3)
            self.assertEqual(bytes(token.bytes).decode("utf-8", "replace") != "", True)

    def test_streaming_with_usage(self):
        whole = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Tell me of Eden"}], max_tokens=10,
            temperature=0)
        stream = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Tell me of Eden"}], max_tokens=10,
            temperature=0, stream=True, stream_options={"include_usage": True})
        text, usage, finish = "", None, None
        for chunk in stream:
            self.assertEqual(chunk.object, "chat.completion.chunk")
            if chunk.usage is not None:
                usage = chunk.usage
                self.assertEqual(chunk.choices, [])
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        self.assertEqual(text, whole.choices[0].message.content)
        self.assertEqual(finish, whole.choices[0].finish_reason)
        self.assertIsNotNone(usage)
        self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)
        self.assertEqual(usage.prompt_tokens, whole.usage.prompt_tokens)

    def test_completion_streaming(self):
        pieces = [c.choices[0].text for c in self.client.completions.create(
            model=self.model, prompt="And the earth", max_tokens=6, temperature=0, stream=True)]
        whole = self.client.completions.create(model=self.model, prompt="And the earth", max_tokens=6, temperature=0)
        self.assertEqual("".join(pieces), whole.choices[0].text)

    def test_expertd_extensions_through_extra_body(self):
        base = dict(model=self.model, prompt="And God said", max_tokens=8, temperature=0)
        plain = self.client.completions.create(**base)
        dialed = self.client.completions.create(**base, extra_body={"experts_per_token": 1})
        self.assertEqual(dialed.model_extra["expertd"]["experts_per_token"], 1)
        self.assertNotEqual(dialed.choices[0].text, plain.choices[0].text)
        roster = self.client.completions.create(
            **base, extra_body={"roster": {"size": 4, "temperature": 0.5, "seed": 1}})
        self.assertEqual(roster.model_extra["expertd"]["roster"]["samples"], 4)

    def test_sampling_adjustments(self):
        forced = self.client.completions.create(model=self.model, prompt="And", max_tokens=5, temperature=0,
                                                logit_bias={"65": 100}, logprobs=0)
        tokens = forced.choices[0].logprobs.tokens
        self.assertEqual(len(set(tokens)), 1)
        self.client.completions.create(model=self.model, prompt="And", max_tokens=5, presence_penalty=1.5,
                                       frequency_penalty=-0.5, user="someone")

    def test_errors(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.completions.create(model=self.model, prompt="x", max_tokens=5, temperature=-1)
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(caught.exception.body["param"], "temperature")
        self.assertIn("temperature", caught.exception.body["message"])
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
        self.assertEqual(caught.exception.body["param"], "tools")
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": "hi"}],
                                                response_format={"type": "json_object"})
        self.assertEqual(caught.exception.body["param"], "response_format")
        # The daemon keeps serving after the errors.
        self.client.completions.create(model=self.model, prompt="x", max_tokens=1)


if __name__ == "__main__":
    unittest.main()
