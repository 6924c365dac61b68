"""Results people would rather see than read: tables for embeddings and models."""

from __future__ import annotations

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
    table = Table(title="models")
    for column in ("name", "task", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("description", overflow="fold", ratio=1)
    style = {"ready": "green", "loaded": "green", "demo": "cyan", "loading": "cyan", "download": "dim"}
    for row in rows:
        status = f"[{style.get(row['status'], '')}]{row['status']}[/]"
        table.add_row(row["name"], row["task"], status, row["source"], row["description"])
    return table
