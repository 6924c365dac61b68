"""Faults inside a request stay inside it: runner bugs, out-of-memory, hostile fields in logs.

The real demo runners behind the model manager, wrapped so that chosen requests fail the way a bug or a
full GPU would; everything else about the server is the real thing, over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
from support.helpers import check_openai_error

from gemmacli.runners.decoder import Decoder
from gemmacli.server.logs import JsonFormatter

pytestmark = pytest.mark.slow
SECRET = "/opt/secret/models/weights.safetensors"
TOKEN = "hf_abcdefghijklmnopqrstuvwx"
FAILURE = f'kernel failed\n{{"level":"critical","message":"forged"}}\x1b[2J at {SECRET} with token={TOKEN}'
MIDSTREAM_FAIL, OOM_IN_BATCH = 9, 11  # max_tokens values that make the wrapped runner fail
COUNTING = "1, 2, 3, 4, 5, 6, 7,"  # greedy, the base model keeps counting: no early end of text


class FaultyDecoder(Decoder):
    """The real decoder, except that a decode step holding an OOM_IN_BATCH sequence runs out of memory, and a
    MIDSTREAM_FAIL sequence's output stage breaks at its fourth token."""

    def fork(self, prompt, params, n, cancelled=lambda: False):
        seqs = super().fork(prompt, params, n, cancelled)
        for seq in seqs if params.max_tokens == MIDSTREAM_FAIL else ():
            seq.pipeline = replace(seq.pipeline, outputs=(*seq.pipeline.outputs, BreaksAtFourth()))
        return seqs

    def _forward(self, input_ids, cache, **inputs):
        import torch

        decoding = "attention_mask" in inputs
        if decoding and any(seq.max_new_tokens == OOM_IN_BATCH for seq in self.running):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._forward(input_ids, cache, **inputs)


class BreaksAtFourth:
    """An output stage with a bug: its fourth piece of text raises."""

    stopped = False

    def __init__(self):
        self.pieces = 0

    def feed(self, text: str) -> str:
        self.pieces += 1
        if self.pieces == 4:
            raise RuntimeError(FAILURE)
        return text

    def flush(self) -> str:
        return ""


class FaultyChat:
    """The real chat runner and a FaultyDecoder over its model; "explode" in a message fails its encoding."""

    def __init__(self, inner):
        self.inner = inner
        d = inner.decoder
        self.decoder = FaultyDecoder(
            inner.model,
            inner.tokenizer,
            eos_ids=d.eos_ids,
            context_length=d.context_length,
            defaults=d.defaults,
            name=d.name,
        )

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_chat(self, messages, tools=None, **kw):
        if "explode" in str(messages[-1].content):
            raise RuntimeError(FAILURE)
        return self.inner.encode_chat(messages, tools, **kw)


