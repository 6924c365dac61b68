"""`gemmacli bench --url`: the metrics math and the SSE reader on hand-made input, the HTTP loop against a
fake server (httpx.MockTransport), then real runs against the live server on the demo models."""

from __future__ import annotations

import json
import random
import socket

import httpx
import pytest
from typer.testing import CliRunner

from gemmacli.bench import Level, RequestResult, Stats, percentile, summarize_level
from gemmacli.cli import app
from gemmacli.loadgen import LoadConfig, SSEParser, Trace, parse_levels, run_load

CHAT = "gemma-3-270m"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- stats math


def test_percentile_interpolates_like_numpy():
    np = pytest.importorskip("numpy")
    values = sorted(random.Random(0).uniform(0, 10) for _ in range(37))
    for p in (0, 50, 90, 99, 100):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([7.0], 99) == 7.0


def test_stats_scale_and_empty():
    stats = Stats.of([0.004, 0.001, 0.002, 0.003], scale=1000)  # seconds in, ms out; order does not matter
    assert stats.mean == pytest.approx(2.5) and stats.p50 == pytest.approx(2.5)
    assert stats.p90 == pytest.approx(3.7) and stats.p99 == pytest.approx(3.97)
    assert Stats.of([]) is None


def test_tpot_excludes_the_first_token():
    assert RequestResult(True, e2e=1.0, ttft=0.2, output_tokens=5).tpot == pytest.approx(0.2)
    assert RequestResult(True, e2e=1.0, ttft=0.2, output_tokens=1).tpot is None  # no token after the first


def test_summarize_level_follows_vllm_definitions():
    results = [
        RequestResult(True, 1.0, 0.2, (0.1, 0.3), 3, 20, True),  # TPOT (1.0 - 0.2) / 2 = 0.4
        RequestResult(True, 2.0, 0.5, (0.5, 0.5, 0.5), 4, 22, True),  # TPOT 1.5 / 3 = 0.5
        RequestResult(False, 0.1, error="HTTP 404: model 'x' is not served"),
        RequestResult(False, 0.2, error="later error"),
    ]
    r = summarize_level(Level(2, None, 4), results, duration=4.0, peak=2)
    assert (r.requests, r.completed, r.failed) == (4, 2, 2)
    assert r.first_error == "HTTP 404: model 'x' is not served"
    assert r.request_throughput == pytest.approx(0.5) and r.output_throughput == pytest.approx(7 / 4)
    assert r.output_tokens == 7 and r.tokens_counted_by == "usage" and r.prompt_tokens_mean == 21
    assert r.ttft_ms.p50 == pytest.approx(350) and r.ttft_ms.mean == pytest.approx(350)
    assert r.tpot_ms.mean == pytest.approx(450)
    assert r.itl_ms.mean == pytest.approx(1000 * 1.9 / 5)  # ITL pooled over every gap of every request
    assert r.e2e_ms.p50 == pytest.approx(1500)
    assert (r.concurrency, r.rate, r.peak_in_flight) == (2, None, 2)


def test_summarize_level_when_everything_failed():
    r = summarize_level(Level(None, 2.0, 1), [RequestResult(False, 0.1, error="boom")], duration=0.1, peak=1)
    assert r.completed == 0 and r.failed == 1 and r.ttft_ms is None and r.itl_ms is None and r.output_tokens == 0


def test_counted_by_chunks_or_mixed():
    chunks = RequestResult(True, 1.0, 0.1, (), 2, None, False)
    usage = RequestResult(True, 1.0, 0.1, (), 2, 5, True)
    assert summarize_level(Level(1, None, 1), [chunks], 1.0, 1).tokens_counted_by == "chunks"
    assert summarize_level(Level(1, None, 2), [chunks, usage], 1.0, 1).tokens_counted_by == "mixed"


def test_levels_and_their_default_sizes():
    levels = LoadConfig("u", concurrency=(1, 8, 32)).levels()
    assert [(lv.concurrency, lv.requests) for lv in levels] == [(1, 16), (8, 32), (32, 128)]
    assert LoadConfig("u", concurrency=(1, 8), requests=5).levels() == (Level(1, None, 5), Level(8, None, 5))
    open_loop = LoadConfig("u", rates=(0.5, 4.0), max_in_flight=8).levels()
    assert open_loop == (Level(8, 0.5, 16), Level(8, 4.0, 40))  # about 10 s of arrivals, at least 16
    assert "api_key" not in LoadConfig("u", api_key="secret").to_json()  # a key never lands in a report


@pytest.mark.parametrize(("text", "kind", "expected"), [("1,8,32", int, (1, 8, 32)), (" 0.5, 2 ", float, (0.5, 2.0))])
def test_parse_levels(text, kind, expected):
    assert parse_levels(text, kind, "1,2") == expected


