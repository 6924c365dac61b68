"""gemmacli serve: the OpenAI-compatible HTTP server over the same runners the other commands use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gemmacli.cli.app import app
from gemmacli.cli.common import quiet_libraries
from gemmacli.cli.options import DType, QuietOpt
from gemmacli.cli.ui import reporting


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli serve                                   [dim]# google/gemma-3-12b-it on 127.0.0.1:8000[/]\n
  gemmacli serve -m gemma-3-270m -m all-minilm-l6-v2 -m whisper-tiny.en\n
  gemmacli serve -m gemma-3-4b-it --host 0.0.0.0 --api-key $KEY --max-queue 16\n
  gemmacli serve --load-on-demand --max-loaded 2 --idle-unload 600   [dim]# any local model, on first use[/]\n
  GEMMACLI_MODELS=gemma-3-270m GEMMACLI_PORT=9000 gemmacli serve   [dim]# or put them in .env[/]"""
)
def serve(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to serve (repeatable).")] = None,
    host: Annotated[str | None, typer.Option(help=r"Address to bind \[default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help=r"TCP port \[default: 8000].", min=1, max=65535)] = None,
    device: Annotated[str | None, typer.Option("--device", "-d", help="auto, cpu, cuda, cuda:N or mps.")] = None,
    dtype: Annotated[DType | None, typer.Option(help=r"Weights dtype \[default: auto].")] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Accepted bearer key (repeatable).")] = None,
    max_batch: Annotated[int | None, typer.Option(help=r"Requests decoding at once \[default: 8].", min=1)] = None,
    max_queue: Annotated[int | None, typer.Option(help=r"Waiting; more get 429 \[default: 64].", min=0)] = None,
    request_timeout: Annotated[float | None, typer.Option(help=r"Seconds per request \[default: 600].", min=1)] = None,
    allow_remote_media: Annotated[
        bool | None, typer.Option("--allow-remote-media/--no-remote-media", help="Accept http(s) image URLs.")
    ] = None,
    warmup: Annotated[bool | None, typer.Option("--warmup/--no-warmup", help="Run each model once first.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    env_file: Annotated[Path, typer.Option(help="KEY=VALUE file of GEMMACLI_* settings.")] = Path(".env"),
    quiet: QuietOpt = False,
    catalog: Annotated[Path | None, typer.Option(help="Extra catalog entries (TOML).", show_default=False)] = None,
    load_on_demand: Annotated[
        bool | None, typer.Option("--load-on-demand/--no-load-on-demand", help="Load any local model on first use.")
    ] = None,
    max_loaded: Annotated[int | None, typer.Option(help="Models in memory at once; 0 = no limit.", min=0)] = None,
    idle_unload: Annotated[float | None, typer.Option(help="Unload a model unused this many seconds.", min=0)] = None,
    load_wait: Annotated[
        float | None, typer.Option(help=r"Seconds a load waits for a busy model's place \[default: 30].", min=0)
    ] = None,
    max_memory: Annotated[str | None, typer.Option(help="Per-device cap, e.g. 0=20GiB,cpu=64GiB.")] = None,
    load_in_8bit: Annotated[
        bool | None, typer.Option("--load-in-8bit/--no-load-in-8bit", help="int8 weights (needs bitsandbytes).")
    ] = None,
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
        "max_batch": max_batch, "max_queue": max_queue, "request_timeout": request_timeout,
        "allow_remote_media": allow_remote_media, "warmup": warmup, "log_level": log_level,
        "catalog": catalog, "load_on_demand": load_on_demand, "max_loaded": max_loaded, "idle_unload": idle_unload,
        "load_wait": load_wait, "max_memory": max_memory, "load_in_8bit": load_in_8bit,
    }  # fmt: skip
    settings = ServerSettings.load(overrides, dotenv=env_file)
    quiet_libraries()
    with reporting("preparing models", quiet=quiet) as report:
        run(settings, report)
