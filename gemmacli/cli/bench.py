"""gemmacli bench: speed in this process, or of any OpenAI-compatible server under load (--url)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from enum import StrEnum
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from gemmacli.cli.app import app
from gemmacli.cli.common import load_runner
from gemmacli.cli.options import DeviceOpt, DType, DTypeOpt, JsonOpt, QuietOpt, model_opt
from gemmacli.cli.ui import emit, error, stderr, stdout
from gemmacli.models.defaults import DEFAULT_CHAT_MODEL


def _batches(value: str) -> tuple[int, ...]:
    from gemmacli.bench import parse_batches

    try:
        return parse_batches(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _concurrency(value: str) -> tuple[int, ...]:
    return _parsed(value, int, "1,8,32")


def _rates(value: str | None) -> tuple[float, ...]:
    return () if value is None else _parsed(value, float, "0.5,2,8")


def _parsed(value: str, kind: type, example: str) -> tuple:
    from gemmacli.loadgen import parse_levels

    try:
        return parse_levels(value, kind, example)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _server_url(value: str | None) -> str | None:
    """The base URL as users paste it: with or without a trailing /v1 (the openai client's base_url)."""
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise typer.BadParameter("give a URL like http://127.0.0.1:8000")
    return value.rstrip("/").removesuffix("/v1").rstrip("/")


class Endpoint(StrEnum):
    chat = "chat"
    completions = "completions"


HTTP = "Over HTTP (--url)"
LOCAL = "In process (without --url)"
# Options of one mode that make no sense in the other: given anyway on the command line, they are an error.
_HTTP_ONLY = ("concurrency", "rate", "requests", "endpoint", "temperature", "warmup", "api_key", "timeout")
_LOCAL_ONLY = ("batch", "repeat", "device", "dtype", "threads")


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli bench\n
  gemmacli bench -m gemma-3-1b-it --batch 1,4,8 --max-tokens 128 --repeat 3\n
  gemmacli bench --device cpu --dtype bfloat16 --prompt-tokens 512 --json > bench.json\n
  gemmacli bench --url http://127.0.0.1:8000 -c 1,8,32   [dim]# any OpenAI-compatible server[/]\n
  gemmacli bench --url http://127.0.0.1:8080/v1 -m gemma-3-4b --rate 2 --requests 100 --concurrency 16"""
)
def bench(
    ctx: typer.Context,
    model: Annotated[str, model_opt(DEFAULT_CHAT_MODEL, "chat")] = DEFAULT_CHAT_MODEL,
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate per sequence (fewer on EOS).", min=1)] = 64,
    prompt_tokens: Annotated[int, typer.Option(help="About this many prompt tokens per sequence.", min=2)] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the generated prompts (and of --rate arrivals).")] = 0,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    url: Annotated[
        str | None,
        typer.Option(
            help="Load this OpenAI-compatible server instead (ours, vLLM, llama.cpp, transformers serve); "
            "without -m, its first chat model.",
            callback=_server_url,
            rich_help_panel=HTTP,
        ),
    ] = None,
    concurrency: Annotated[
        str,
        typer.Option(
            "--concurrency",
            "-c",
            help="Closed loop: requests in flight, one level per value.",
            callback=_concurrency,
            rich_help_panel=HTTP,
        ),
    ] = "1,8,32",
    rate: Annotated[
        str | None,
        typer.Option(
            help="Open loop instead: Poisson arrivals at these requests/s; an explicit --concurrency "
            "caps the requests in flight.",
            callback=_rates,
            rich_help_panel=HTTP,
            show_default=False,
        ),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            help="Requests per level (default: max(4 × concurrency, 16); with --rate, 10 s of arrivals, at least 16).",
            min=1,
            rich_help_panel=HTTP,
            show_default=False,
        ),
    ] = None,
    endpoint: Annotated[
        Endpoint, typer.Option(help="chat: /v1/chat/completions; completions: /v1/completions.", rich_help_panel=HTTP)
    ] = Endpoint.chat,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature (0: greedy).", min=0, rich_help_panel=HTTP)
    ] = 0.0,
    warmup: Annotated[int, typer.Option(help="Requests sent before measuring.", min=0, rich_help_panel=HTTP)] = 1,
    api_key: Annotated[
        str | None, typer.Option(help="Bearer key the server expects.", rich_help_panel=HTTP, show_default=False)
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.", min=1, rich_help_panel=HTTP)] = 600.0,
    batch: Annotated[
        str,
        typer.Option(
            "--batch", "-b", help="Batch sizes to measure, comma-separated.", callback=_batches, rich_help_panel=LOCAL
        ),
    ] = "1,4,8",
    repeat: Annotated[
        int, typer.Option(help="Measured runs per batch size (after one warm-up).", min=1, rich_help_panel=LOCAL)
    ] = 1,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.auto,
    threads: Annotated[
        int | None,
        typer.Option(
            help=r"CPU threads for torch \[default: one per core].", min=1, rich_help_panel=LOCAL, show_default=False
        ),
    ] = None,
) -> None:
    """Measure speed: in this process (load time, prefill and decode tokens/s, peak memory per batch size),
    or with --url, a running server under load (TTFT, TPOT, ITL, throughput per concurrency or rate).

    Prompts are seeded, so runs compare. In process: greedy decoding over the decode loop `gemmacli chat` uses.
    Over HTTP: streamed requests, measured as vLLM's benchmark_serving does; exit 1 if any request failed.
    """
    _check_mode(ctx, remote=url is not None)
    if url is not None:
        model_given = ctx.get_parameter_source("model").name != "DEFAULT"  # typer vendors click: compare by name
        from gemmacli.loadgen import LoadConfig

        config = LoadConfig(
            url=url,
            model=model if model_given else None,
            endpoint=endpoint.value,
            concurrency=tuple(concurrency),
            rates=tuple(rate),
            max_in_flight=max(concurrency) if rate and _given(ctx, "concurrency") else None,
            requests=requests,
            max_tokens=max_tokens,
            prompt_tokens=prompt_tokens,
            temperature=temperature,
            seed=seed,
            warmup=warmup,
            timeout=timeout,
            api_key=api_key,
        )
        return _bench_server(config, json_out=json_out, quiet=quiet)
    from gemmacli.bench import BenchConfig, BenchReport, InProcessSource, run_bench
    from gemmacli.device import set_threads

    set_threads(threads or 0)
    config = BenchConfig(tuple(batch), max_tokens, prompt_tokens, repeat, seed)
    source, load_s = InProcessSource.load(lambda: load_runner(model, "chat", device=device, dtype=dtype, quiet=quiet))
    with _bench_progress(len(config.batches) * repeat, quiet=quiet) as advance:
        results = run_bench(source, config, advance)
    report = BenchReport(source.model, source.device, source.dtype, load_s, source.peak_mem_kind, results)
    if json_out:
        emit(json.dumps({**report.to_json(), "config": asdict(config)}))
    else:
        stdout.print(_bench_table(report, config))


