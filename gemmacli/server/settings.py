"""Server settings: one typed object; flags override GEMMACLI_* variables, which override a .env file."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gemmacli.errors import GemmacliError
from gemmacli.media import MediaLimits
from gemmacli.models.defaults import DEFAULT_SERVE_MODEL
from gemmacli.server.schema.limits import RequestLimits


@dataclass(frozen=True)
class ServerSettings:
    models: tuple[str, ...] = (DEFAULT_SERVE_MODEL,)  # served models; the task of each comes from its config
    host: str = "127.0.0.1"  # address to bind; loopback unless asked otherwise
    port: int = 8000  # TCP port
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto, bfloat16, float16 or float32
    api_keys: tuple[str, ...] = ()  # bearer keys accepted; empty = no auth
    max_batch: int = 8  # requests running at once; chat requests of one model decode as one batch
    max_queue: int = 64  # requests waiting beyond that; more get 429
    request_timeout: float = 600.0  # seconds a request may wait and run before it is abandoned
    max_body_bytes: int = 50 * 1024 * 1024  # request bodies above this get 413
    embed_batch_window_ms: float = 5.0  # embedding requests arriving this close together share one model call
    embed_max_batch: int = 64  # texts per embedding model call; a batch this full goes at once
    embed_cache_size: int = 4096  # recent (model, text) embeddings kept in memory; 0 = no cache
    allow_remote_media: bool = False  # fetch http(s) image URLs (off: data: URLs only)
    warmup: bool = True  # run each model once before /health says ready
    log_level: str = "info"  # debug, info, warning or error
    catalog: Path | None = None  # extra catalog entries (TOML)
    threads: int = 0  # torch CPU threads; 0 = one per core
    remote_media_hosts: tuple[str, ...] = ()  # hosts media URLs may name (*.example.com too); empty = any public
    remote_media_networks: tuple[str, ...] = ()  # CIDR networks fetched from although not public (internal servers)
    remote_media_timeout: float = 10.0  # seconds for one media fetch, redirects included
    cors_origins: tuple[str, ...] = ()  # browser origins allowed by CORS; empty = CORS off
    api_key_file: Path | None = None  # more bearer keys, one a line (# comments allowed)
    metrics_auth: bool = False  # /metrics needs a key too (/health is always public)
    # Request limits, all checked before the memory they guard is committed; each refusal is a 400 naming the field.
    max_messages: int = 2048  # chat messages in one request
    max_inputs: int = 2048  # items of a list input: embedding inputs, completion prompts (OpenAI: 2048)
    max_text_chars: int = 10_485_760  # characters in one text: a message, a prompt, an input (OpenAI's limit)
    max_total_chars: int = 20_971_520  # characters of all a request's texts together
    max_images: int = 32  # images in one chat request
    max_image_bytes: int = 20 * 1024 * 1024  # one encoded image
    max_image_pixels: int = 50_000_000  # width x height of one image, read from its header before decoding
    min_image_side: int = 2  # narrower or shorter images are refused
    max_audio_clips: int = 4  # audio parts in one chat request
    max_audio_bytes: int = 25 * 1024 * 1024  # one encoded audio file (OpenAI's upload limit)
    max_audio_seconds: float = 7200.0  # one audio file's decoded length; samples are counted while decoding
    max_stop: int = 16  # stop strings in one request (OpenAI: 4)
    max_stop_chars: int = 1024  # characters in one stop string
    max_audio_prompt_chars: int = 4096  # the transcription `prompt` (Whisper reads its last 224 tokens)
    embed_truncate: bool = False  # cut over-long embedding inputs to the model's window instead of a 400
    shutdown_timeout: float = 30.0  # seconds SIGTERM waits for running requests before it cancels them
    load_on_demand: bool = False  # requests may name any cataloged or cached model: it loads on first use
    max_loaded: int = 0  # models in memory at once; the least recently used idle one unloads first; 0 = no limit
    idle_unload: float = 0.0  # seconds unused after which a model unloads; 0 = never
    load_wait: float = 30.0  # seconds a load waits for a busy model to free its place (--max-loaded), then 503
    max_memory: str = ""  # accelerate's cap per device for each model, e.g. 0=20GiB,cpu=64GiB
    load_in_8bit: bool = False  # int8 weights through bitsandbytes (chat and Whisper models)

    def media_limits(self) -> MediaLimits:
        return MediaLimits(max_image_bytes=self.max_image_bytes, max_image_pixels=self.max_image_pixels,
                           min_image_side=self.min_image_side, max_audio_bytes=self.max_audio_bytes,
                           max_audio_seconds=self.max_audio_seconds)  # fmt: skip

    def request_limits(self) -> RequestLimits:
        names = {f.name for f in fields(RequestLimits)}
        return RequestLimits(**{f.name: getattr(self, f.name) for f in fields(self) if f.name in names})

    @classmethod
    def load(cls, overrides: dict[str, Any], environ: dict[str, str] | None = None, dotenv: Path | None = None):
        """Defaults < .env file < environment < explicit overrides (flags); None in overrides means "not given"."""
        env = dict(read_dotenv(dotenv or Path(".env")))
        env.update(os.environ if environ is None else environ)
        values = {}
        for f in fields(cls):
            raw = env.get(f"GEMMACLI_{f.name.upper()}")
            if f.name == "api_keys" and raw is None:
                raw = env.get("GEMMACLI_API_KEY")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, getattr(cls, f.name, None) if f.name != "models" else ())
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        if values.get("load_on_demand") and "models" not in values:
            values["models"] = ()  # nothing named: preload nothing rather than the default model
        return replace(cls(), **values)


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; # comments and blank lines ignored; values may be quoted."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        out[key.strip()] = value.strip().strip("'\"")
    return out


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, tuple):
            return tuple(v.strip() for v in raw.split(",") if v.strip())
        if isinstance(default, bool):
            if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if name in ("catalog", "api_key_file"):
            return Path(raw)
        return raw
    except ValueError:
        raise GemmacliError(f"GEMMACLI_{name.upper()}={raw!r} is not a valid value") from None
