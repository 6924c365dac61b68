"""gemmacli serve: the OpenAI-compatible HTTP server over the same runners the other commands use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gemmacli.cli.app import app
from gemmacli.cli.common import quiet_libraries
from gemmacli.cli.options import DType, QuietOpt
from gemmacli.cli.ui import reporting

LIMITS = "Request limits"  # a help panel of their own; defaults in the README's limits table


def _limit(help: str, minimum: float = 0):
    return typer.Option(help=help, min=minimum, rich_help_panel=LIMITS)


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
    threads: Annotated[int | None, typer.Option(help=r"CPU threads for torch \[default: one per core].", min=1)] = None,
    remote_media_host: Annotated[
        list[str] | None, typer.Option(help="Only host media URLs may name (repeatable; *.example.com too).")
    ] = None,
    remote_media_allow_network: Annotated[
        list[str] | None, typer.Option(help="Fetch media from this private CIDR too, e.g. 10.1.2.0/24 (repeatable).")
    ] = None,
    remote_media_timeout: Annotated[
        float | None, typer.Option(help=r"Seconds per media URL, redirects included \[default: 10].", min=0.1)
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Browser origin allowed by CORS (repeatable; default: CORS off).")
    ] = None,
    api_key_file: Annotated[Path | None, typer.Option(help="File of accepted bearer keys, one a line.")] = None,
    metrics_auth: Annotated[
        bool | None, typer.Option("--metrics-auth/--public-metrics", help="Require the key for /metrics too.")
    ] = None,
    shutdown_timeout: Annotated[
        float | None, typer.Option(help=r"Seconds SIGTERM lets running requests finish \[default: 30].", min=0)
    ] = None,
    env_file: Annotated[Path, typer.Option(help="KEY=VALUE file of GEMMACLI_* settings.")] = Path(".env"),
    quiet: QuietOpt = False,
    max_body_bytes: Annotated[int | None, _limit(r"Request body bytes; more get 413 \[default: 50 MiB].", 1)] = None,
    max_messages: Annotated[int | None, _limit(r"Chat messages per request \[default: 2048].", 1)] = None,
    max_inputs: Annotated[int | None, _limit(r"Embedding inputs / prompts per request \[default: 2048].", 1)] = None,
    max_text_chars: Annotated[int | None, _limit(r"Characters per text \[default: 10 Mi].", 1)] = None,
    max_total_chars: Annotated[int | None, _limit(r"Characters per request \[default: 20 Mi].", 1)] = None,
    max_images: Annotated[int | None, _limit(r"Images per chat request \[default: 32].")] = None,
    max_image_bytes: Annotated[int | None, _limit(r"Bytes per image \[default: 20 MiB].", 1)] = None,
    max_image_pixels: Annotated[int | None, _limit(r"Pixels per image \[default: 50 M].", 1)] = None,
    min_image_side: Annotated[int | None, _limit(r"Smallest image side in px \[default: 2].", 1)] = None,
    max_audio_clips: Annotated[int | None, _limit(r"Audio parts per chat request \[default: 4].")] = None,
    max_audio_bytes: Annotated[int | None, _limit(r"Bytes per audio file \[default: 25 MiB].", 1)] = None,
    max_audio_seconds: Annotated[float | None, _limit(r"Seconds per audio file \[default: 7200].", 1)] = None,
    max_stop: Annotated[int | None, _limit(r"Stop strings per request \[default: 16].")] = None,
    max_stop_chars: Annotated[int | None, _limit(r"Characters per stop string \[default: 1024].", 1)] = None,
    max_audio_prompt_chars: Annotated[int | None, _limit(r"Transcription prompt chars \[default: 4096].")] = None,
    embed_truncate: Annotated[
        bool | None,
        typer.Option(
            "--embed-truncate/--no-embed-truncate",
            rich_help_panel=LIMITS,
            help=r"Cut over-long embedding inputs, not a 400 \[default: off].",
        ),
    ] = None,
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
        "allow_remote_media": allow_remote_media, "warmup": warmup, "log_level": log_level, "threads": threads,
        "remote_media_hosts": tuple(remote_media_host or ()),
        "remote_media_networks": tuple(remote_media_allow_network or ()), "remote_media_timeout": remote_media_timeout,
        "cors_origins": tuple(cors_origin or ()), "api_key_file": api_key_file, "metrics_auth": metrics_auth,
        "max_body_bytes": max_body_bytes, "max_messages": max_messages, "max_inputs": max_inputs,
        "max_text_chars": max_text_chars, "max_total_chars": max_total_chars, "max_images": max_images,
        "max_image_bytes": max_image_bytes, "max_image_pixels": max_image_pixels, "min_image_side": min_image_side,
        "max_audio_clips": max_audio_clips, "max_audio_bytes": max_audio_bytes, "max_audio_seconds": max_audio_seconds,
        "max_stop": max_stop, "max_stop_chars": max_stop_chars, "max_audio_prompt_chars": max_audio_prompt_chars,
        "embed_truncate": embed_truncate,
        "shutdown_timeout": shutdown_timeout,
        "catalog": catalog, "load_on_demand": load_on_demand, "max_loaded": max_loaded, "idle_unload": idle_unload,
        "load_wait": load_wait, "max_memory": max_memory, "load_in_8bit": load_in_8bit,
    }  # fmt: skip
    settings = ServerSettings.load(overrides, dotenv=env_file)
    quiet_libraries()
    with reporting("preparing models", quiet=quiet) as report:
        run(settings, report)