def _given(ctx: typer.Context, name: str) -> bool:
    return ctx.get_parameter_source(name).name == "COMMANDLINE"


def _check_mode(ctx: typer.Context, *, remote: bool) -> None:
    for name in _LOCAL_ONLY if remote else _HTTP_ONLY:
        if _given(ctx, name):
            where = "in process (without --url)" if remote else "with --url"
            raise typer.BadParameter(f"only applies {where}", ctx, param_hint="--" + name.replace("_", "-"))


def _bench_server(config, *, json_out: bool, quiet: bool) -> None:
    """Load the server, print the report, and exit 1 when any request failed (after printing it)."""
    from gemmacli.loadgen import run_load

    with _load_progress(quiet=quiet) as on_progress:
        report = run_load(config, on_progress)
    if json_out:
        emit(json.dumps(report.to_json()))
    else:
        stdout.print(_load_table(report))
    if report.failed:
        total = sum(r.requests for r in report.results)
        error(f"{report.failed} of {total} requests failed; the first: {report.first_error}")
        raise typer.Exit(1)


@contextlib.contextmanager
def _load_progress(*, quiet: bool) -> Iterator[Callable]:
    """One bar per level on stderr, counting its finished requests (after a spinner-like warm-up bar)."""
    if quiet:
        yield lambda level, done: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks = {}
    with Progress(*columns, console=stderr, transient=True) as progress:
        warmup = progress.add_task("warming up…", total=None)  # until the first level starts

        def on_progress(level, done: int) -> None:
            if level not in tasks:
                progress.update(warmup, visible=False)
                tasks[level] = progress.add_task(_level_name(level), total=level.requests)
            progress.update(tasks[level], completed=done)

        yield on_progress


def _level_name(level) -> str:
    if level.rate is None:
        return f"concurrency {level.concurrency}"
    return f"{level.rate:g} req/s" + (f", ≤ {level.concurrency} in flight" if level.concurrency else "")