class FaultyEmbed:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts):
        if "memory-hog" in texts:
            raise MemoryError()
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def logs():
    """Everything the server logs, through its real formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler()
    logger = logging.getLogger("gemmacli")
    handler.stream = out
    handler.setFormatter(JsonFormatter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def base(chat_runner, embed_runner, logs):
    from support.liveserver import LiveServer

    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings

    models = [
        LoadedModel("gemma-3-270m", FaultyChat(chat_runner)),
        LoadedModel("all-minilm-l6-v2", FaultyEmbed(embed_runner)),
    ]
    with LiveServer(create_app(ServerSettings(max_batch=4), models=models)) as live:
        yield live.url


def events(base: str, path: str, body: dict, started: threading.Event | None = None) -> list:
    """Every `data:` payload of a stream, parsed ("[DONE]" as is); sets `started` at the first one."""
    out = []
    with httpx.stream("POST", f"{base}{path}", json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                out.append(payload if payload == "[DONE]" else json.loads(payload))
                if started is not None:
                    started.set()
    return out


def completion(max_tokens: int, prompt=COUNTING) -> dict:
    return {"model": "gemma-3-270m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}


def assert_clean(text: str) -> None:
    assert SECRET not in text and "/opt/secret" not in text and TOKEN not in text and "\x1b" not in text


def test_a_runner_failure_ends_only_its_own_request(base):
    started = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        healthy = pool.submit(events, base, "/v1/completions", completion(16), started)
        assert started.wait(120)
        # Two prompts decode in the shared batch beside the healthy request; a stage of theirs breaks.
        failing = pool.submit(events, base, "/v1/completions", completion(MIDSTREAM_FAIL, [COUNTING, "a, b, c,"]))
        chat = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "please explode"}]}
        refused = httpx.post(f"{base}/v1/chat/completions", json=chat, timeout=120)
        failed, ok = failing.result(), healthy.result()
    error = check_openai_error(refused, 500, code="internal_error", type="server_error")
    assert_clean(refused.text) and "kernel" not in error["message"]
    # Three deltas of each choice (they interleave), then the error, which ends the request.
    assert [e["choices"][0]["index"] for e in failed[:-1]] == [0, 1] * 3
    assert len(failed) == 7 and all("choices" in e for e in failed[:-1])
    assert failed[-1]["error"]["code"] == "internal_error" and "[DONE]" not in failed
    assert_clean(json.dumps(failed))
    assert ok[-1] == "[DONE]" and ok[-2]["choices"][0]["finish_reason"] == "length"
    assert not any("error" in e for e in ok[:-1])


def test_out_of_memory_in_the_shared_batch_is_503_and_the_server_recovers(base):
    response = httpx.post(f"{base}/v1/completions", json=completion(OOM_IN_BATCH), timeout=120)
    error = check_openai_error(response, 503, code="out_of_memory", type="server_error", param=None)
    assert "memory" in error["message"] and int(response.headers["retry-after"]) > 0
    streamed = events(base, "/v1/completions", completion(OOM_IN_BATCH))
    assert [e for e in streamed if "error" in e] == [streamed[-1]] and streamed[-1]["error"]["code"] == "out_of_memory"
    for _ in range(2):  # the batch was reset and its memory given back: the next requests run as usual
        again = httpx.post(f"{base}/v1/completions", json=completion(6), timeout=120)
        assert again.status_code == 200 and again.json()["choices"][0]["finish_reason"] == "length"


def test_out_of_memory_in_the_embedding_model_is_503_and_the_server_recovers(base):
    body = {"model": "all-minilm-l6-v2", "input": ["fine", "memory-hog"]}
    response = httpx.post(f"{base}/v1/embeddings", json=body, timeout=60)
    check_openai_error(response, 503, code="out_of_memory", type="server_error")
    assert response.headers["retry-after"]
    again = httpx.post(f"{base}/v1/embeddings", json={**body, "input": ["fine", "also fine"]}, timeout=60)
    assert again.status_code == 200 and len(again.json()["data"]) == 2


def test_logs_are_one_json_object_per_line_without_paths_secrets_or_forged_lines(base, logs):
    forged = 'x\n{"level":"critical","message":"forged"}\x1b[31m'
    httpx.get(f"{base}/v1/models/x%0A%7B%22level%22%3A%22critical%22%7D%1B%5B31m", timeout=10)
    httpx.post(f"{base}/v1/chat/completions", json={"model": forged, "messages": []}, timeout=10)
    chat = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "explode"}]}
    httpx.post(f"{base}/v1/chat/completions", json=chat, headers={"X-Request-Id": "req-explode"}, timeout=60)
    httpx.post(f"{base}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "memory-hog"}, timeout=60)
    text = logs.getvalue()
    assert_clean(text) and "\x9b" not in text
    records = [json.loads(line) for line in text.splitlines()]  # each line is exactly one record
    assert all(r["level"] != "critical" and r["message"] != "forged" for r in records)
    paths = [r["path"] for r in records if r.get("logger") == "gemmacli.access"]
    assert '/v1/models/x\n{"level":"critical"}\x1b[31m' in paths  # logged, but escaped on its line
    crash = next(r for r in records if r["message"] == "internal error" and r.get("request_id") == "req-explode")
    assert crash["error"].startswith("RuntimeError: kernel failed") and "<path>" in crash["error"]
    assert any(r["message"] == "out of memory" and r["error"] == "MemoryError" for r in records)
