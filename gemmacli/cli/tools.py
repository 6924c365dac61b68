"""smoke, bench and serve: checking the machine, measuring speed, serving over HTTP."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gemmacli.cli.app import app
from gemmacli.cli.common import load_runner, quiet_libraries
from gemmacli.cli.options import DEFAULT_CHAT_MODEL, DeviceOpt, DType, DTypeOpt, JsonOpt, QuietOpt, model_opt
from gemmacli.cli.ui import emit, error, reporting, stderr, stdout


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli serve                                   [dim]# google/gemma-3-12b-it on 127.0.0.1:8000[/]\n
  gemmacli serve -m gemma-3-270m -m all-minilm-l6-v2 -m whisper-tiny.en\n
  gemmacli serve -m gemma-3-4b-it --host 0.0.0.0 --api-key $KEY --max-queue 16\n
  GEMMACLI_MODELS=gemma-3-270m GEMMACLI_PORT=9000 gemmacli serve   [dim]# or put them in .env[/]"""
)
def serve(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to serve (repeatable).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [default: 8000].", min=1, max=65535)] = None,
    device: Annotated[str | None, typer.Option("--device", "-d", help="auto, cpu, cuda, cuda:N or mps.")] = None,
    dtype: Annotated[DType | None, typer.Option(help="Weights dtype [default: auto].")] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Accepted bearer key (repeatable).")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Requests running at once [default: 1].", min=1)] = None,
    max_queue: Annotated[int | None, typer.Option(help="Requests waiting; more get 429 [default: 64].", min=0)] = None,
    request_timeout: Annotated[float | None, typer.Option(help="Seconds per request [default: 600].", min=1)] = None,
    allow_remote_media: Annotated[
        bool | None, typer.Option("--allow-remote-media/--no-remote-media", help="Accept http(s) image URLs.")
    ] = None,
    warmup: Annotated[bool | None, typer.Option("--warmup/--no-warmup", help="Run each model once first.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    env_file: Annotated[Path, typer.Option(help="KEY=VALUE file of GEMMACLI_* settings.")] = Path(".env"),
    quiet: QuietOpt = False,
) -> None:
    """OpenAI-compatible HTTP server: chat, completions, embeddings, audio, models, health, metrics.

    Every flag can also be set as a GEMMACLI_* environment variable (GEMMACLI_MODELS=a,b, GEMMACLI_API_KEY=k1,k2)
    or in a .env file; flags win over the environment, which wins over the file.
    """
    from gemmacli.server.launch import serve as run
    from gemmacli.server.settings import ServerSettings

    overrides = {
        "models": tuple(model or ()), "host": host, "port": port, "device": device,
        "dtype": dtype.value if dtype else None, "api_keys": tuple(api_key or ()),
        "max_concurrency": max_concurrency, "max_queue": max_queue, "request_timeout": request_timeout,
        "allow_remote_media": allow_remote_media, "warmup": warmup, "log_level": log_level,
    }  # fmt: skip
    settings = ServerSettings.load(overrides, dotenv=env_file)
    quiet_libraries()
    with reporting("preparing models", quiet=quiet) as report:
        run(settings, report)


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
        error(f"{failed[0].name}: {failed[0].detail}{more}")
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
