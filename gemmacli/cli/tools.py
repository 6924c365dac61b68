"""smoke, bench and serve: checking the machine, measuring speed, serving over HTTP."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gemmacli.cli.app import app
from gemmacli.cli.common import load_runner
from gemmacli.cli.options import DEFAULT_CHAT_MODEL, DeviceOpt, DType, DTypeOpt, JsonOpt, QuietOpt, model_opt
from gemmacli.cli.ui import emit, stderr, stdout
from gemmacli.errors import GemmacliError


@app.command(epilog="[b]Example[/]\n\n  gemmacli serve -m gemma-3-270m")
def serve(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to serve (repeatable).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """OpenAI-compatible HTTP server. [yellow]Not available yet[/]: it is the next milestone."""
    raise GemmacliError("`gemmacli serve` is not implemented yet; use chat, embed and transcribe meanwhile")


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli smoke                      [dim]# the GPU; exit 1 when there is none[/]\n
  gemmacli smoke --device cpu         [dim]# the CPU path, e.g. in CI[/]\n
  gemmacli smoke --device cuda:1 --json\n
  gemmacli smoke -m gemma-3-1b-it"""
)
def smoke(
    device: DeviceOpt = "auto",
    model: Annotated[str, model_opt(DEFAULT_CHAT_MODEL, "chat")] = DEFAULT_CHAT_MODEL,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check the GPU: torch build, devices and memory, bf16, a matmul against the CPU, and a real generation.

    Exit 0 only if every check passes; `--device auto` without a GPU fails (use `--device cpu` to check the CPU).
    """
    from gemmacli.smoke import run_smoke

    def load(name: str, where: str):
        return load_runner(name, "chat", device=where, dtype="auto", quiet=quiet)

    report = run_smoke(device, model, load)
    if json_out:
        emit(json.dumps(report.to_json()))
    else:
        stdout.print(_smoke_table(report))
    if not report.ok:
        failed = report.failed
        more = f" (and {len(failed) - 1} more failed checks)" if len(failed) > 1 else ""
        stderr.print(f"[red]error:[/] {failed[0].name}: {failed[0].detail}{more}", highlight=False)
        raise typer.Exit(1)


def _smoke_table(report) -> Table:
    table = Table(title=f"gemmacli smoke ({report.device or report.requested})", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    shown = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skip[/]"}
    for check in report.checks:
        table.add_row(check.name, shown[check.status], escape(check.detail))
    return table


def _batches(value: str) -> tuple[int, ...]:
    from gemmacli.bench import parse_batches

    try:
        return parse_batches(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli bench\n
  gemmacli bench -m gemma-3-1b-it --batch 1,4,8 --max-tokens 128 --repeat 3\n
  gemmacli bench --device cpu --dtype bfloat16 --prompt-tokens 512 --json > bench.json"""
)
def bench(
    model: Annotated[str, model_opt(DEFAULT_CHAT_MODEL, "chat")] = DEFAULT_CHAT_MODEL,
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate per sequence (fewer on EOS).", min=1)] = 64,
    prompt_tokens: Annotated[int, typer.Option(help="About this many prompt tokens per sequence.", min=2)] = 128,
    batch: Annotated[
        str, typer.Option("--batch", "-b", help="Batch sizes to measure, comma-separated.", callback=_batches)
    ] = "1,4,8",
    repeat: Annotated[int, typer.Option(help="Measured runs per batch size (after one warm-up).", min=1)] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the generated prompts.")] = 0,
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.auto,
    quiet: QuietOpt = False,
) -> None:
    """Measure load time, prefill and decode tokens/s and peak memory per batch size, in this process.

    Greedy decoding over the same decode loop `gemmacli chat` uses; prompts are seeded, so runs compare.
    """
    from gemmacli.bench import BenchConfig, BenchReport, InProcessSource, run_bench

    config = BenchConfig(tuple(batch), max_tokens, prompt_tokens, repeat, seed)
    source, load_s = InProcessSource.load(lambda: load_runner(model, "chat", device=device, dtype=dtype, quiet=quiet))
    with _bench_progress(len(config.batches) * repeat, quiet=quiet) as advance:
        results = run_bench(source, config, advance)
    report = BenchReport(source.model, source.device, source.dtype, load_s, source.peak_mem_kind, results)
    if json_out:
        emit(json.dumps({**report.to_json(), "config": asdict(config)}))
    else:
        stdout.print(_bench_table(report, config))


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
            str(r.batch), str(r.prompt_tokens), gen, f"{r.prefill_tok_s:,.0f}", _num(r.decode_tok_s, "{:,.1f}"),
            _num(r.ms_per_step, "{:.1f}"), _bytes(r.peak_mem_bytes),
        )  # fmt: skip
    notes = [f"tokens are totals across the batch, per run ({config.repeat} run(s) after a warm-up)"]
    if short:
        notes.append(f"* fewer than batch × {config.max_tokens}: some sequences stopped at EOS")
    notes.append(f"peak mem: {report.peak_mem_kind}")
    table.caption, table.caption_justify = "\n".join(notes), "left"
    return table


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1024**3:.2f} GiB" if value >= 1024**3 else f"{value / 1024**2:.0f} MiB"
