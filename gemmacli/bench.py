"""`gemmacli bench`: prefill and decode throughput of a chat model, per batch size; and the report types
of `gemmacli bench --url`, which loads a server over HTTP (gemmacli.loadgen drives it).

Measurement and rendering are apart: `run_bench` drives a `LoadSource` and returns dataclasses, the CLI
draws them. A source runs one batch of prompts and says how long the first step and the rest took;
`InProcessSource` times the chat runner's decoder (the one the CLI and the server's engine drive). A server is
measured per request instead (TTFT, TPOT, ITL under a given concurrency or arrival rate, as vLLM's
benchmark_serving does), so the HTTP load generator has its own results below, built from the same prompts.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from gemmacli.types import GenParams

if TYPE_CHECKING:
    from gemmacli.runners.chat import ChatRunner

# Common English words that are each one token in Gemma's vocabulary (with their leading space),
# so n words make about n prompt tokens; nonsense order is fine for timing.
# fmt: off
WORDS = (
    "time", "people", "year", "way", "day", "thing", "man", "world", "life", "hand", "part", "child", "eye",
    "woman", "place", "work", "week", "case", "point", "company", "number", "group", "problem", "fact",
    "water", "room", "mother", "area", "money", "story", "month", "book", "word", "business", "side", "kind",
    "head", "house", "friend", "father", "power", "hour", "game", "line", "member", "law", "car", "city",
    "name", "team", "minute", "idea", "body", "river", "light", "garden", "table", "window", "market",
    "music", "paper", "tree", "street", "road", "voice", "dog", "bird", "ship", "stone",
)
# fmt: on
WARMUP_TOKENS = 4  # enough to run the prefill and a few decode steps once before measuring


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1,)
    max_tokens: int = 64
    prompt_tokens: int = 128  # per sequence, approximate
    repeat: int = 1
    seed: int = 0


@dataclass(frozen=True)
class Run:
    """One batch run, as a source measured it. Token counts are totals across the batch."""

    prompt_tokens: int
    prefill_s: float  # from the call to the first step's tokens (tokenize + prefill forward + first sample)
    first_tokens: int  # tokens of that first step
    decode_s: float  # from the first step to the last one
    decode_tokens: int  # tokens of the remaining steps (sequences stop at EOS: only real tokens count)
    decode_steps: int

    @property
    def gen_tokens(self) -> int:
        return self.first_tokens + self.decode_tokens


@dataclass(frozen=True)
class BenchResult:
    """One batch size, over `repeat` runs. Token counts are per run, totals across the batch."""

    batch: int
    prompt_tokens: int
    gen_tokens: int
    prefill_tok_s: float
    decode_tok_s: float | None  # None when no run had a decode step (max_tokens 1, or EOS at once)
    ms_per_step: float | None
    peak_mem_bytes: int | None  # None when the source cannot tell (a remote server)
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class BenchReport:
    model: str
    device: str
    dtype: str
    load_s: float | None  # None when the model was already loaded elsewhere (a server)
    peak_mem_kind: str  # what peak_mem_bytes measures: "cuda max allocated", "process peak RSS"...
    results: tuple[BenchResult, ...]

    def to_json(self) -> dict:
        return asdict(self)


class LoadSource(Protocol):
    """Where the load goes: a model in this process now, a server over HTTP later."""

    model: str
    device: str
    dtype: str
    peak_mem_kind: str

    def run(self, prompts: Sequence[str], max_tokens: int) -> Run: ...

    def reset_peak_memory(self) -> None: ...

    def peak_memory(self) -> int | None: ...


# -- pure helpers


def build_prompt(words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(words, 1)))


def build_prompts(batch: int, prompt_tokens: int, seed: int = 0) -> list[str]:
    """`batch` different prompts of about `prompt_tokens` tokens; the same for the same arguments.

    Prompt i is the same whatever the batch size, so batches differ only in how many run together.
    """
    rng = random.Random(seed)
    return [build_prompt(prompt_tokens - 1, rng) for _ in range(batch)]  # -1: the tokenizer adds <bos>


def run_from_steps(prompt_tokens: int, start: float, steps: Sequence[tuple[float, int]]) -> Run:
    """A Run from the start time and (time, tokens) of each step: the first step ends the prefill."""
    if not steps:
        return Run(prompt_tokens, 0.0, 0, 0.0, 0, 0)
    first_time, first_tokens = steps[0]
    last_time = steps[-1][0]
    decode_tokens = sum(tokens for _, tokens in steps[1:])
    return Run(prompt_tokens, first_time - start, first_tokens, last_time - first_time, decode_tokens, len(steps) - 1)


def summarize(batch: int, runs: Sequence[Run], peak_mem_bytes: int | None = None) -> BenchResult:
    """Throughputs over all runs as total tokens / total time, so a slow run weighs as much as it took."""
    prefill_s = sum(r.prefill_s for r in runs)
    decode_s = sum(r.decode_s for r in runs)
    steps = sum(r.decode_steps for r in runs)
    decode_tokens = sum(r.decode_tokens for r in runs)
    return BenchResult(
        batch=batch,
        prompt_tokens=round(sum(r.prompt_tokens for r in runs) / len(runs)),
        gen_tokens=round(sum(r.gen_tokens for r in runs) / len(runs)),
        prefill_tok_s=sum(r.prompt_tokens for r in runs) / prefill_s if prefill_s > 0 else 0.0,
        decode_tok_s=decode_tokens / decode_s if decode_s > 0 and decode_tokens else None,
        ms_per_step=1000 * decode_s / steps if steps else None,
        peak_mem_bytes=peak_mem_bytes,
        runs=tuple(runs),
    )


def run_bench(
    source: LoadSource, config: BenchConfig, on_run: Callable[[str], None] = lambda _: None
) -> tuple[BenchResult, ...]:
    """One warm-up run, then `repeat` measured runs per batch size; `on_run` hears of each one done."""
    warmup = build_prompts(config.batches[0], config.prompt_tokens, config.seed)
    source.run(warmup, min(WARMUP_TOKENS, config.max_tokens))
    results = []
    for batch in config.batches:
        prompts = build_prompts(batch, config.prompt_tokens, config.seed)
        source.reset_peak_memory()
        runs = []
        for i in range(config.repeat):
            runs.append(source.run(prompts, config.max_tokens))
            on_run(f"batch {batch}, run {i + 1}/{config.repeat}")
        results.append(summarize(batch, runs, source.peak_memory()))
    return tuple(results)


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8); ValueError with a readable message otherwise."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("give batch sizes like 1,4,8")
    sizes = []
    for part in parts:
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{part!r} is not a batch size: use positive integers like 1,4,8")
        sizes.append(int(part))
    return tuple(sizes)


# -- serving metrics: one RequestResult per HTTP request, summarized per Level (vLLM's definitions)


@dataclass(frozen=True)
class Level:
    """One row of the report: a closed loop at `concurrency`, or Poisson arrivals at `rate` requests/s."""

    concurrency: int | None  # requests in flight; for an open loop its cap (None: unbounded)
    rate: float | None  # None: closed loop
    requests: int


@dataclass(frozen=True)
class RequestResult:
    """One request, timed from sending it. Seconds throughout."""

    ok: bool
    e2e: float
    ttft: float | None = None
    itl: tuple[float, ...] = ()
    output_tokens: int = 0
    prompt_tokens: int | None = None  # from usage, when the server sent it
    tokens_from_usage: bool = False
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.output_tokens < 2:
            return None  # one token has no "per output token" time after the first
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Stats:
    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float], scale: float = 1.0) -> Stats | None:
        if not values:
            return None
        ordered = sorted(v * scale for v in values)
        return cls(sum(ordered) / len(ordered), *(percentile(ordered, p) for p in (50, 90, 99)))


@dataclass(frozen=True)
class LevelResult:
    concurrency: int | None
    rate: float | None
    requests: int
    completed: int
    failed: int
    first_error: str | None
    duration_s: float  # wall time from the first request sent to the last one finished
    request_throughput: float  # completed requests / duration_s
    output_throughput: float  # output tokens of completed requests / duration_s
    output_tokens: int
    tokens_counted_by: str  # "usage", "chunks" or "mixed" (see the module docstring)
    prompt_tokens_mean: float | None  # as the server counted them, template included
    peak_in_flight: int
    ttft_ms: Stats | None
    tpot_ms: Stats | None
    itl_ms: Stats | None
    e2e_ms: Stats | None


def percentile(ordered: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks: numpy.percentile's default, which vLLM reports."""
    k = (len(ordered) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize_level(level: Level, results: Sequence[RequestResult], duration: float, peak: int) -> LevelResult:
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    tokens = sum(r.output_tokens for r in done)
    by_usage = {r.tokens_from_usage for r in done}
    counted_by = "mixed" if len(by_usage) > 1 else "usage" if by_usage == {True} else "chunks"
    prompts = [r.prompt_tokens for r in done if r.prompt_tokens is not None]
    return LevelResult(
        concurrency=level.concurrency,
        rate=level.rate,
        requests=len(results),
        completed=len(done),
        failed=len(failed),
        first_error=failed[0].error if failed else None,
        duration_s=duration,
        request_throughput=len(done) / duration if duration > 0 else 0.0,
        output_throughput=tokens / duration if duration > 0 else 0.0,
        output_tokens=tokens,
        tokens_counted_by=counted_by,
        prompt_tokens_mean=sum(prompts) / len(prompts) if prompts else None,
        peak_in_flight=peak,
        ttft_ms=Stats.of([r.ttft for r in done if r.ttft is not None], 1000),
        tpot_ms=Stats.of([t for r in done if (t := r.tpot) is not None], 1000),
        itl_ms=Stats.of([gap for r in done for gap in r.itl], 1000),
        e2e_ms=Stats.of([r.e2e for r in done], 1000),
    )


# -- the in-process source


class InProcessSource:
    """Times the runner's decoder in this process: the same decoder `gemmacli chat` and the server drive.
    Its prefill of every prompt first (each sequence's first token), then each decode step."""

    def __init__(self, runner: ChatRunner):
        self.runner = runner
        self.model = runner.name
        self.device = runner.placement.device
        self.dtype = runner.placement.dtype_name
        self.cuda = self.device.startswith("cuda")
        kinds = {"cuda": "cuda max allocated", "mps": "mps driver allocated (now, not peak)"}
        self.peak_mem_kind = kinds.get(self.device.partition(":")[0], "process peak RSS")

    @classmethod
    def load(cls, load: Callable[[], ChatRunner]) -> tuple[InProcessSource, float]:
        """The source and the seconds `load` took."""
        started = time.perf_counter()
        runner = load()
        return cls(runner), time.perf_counter() - started

    def run(self, prompts: Sequence[str], max_tokens: int) -> Run:
        runner, decoder = self.runner, self.runner.decoder
        encoded = [runner.encode_text(p) for p in prompts]
        params = GenParams(max_tokens=max_tokens, temperature=0.0)
        self._sync()
        start, stamps = time.perf_counter(), []
        seqs = [decoder.insert(prompt, params) for prompt in encoded]
        try:
            step = decoder.prefill  # the prompts alone first, then decode steps
            while not all(seq.done for seq in seqs):
                before = sum(len(seq.tokens) for seq in seqs)
                step()
                self._sync()
                stamps.append((time.perf_counter(), sum(len(seq.tokens) for seq in seqs) - before))
                step = decoder.step
        finally:
            for seq in seqs:
                decoder.cancel(seq)
            decoder.step()  # reports the ends; no forward pass, as no sequence is left
        return run_from_steps(sum(p.length for p in encoded), start, stamps)

    def reset_peak_memory(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> int | None:
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated(self.device))
        if self.device == "mps":  # unified memory: the RSS would not show it, and MPS keeps no peak
            import torch

            return int(torch.mps.driver_allocated_memory())
        return peak_rss()

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)


def peak_rss() -> int | None:
    """The process's peak resident memory so far (it cannot be reset, so it only grows between batches)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
