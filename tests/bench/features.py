"""What two request features cost on this machine: constrained decoding, and n choices from one prompt.

One run starts `gemmacli serve` on the gemma-3-270m folder and measures pairs of workloads against it, each
pair the same seeded requests with and without the feature, closed loop, not streamed:

- json_schema: `response_format` json_schema (an object holding an array of short strings, with at least
  max_tokens items, so every constrained sequence runs to max_tokens as the plain ones do) against no format,
  at 1 and 8 clients; goal: constrained output tok/s ≥ 0.90 x unconstrained.
- tools: `tools` + `tool_choice: "required"` against the same tools with "auto" (the same prompt, the tools
  rendered into it; only the grammar differs); goal as above.
- n=4: one prompt, 4 choices per request, against n=1, 1 client; goal: ≥ 2.5 x the tok/s of n=1.

Output tokens come from usage.completion_tokens (summed over the choices); tok/s is a side's tokens over the
time it took. The two sides of a pair take turns, a slice of the requests each, so a drift in the machine's
speed falls on both.

    python tests/bench/features.py                                   # bf16, 64 output tokens
    python tests/bench/features.py --requests 8 --max-tokens 64      # a quick look
    python tests/bench/features.py --dtype float32 --skip tools --json features.json

Ratios only mean something from one quiet run: nothing else should load the machine meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from compare import console, demo_folder, gemmacli_command, server
from rich.console import Console
from rich.table import Table

from gemmacli.bench import build_prompts
from gemmacli.device import cpu_has_native_bf16

PROMPT = "List words from this text as JSON: "  # the same prompt on both sides; the words come from build_prompts


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: tuple[int, ...]
    goal: float  # feature tok/s over baseline tok/s


SCENARIOS = (
    Scenario("json_schema", (1, 8), 0.90),
    Scenario("tools", (1, 8), 0.90),
    Scenario("n=4", (1,), 2.5),
)


@dataclass(frozen=True)
class Side:
    """One side of a pair, over all its turns."""

    requests: int
    tokens: int  # usage.completion_tokens, summed
    seconds: float
    finish: dict[str, int]  # finish reason -> choices

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_request(self) -> float:
        return self.tokens / self.requests if self.requests else 0.0

    def __add__(self, other: Side) -> Side:
        finish = {k: self.finish.get(k, 0) + other.finish.get(k, 0) for k in {*self.finish, *other.finish}}
        return Side(self.requests + other.requests, self.tokens + other.tokens, self.seconds + other.seconds, finish)


NO_SIDE = Side(0, 0, 0.0, {})


@dataclass(frozen=True)
class Pair:
    scenario: str
    clients: int
    goal: float
    baseline: Side
    feature: Side
    turns: int

    @property
    def ratio(self) -> float:
        return self.feature.tok_s / self.baseline.tok_s if self.baseline.tok_s else 0.0

    def to_json(self) -> dict:
        sides = {name: {**asdict(side), "tok_s": side.tok_s} for name, side in self.sides()}
        return {"scenario": self.scenario, "clients": self.clients, "goal": self.goal, "ratio": self.ratio, **sides}

    def sides(self) -> tuple[tuple[str, Side], ...]:
        return ("baseline", self.baseline), ("feature", self.feature)


def main() -> int:
    args = parse_args()
    folder = args.model_dir or demo_folder("gemma-3-270m")
    scenarios = [s for s in SCENARIOS if s.name not in args.skip]
    clients = max(c for s in scenarios for c in s.clients)
    with server(gemmacli_command([folder], args.dtype, clients), "gemmacli serve") as url:
        pairs = asyncio.run(measure_all(url, scenarios, args))
    out = Console(width=None if sys.stdout.isatty() else 130)  # redirected to a file: tables stay readable
    out.print(table(pairs, args))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(args, pairs), indent=1))
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, help="chat model folder (default: the gemma-3-270m demo model)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16", "auto"))
    p.add_argument("--max-tokens", type=int, default=64, help="the same on both sides")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0, help="seeded; both sides sample alike")
    p.add_argument("--requests", type=int, help="per side and level (default: max(16, 4 x clients))")
    p.add_argument("--turns", type=int, default=2, help="turns each side takes per level")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[], help="scenarios to leave out: tools,n=4")
    p.add_argument("--json", help="also write every number to this file")
    return p.parse_args()


# -- requests


def feature_bodies(scenario: str, max_tokens: int) -> tuple[dict, dict]:
    """What the baseline's and the feature's requests add to the common body."""
    # At least max_tokens items of at least one character: the JSON cannot close before max_tokens, so both
    # sides decode as many tokens per request and neither pays more prefills per output token.
    items = {"type": "string", "minLength": 1, "maxLength": 16}
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": items, "minItems": max_tokens}},
        "required": ["items"],
        "additionalProperties": False,
    }
    if scenario == "json_schema":
        return {}, {"response_format": {"type": "json_schema", "json_schema": {"name": "words", "schema": schema}}}
    if scenario == "tools":
        record = {"name": "record", "description": "Record words", "parameters": schema}
        tools = [{"type": "function", "function": record}]
        return {"tools": tools, "tool_choice": "auto"}, {"tools": tools, "tool_choice": "required"}
    if scenario == "n=4":
        return {"n": 1}, {"n": 4}
    raise ValueError(f"unknown scenario {scenario!r}")


def bodies(model: str, prompts: list[str], first_seed: int, extra: dict, args: argparse.Namespace) -> list[dict]:
    """One request per prompt, each with a seed of its own (the same on both sides of a pair)."""
    common = {"model": model, "max_tokens": args.max_tokens, "temperature": args.temperature}
    return [
        {**common, "messages": [{"role": "user", "content": PROMPT + prompt}], "seed": first_seed + i, **extra}
        for i, prompt in enumerate(prompts)
    ]


async def closed_loop(client: httpx.AsyncClient, requests: list[dict], clients: int) -> Side:
    """`clients` workers, each posting its next request as soon as its last one is answered."""
    queue = iter(requests)  # shared: no await between a worker's `next` and its post, so no races
    tokens, finish = 0, {}

    async def worker() -> None:
        nonlocal tokens
        for body in queue:
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                raise SystemExit(f"error: HTTP {response.status_code}: {response.text[:300]}")
            answer = response.json()
            tokens += answer["usage"]["completion_tokens"]
            for choice in answer["choices"]:
                finish[choice["finish_reason"]] = finish.get(choice["finish_reason"], 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(clients, len(requests)))))
    return Side(len(requests), tokens, time.perf_counter() - start, finish)


# -- measuring


async def measure_all(url: str, scenarios: list[Scenario], args: argparse.Namespace) -> list[Pair]:
    clients = max(c for s in scenarios for c in s.clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(1800.0, connect=30.0)) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        levels = [(s, c) for s in scenarios for c in s.clients]
        counts = [args.requests or max(16, 4 * c) for _, c in levels]
        # Every request of the run gets a prompt of its own; the two sides of a pair share theirs.
        prompts = iter(build_prompts(1 + sum(counts), args.prompt_tokens, seed=0))
        await warm_up(client, model, scenarios, next(prompts), args)
        pairs = []
        for (scenario, level), count in zip(levels, counts, strict=True):
            level_prompts = [next(prompts) for _ in range(count)]
            with console.status(f"{scenario.name}, {level} clients, {count} requests a side…"):
                pairs.append(await measure_pair(client, model, scenario, level, level_prompts, args))
    return pairs


async def warm_up(client: httpx.AsyncClient, model: str, scenarios: list[Scenario], prompt: str, args) -> None:
    """One request of each kind, not counted: the first constrained one builds llguidance's tokenizer (~4 s)."""
    with console.status("warming up…"):
        for scenario in scenarios:
            for extra in feature_bodies(scenario.name, args.max_tokens):
                await closed_loop(client, bodies(model, [prompt], 0, extra, args), 1)


