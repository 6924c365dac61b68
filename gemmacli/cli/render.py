"""Results people would rather see than read: tables for embeddings and models."""

from __future__ import annotations

from rich import box
from rich.table import Table

from gemmacli.types import Embeddings


def embeddings_json(model: str, texts: list[str], result: Embeddings) -> dict:
    """The OpenAI embeddings shape, so the same tools read CLI and server output."""
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": [float(x) for x in vector]}
            for i, vector in enumerate(result.vectors)
        ],
        "usage": {"prompt_tokens": result.total_tokens, "total_tokens": result.total_tokens},
    }


def embeddings_table(texts: list[str], result: Embeddings) -> Table:
    """One row per text: tokens, the first values, and its cosine similarity to every other text."""
    sims = result.vectors @ result.vectors.T  # (N, N), vectors are unit length
    table = Table(title=f"{len(texts)} embeddings, {result.vectors.shape[1]} dimensions")
    table.add_column("#", justify="right")
    table.add_column("text", overflow="fold", max_width=40)
    table.add_column("tokens", justify="right")
    table.add_column("first values")
    for j in range(len(texts)):
        table.add_column(f"cos #{j}", justify="right")
    for i, text in enumerate(texts):
        head = " ".join(f"{x:+.3f}" for x in result.vectors[i, :3])
        table.add_row(str(i), text, str(result.token_counts[i]), head + " …", *(f"{s:.3f}" for s in sims[i]))
    return table


def models_table(rows: list[dict]) -> Table:
    """One line a model, narrow enough for 80 columns: what it is, what it takes, whether it is here. Sources and
    descriptions are in `--json`."""
    table = Table(title="models", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for column in ("name", "task", "takes"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    table.add_column("context", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    style = {"ready": "green", "loaded": "green", "demo": "cyan", "loading": "cyan", "download": "dim"}
    for row in rows:
        status = f"[{style.get(row['status'], '')}]{row['status']}[/]"
        takes = " ".join(row.get("modalities") or ())
        table.add_row(row["name"], row["task"], takes, _tokens(row.get("context")), status)
    return table


def _tokens(count: int | None) -> str:
    """128K, as model cards write context windows."""
    return "" if not count else f"{count // 1024}K" if count % 1024 == 0 else str(count)