@pytest.mark.parametrize(
    ("text", "kind"), [("0", int), ("x", int), ("", int), ("1.5", int), ("-1", float), ("nan", float)]
)
def test_parse_levels_rejects(text, kind):
    with pytest.raises(ValueError):
        parse_levels(text, kind, "1,2")


# -- server-sent events


def test_sse_parser_reassembles_split_reads():
    stream = (
        'data: {"a": 1}\n\n: keep-alive comment\r\n\r\ndata: {"t": "caf\u00e9"}\n\nevent: error\ndata: {"x": 2}\n\n'
        'error: {"code": 500, "message": "llama.cpp style"}\n\ndata: [DONE]\n\n'
    ).encode()
    expected = [
        ("message", '{"a": 1}'),
        ("message", '{"t": "café"}'),
        ("error", '{"x": 2}'),
        ("error", '{"code": 500, "message": "llama.cpp style"}'),
        ("message", "[DONE]"),
    ]
    whole = SSEParser().feed(stream)
    assert whole == expected
    for size in (1, 2, 3, 7):  # every split point, including inside "é" and between \r and \n
        parser = SSEParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i : i + size])]
        assert events == expected, size


def chat_chunk(content=None, usage=None, role=None):
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    return json.dumps({"choices": [{"index": 0, "delta": delta}] if usage is None else [], "usage": usage})


def test_trace_times_content_chunks_only():
    trace = Trace(start=10.0)
    trace.on_event("message", chat_chunk("", role="assistant"), 10.1)  # role chunk: no token, no TTFT
    trace.on_event("message", chat_chunk("Hello"), 10.5)
    trace.on_event("message", chat_chunk(" world"), 10.7)
    trace.on_event("message", chat_chunk("!"), 11.0)
    trace.on_event("message", chat_chunk(usage={"prompt_tokens": 9, "completion_tokens": 4}), 11.05)
    trace.on_event("message", "[DONE]", 11.1)
    r = trace.result()
    assert r.ok and r.ttft == pytest.approx(0.5) and r.e2e == pytest.approx(1.1)
    assert r.itl == pytest.approx((0.2, 0.3))
    assert (r.output_tokens, r.prompt_tokens, r.tokens_from_usage) == (4, 9, True)  # usage wins over 3 chunks
    assert r.tpot == pytest.approx(0.6 / 3)


def test_trace_counts_chunks_without_usage_and_reads_completions():
    trace = Trace(start=0.0, endpoint="completions")
    for i, text in enumerate(["a", "b", ""]):
        trace.on_event("message", json.dumps({"choices": [{"index": 0, "text": text}]}), 1.0 + i)
    trace.on_event("message", "[DONE]", 4.0)
    r = trace.result()
    assert r.ok and r.output_tokens == 2 and not r.tokens_from_usage and r.itl == (1.0,)


def test_trace_accepts_a_stream_that_ends_after_its_finish_chunk_without_done():
    """transformers serve ends its streams this way; the openai client accepts it too."""
    trace = Trace(start=0.0)
    trace.on_event("message", chat_chunk("a"), 1.0)
    trace.on_event("message", json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}), 2.0)
    r = trace.result()
    assert r.ok and r.output_tokens == 1 and r.e2e == 2.0


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ([chat_chunk("a"), '{"error": {"message": "engine died", "type": "server_error"}}'], "engine died"),
        ([chat_chunk("a")], "without data: [DONE]"),
        ([chat_chunk("", role="assistant"), "[DONE]"], "no content"),
        (["<html>"], "not JSON"),
    ],
)
def test_trace_failures(events, error):
    trace = Trace(start=0.0)
    for event in events:
        trace.on_event("message", event, 1.0)
    r = trace.result()
    assert not r.ok and error in r.error and r.ttft is None


def test_trace_error_event_type():
    trace = Trace(start=0.0)
    trace.on_event("error", '{"code": 500, "message": "llama.cpp says no"}', 1.0)
    assert trace.result().error == "llama.cpp says no"


# -- the HTTP loop against a fake server