@contextlib.contextmanager
def _bench_progress(total: int, *, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A bar on stderr with one step per measured run; the warm-up runs before the first step."""
    if quiet:
        yield lambda _: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("warm-up…", total=total)
        yield lambda done: progress.update(task, advance=1, description=f"{done} done")


def _bench_table(report, config) -> Table:
    load = f", loaded in {report.load_s:.1f} s" if report.load_s is not None else ""
    table = Table(title=f"{report.model} on {report.device} ({report.dtype}){load}", title_justify="left")
    for name in ("batch", "prompt tok", "gen tok", "prefill tok/s", "decode tok/s", "ms/step", "peak mem"):
        table.add_column(name, justify="right")
    short = False
    for r in report.results:
        ended_early = r.gen_tokens < r.batch * config.max_tokens
        short |= ended_early
        gen = f"{r.gen_tokens}{'*' if ended_early else ''}"
        table.add_row(
            str(r.batch),
            str(r.prompt_tokens),
            gen,
            f"{r.prefill_tok_s:,.0f}",
            _num(r.decode_tok_s, "{:,.1f}"),
            _num(r.ms_per_step, "{:.1f}"),
            _bytes(r.peak_mem_bytes),
        )
    notes = [f"tokens are totals across the batch, per run ({config.repeat} run(s) after a warm-up)"]
    if short:
        notes.append(f"* fewer than batch × {config.max_tokens}: some sequences stopped at EOS")
    notes.append(f"peak mem: {report.peak_mem_kind}")
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1024**3:.2f} GiB" if value >= 1024**3 else f"{value / 1024**2:.0f} MiB"


def _load_table(report) -> Table:
    config = report.config
    title = (
        f"{report.model} at {report.url} ({report.endpoint}, max {config.max_tokens} tokens, "
        f"prompts ~{config.prompt_tokens} tokens, temperature {config.temperature:g})"
    )
    # Twelve columns: no vertical rules and one space between them, so they fit in 80 columns.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    open_loop = bool(config.rates)
    heads = ["rate\nreq/s", "peak\nflight"] if open_loop else ["concur-\nrency"]
    heads += ["reqs", "failed", "req/s", "out\ntok/s"]
    heads += ["TTFT\np50", "TTFT\np90", "TTFT\np99", "TPOT\np50", "ITL\np50", "ITL\np99", "e2e s\np50"]
    for head in heads:
        table.add_column(head, justify="right")
    for r in report.results:
        first = [f"{r.rate:g}", str(r.peak_in_flight)] if open_loop else [str(r.concurrency)]
        failed = f"[red]{r.failed}[/]" if r.failed else "0"
        counts = [str(r.requests), failed, f"{r.request_throughput:.2f}", f"{r.output_throughput:,.1f}"]
        latencies = [
            *(_stat(r.ttft_ms, p, "{:,.0f}") for p in ("p50", "p90", "p99")),
            _stat(r.tpot_ms, "p50", "{:.1f}"),
            _stat(r.itl_ms, "p50", "{:.1f}"),
            _stat(r.itl_ms, "p99", "{:.1f}"),
            _stat(r.e2e_ms, "p50", "{:.2f}", 1000),
        ]
        table.add_row(*first, *counts, *latencies)
    table.caption = "\n".join(_load_notes(report))
    table.caption_justify = "left"
    return table


def _load_notes(report) -> list[str]:
    results = [r for r in report.results if r.completed]
    notes = ["TTFT (to the first content chunk), TPOT = (e2e − TTFT) / (tokens − 1) and ITL (between chunks) in ms"]
    if results:
        tokens = sum(r.output_tokens for r in results) / sum(r.completed for r in results)
        counted = {r.tokens_counted_by for r in results}
        by = {"usage": "the server's usage", "chunks": "content chunks: the server sent no usage"}.get(
            counted.pop() if len(counted) == 1 else "mixed", "usage where sent, else content chunks"
        )
        prompts = [r.prompt_tokens_mean for r in results if r.prompt_tokens_mean is not None]
        prompt = f", {sum(prompts) / len(prompts):.0f} prompt tokens" if prompts else ""
        notes.append(f"per request: {tokens:.1f} output tokens (from {by}){prompt}")
    if report.failed:
        notes.append(f"[red]failed[/]: {escape(report.first_error or '')}")
    return notes


def _stat(stats, name: str, fmt: str, scale: float = 1.0) -> str:
    return "–" if stats is None else fmt.format(getattr(stats, name) / scale)
