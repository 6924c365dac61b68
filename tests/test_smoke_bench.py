"""`gemmacli smoke` and `gemmacli bench`: the pure measurement helpers, then the commands on the real gemma-3-270m."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gemmacli.bench import (
    WORDS,
    BenchConfig,
    Run,
    build_prompts,
    parse_batches,
    run_bench,
    run_from_steps,
    summarize,
)
from gemmacli.cli import app
from gemmacli.device import Placement
from gemmacli.smoke import Check, SmokeReport, generation, matmul
from gemmacli.types import Completion, Usage


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


# -- bench helpers


def test_prompts_are_deterministic_and_sized():
    prompts = build_prompts(3, 32, seed=7)
    assert prompts == build_prompts(3, 32, seed=7)
    assert prompts != build_prompts(3, 32, seed=8)
    assert len(set(prompts)) == 3  # each sequence of a batch reads its own text
    assert all(len(p.split()) == 31 and set(p.split()) <= set(WORDS) for p in prompts)  # + <bos> = 32 tokens
    assert build_prompts(1, 32, seed=7) == prompts[:1]  # a prompt does not depend on the batch size


def test_run_from_steps_splits_prefill_from_decode():
    steps = [(10.5, 4), (10.6, 4), (10.7, 3), (10.8, 1)]  # two sequences hit EOS along the way
    run = run_from_steps(64, 10.0, steps)
    assert run.prefill_s == pytest.approx(0.5)
    assert run.first_tokens == 4 and run.decode_tokens == 8 and run.gen_tokens == 12
    assert run.decode_s == pytest.approx(0.3) and run.decode_steps == 3
    assert run_from_steps(64, 10.0, []).gen_tokens == 0


def test_summarize_weighs_runs_by_their_time():
    runs = [Run(100, 0.5, 2, 1.0, 20, 10), Run(100, 1.5, 2, 3.0, 20, 10)]
    result = summarize(2, runs, peak_mem_bytes=123)
    assert result.prefill_tok_s == pytest.approx(200 / 2.0)
    assert result.decode_tok_s == pytest.approx(40 / 4.0)
    assert result.ms_per_step == pytest.approx(1000 * 4.0 / 20)
    assert (result.prompt_tokens, result.gen_tokens, result.peak_mem_bytes) == (100, 22, 123)


def test_summarize_without_decode_steps():
    result = summarize(1, [Run(10, 0.1, 1, 0.0, 0, 0)])  # max_tokens 1, or EOS at once
    assert result.decode_tok_s is None and result.ms_per_step is None
    assert result.prefill_tok_s == pytest.approx(100)


@pytest.mark.parametrize(("text", "expected"), [("1", (1,)), ("1,4,8", (1, 4, 8)), (" 2 , 16 ", (2, 16))])
def test_parse_batches(text, expected):
    assert parse_batches(text) == expected


@pytest.mark.parametrize("text", ["0", "x", "", "1,,-2", "1.5"])
def test_parse_batches_rejects(text):
    with pytest.raises(ValueError):
        parse_batches(text)


class FakeSource:
    """A LoadSource that records calls and answers with fixed timings."""

    model = "fake"
    device = "cpu"
    dtype = "float32"
    peak_mem_kind = "none"

    def __init__(self):
        self.calls: list[tuple[int, int]] = []
        self.resets = 0

    def run(self, prompts, max_tokens):
        self.calls.append((len(prompts), max_tokens))
        batch = len(prompts)
        return Run(10 * batch, 0.1, batch, 0.2, batch * (max_tokens - 1), max_tokens - 1)

    def reset_peak_memory(self):
        self.resets += 1

    def peak_memory(self):
        return 1000


def test_run_bench_warms_up_once_then_measures_each_batch():
    source, progress = FakeSource(), []
    results = run_bench(source, BenchConfig(batches=(1, 4), max_tokens=8, prompt_tokens=10, repeat=2), progress.append)
    assert source.calls == [(1, 4), (1, 8), (1, 8), (4, 8), (4, 8)]  # warm-up first, with few tokens
    assert len(progress) == 4 and source.resets == 2
    assert [r.batch for r in results] == [1, 4]
    assert results[1].gen_tokens == 32 and results[1].decode_tok_s == pytest.approx(28 / 0.2)


# -- smoke checks


def test_report_passes_with_skips_and_fails_on_any_failure():
    passing = SmokeReport("cpu", "cpu", (Check("a", True, ""), Check("b", None, "skipped")))
    assert passing.ok and passing.to_json()["checks"][1]["status"] == "skip"
    failing = SmokeReport("cpu", "cpu", (Check("a", True, ""), Check("b", False, "broken")))
    assert not failing.ok and [c.name for c in failing.failed] == ["b"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cpu_matmul_matches_fp32(dtype):
    check = matmul("cpu", dtype)
    assert check.ok, check.detail


class FakeRunner:
    name, placement = "fake", Placement("cpu", "float32")

    def complete_text(self, prompt, params):
        n = params.max_tokens
        return Completion(" Wednesday" * n, (1,) * n, "length", Usage(3, n))


def test_generation_check_reports_tokens_per_second():
    check = generation("cpu", "fake", lambda model, device: FakeRunner())
    assert check.ok and check.values["tokens"] == 8 and check.values["tokens_per_s"] > 0


# -- the commands


@pytest.mark.skipif(_has_gpu(), reason="checks the CPU-only answer")
def test_smoke_auto_without_gpu_fails_plainly():
    result = invoke("smoke", "--quiet")
    assert result.exit_code == 1
    assert "no GPU found (CPU only)" in result.stderr
    assert "FAIL" in result.stdout  # the table still shows what was found


@pytest.mark.skipif(_has_gpu(), reason="needs a machine without CUDA")
def test_smoke_cuda_without_gpu_fails_readably():
    result = invoke("smoke", "--device", "cuda", "--json")
    assert result.exit_code == 1
    assert "error: accelerator: device 'cuda' asked, but torch sees no CUDA GPU" in " ".join(result.stderr.split())
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["device"] is None


@pytest.mark.slow
def test_smoke_cpu_passes_every_check(gemma_dir):  # gemma_dir: the default model is imported
    result = invoke("smoke", "--device", "cpu", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["device"] == "cpu"
    assert all(c["status"] == "pass" for c in report["checks"]), report["checks"]
    names = [c["name"] for c in report["checks"]]
    assert names[:2] == ["torch build", "accelerator"] and "matmul float32" in names
    generate = next(c for c in report["checks"] if c["name"] == "generate")
    assert generate["tokens"] > 0 and generate["tokens_per_s"] > 0


@pytest.mark.slow
def test_bench_json_two_batches(gemma_dir):
    args = ["bench", "--batch", "1,2", "--max-tokens", "4", "--prompt-tokens", "16", "--device", "cpu", "--json"]
    result = invoke(*args, "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "gemma-3-270m" and report["device"] == "cpu" and report["load_s"] > 0
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert r["prompt_tokens"] == 16 * r["batch"]  # WORDS are single tokens: the size is exact
        assert 0 < r["gen_tokens"] <= r["batch"] * 4
        assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 and r["ms_per_step"] > 0
        assert r["peak_mem_bytes"] > 0


@pytest.mark.parametrize("value", ["0", "x", "1,,0"])
def test_bench_rejects_bad_batch(value):
    result = invoke("bench", "--batch", value)
    assert result.exit_code == 2
    assert "Invalid value" in result.output and "--batch" in result.output


def test_set_threads_caps_torch_and_zero_keeps_the_default():
    import torch

    from gemmacli.device import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(0)
        assert torch.get_num_threads() == before
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