async def measure_pair(
    client: httpx.AsyncClient, model: str, scenario: Scenario, clients: int, prompts: list[str], args
) -> Pair:
    """The baseline and the feature in turns, each turn a slice of the prompts big enough to keep `clients` busy."""
    baseline_extra, feature_extra = feature_bodies(scenario.name, args.max_tokens)
    clients = min(clients, len(prompts))  # fewer requests than clients: the table shows how many ran at once
    turns = max(1, min(args.turns, len(prompts) // clients))
    baseline = feature = NO_SIDE
    for t in range(turns):
        lo, hi = t * len(prompts) // turns, (t + 1) * len(prompts) // turns
        baseline += await closed_loop(client, bodies(model, prompts[lo:hi], lo, baseline_extra, args), clients)
        feature += await closed_loop(client, bodies(model, prompts[lo:hi], lo, feature_extra, args), clients)
    return Pair(scenario.name, clients, scenario.goal, baseline, feature, turns)


# -- reporting


def cpu_kind() -> str:
    return "native bf16 (avx512_bf16/amx)" if cpu_has_native_bf16() else "no native bf16"


def table(pairs: list[Pair], args: argparse.Namespace) -> Table:
    title = (
        f"gemma-3-270m, {args.dtype}, CPU: {cpu_kind()}, {os.cpu_count()} cores; {args.max_tokens} output tokens, "
        f"~{args.prompt_tokens}-token prompts, temperature {args.temperature}, closed loop"
    )
    table = Table(title=title, title_justify="left")
    heads = ("scenario", "clients", "tok/s baseline", "tok/s feature", "ratio", "goal", "tok/req base/feat", "turns")
    for head in heads:
        table.add_column(head, justify="right")
    for pair in pairs:
        met = "[green]met[/]" if pair.ratio >= pair.goal else "[red]missed[/]"
        table.add_row(
            pair.scenario,
            str(pair.clients),
            f"{pair.baseline.tok_s:.1f}",
            f"{pair.feature.tok_s:.1f}",
            f"{pair.ratio:.2f}x",
            f"≥ {pair.goal:.2f}x {met}",
            f"{pair.baseline.tokens_per_request:.0f} / {pair.feature.tokens_per_request:.0f}",
            str(pair.turns),
        )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    table.caption = (
        "baselines: json_schema, no response_format; tools, tool_choice auto (same prompt); n=4, n=1\n"
        f"ratio: feature output tok/s / baseline's; load average now {load}"
    )
    return table


def to_json(args: argparse.Namespace, pairs: list[Pair]) -> dict:
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_count": os.cpu_count(),
        "pairs": [pair.to_json() for pair in pairs],
        "loadavg": os.getloadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