def fake_server(seen: list[httpx.Request], *, fail_every: int = 0, usage: bool = True):
    """An OpenAI-ish streaming server: two content chunks, usage, [DONE]; every `fail_every`-th request 500s."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "emb", "task": "embed"}, {"id": "peer-model"}]})
        seen.append(request)
        if fail_every and len(seen) % fail_every == 0:
            return httpx.Response(500, text="<html>Internal Server Error</html>")
        if request.url.path == "/v1/completions":
            events = [json.dumps({"choices": [{"index": 0, "text": t}]}) for t in ("x", "y")]
        else:
            events = [chat_chunk("", role="assistant"), chat_chunk("x"), chat_chunk("y")]
        events += [chat_chunk(usage={"prompt_tokens": 3, "completion_tokens": 2})] if usage else []
        body = "".join(f"data: {e}\n\n" for e in [*events, "[DONE]"])
        return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


def test_closed_loop_against_a_fake_server():
    seen: list[httpx.Request] = []
    config = LoadConfig("http://peer", concurrency=(1, 3), requests=6, max_tokens=2, warmup=2, api_key="k")
    progress = []
    report = run_load(config, lambda level, done: progress.append((level.concurrency, done)), fake_server(seen))
    assert report.model == "peer-model"  # the first chat model listed: not the embedding one
    assert len(seen) == 2 + 12 and report.failed == 0
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 2 and body["temperature"] == 0.0 and body["messages"][0]["role"] == "user"
    assert seen[0].headers["authorization"] == "Bearer k" and seen[0].url.path == "/v1/chat/completions"
    prompts = [json.loads(r.content)["messages"][0]["content"] for r in seen]
    assert len(set(prompts)) == len(prompts)  # a prompt of its own for each request: no prefix-cache help
    assert progress[0] == (1, 0) and progress[-1] == (3, 6) and len(progress) == 2 + 12
    for r in report.results:
        assert r.completed == 6 and r.output_tokens == 12 and r.tokens_counted_by == "usage"
        assert r.ttft_ms.p50 >= 0 and r.request_throughput > 0


def test_open_loop_and_failures_against_a_fake_server():
    seen: list[httpx.Request] = []
    config = LoadConfig("http://peer", model="m", endpoint="completions", rates=(50.0,), requests=6, warmup=0)
    report = run_load(config, transport=fake_server(seen, fail_every=3, usage=False))
    (r,) = report.results
    assert r.rate == 50.0 and r.concurrency is None and r.requests == 6
    assert r.failed == 2 and r.first_error == "HTTP 500: <html>Internal Server Error</html>"
    assert seen[0].url.path == "/v1/completions" and json.loads(seen[0].content)["prompt"]
    assert r.tokens_counted_by == "chunks"  # no usage: content-bearing chunks, here "x" and "y"


# -- the command


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_server_is_one_error_line():
    result = invoke("bench", "--url", f"http://127.0.0.1:{closed_port()}", "-m", CHAT, "--requests", "2")
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "localhost:8000"], "give a URL like"),
        (["--url", "http://x", "--batch", "2"], "--batch: only applies in process"),
        (["--url", "http://x", "--threads", "1"], "--threads: only applies in process"),
        (["--concurrency", "4"], "--concurrency: only applies with --url"),
        (["--url", "http://x", "--concurrency", "0"], "'0' is not valid"),
        (["--url", "http://x", "--rate", "fast"], "'fast' is not valid"),
    ],
)
def test_usage_errors(args, message):
    result = invoke("bench", *args)
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


@pytest.mark.slow
def test_closed_loop_against_the_live_server(server):
    args = ["--concurrency", "1,2", "--requests", "4", "--max-tokens", "4", "--prompt-tokens", "16", "--json"]
    result = invoke("bench", "--url", f"{server}/v1/", "-m", CHAT, *args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == CHAT and report["failed"] == 0 and report["url"] == server
    assert [r["concurrency"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert r["completed"] == r["requests"] == 4 and r["failed"] == 0
        assert 0 < r["output_tokens"] <= 4 * 4 and r["tokens_counted_by"] == "usage"
        assert r["ttft_ms"]["p50"] > 0 and r["e2e_ms"]["p99"] >= r["ttft_ms"]["p99"]
        assert r["request_throughput"] > 0 and r["output_throughput"] > 0 and r["prompt_tokens_mean"] > 16
    assert report["results"][1]["peak_in_flight"] == 2


@pytest.mark.slow
def test_open_loop_table_against_the_live_server(server):
    args = ["--rate", "8", "--requests", "3", "--max-tokens", "2", "--prompt-tokens", "8", "--endpoint", "completions"]
    result = invoke("bench", "--url", server, *args)  # no -m: the server's first chat model
    assert result.exit_code == 0, result.output
    assert CHAT in result.stdout and "TTFT" in result.stdout and "req/s" in result.stdout and "peak" in result.stdout
    assert "output tokens (from the server's usage)" in " ".join(result.stdout.split())


@pytest.mark.slow
def test_unknown_model_fails_its_requests_with_the_servers_message(server):
    result = invoke("bench", "--url", server, "-m", "no-such-model", "-c", "2", "--requests", "3", "--json", "-q")
    assert result.exit_code == 1
    report = json.loads(result.stdout)  # the report is still printed
    (r,) = report["results"]
    assert r["failed"] == 3 and r["completed"] == 0 and report["failed"] == 3
    assert r["first_error"].startswith("HTTP 404: model 'no-such-model' is not served")
    assert "3 of 3 requests failed; the first: HTTP 404: model 'no-such-model'" in one_error_line(result)
