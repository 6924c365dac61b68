"""gemmacli's settings: each declared once, and read once from the environment.

The one place that reads `GEMMACLI_*` variables; Hugging Face's own variables (HF_HOME, HF_TOKEN,
HF_HUB_OFFLINE) are left to huggingface_hub, which reads them itself.

ServerSettings declares every `gemmacli serve` setting with its type, default, range and one-line doc.
The command's flags and --help, the GEMMACLI_* variables and .env lines, the README's tables and the
defaults of MediaLimits and RequestLimits all come from that declaration. It lives here, below the
server, so media.py can take its defaults from it without importing the server.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gemmacli.device import DTYPE_NAMES
from gemmacli.errors import GemmacliError
from gemmacli.models.defaults import DEFAULT_SERVE_MODEL

if TYPE_CHECKING:
    from gemmacli.media import MediaLimits
    from gemmacli.server.schema.limits import RequestLimits


@dataclass(frozen=True)
class Paths:
    home: Path  # GEMMACLI_HOME: imported models and the assembled demo files live here
    catalog_file: Path | None = None  # GEMMACLI_CATALOG: extra catalog entries (TOML)

    @property
    def models_dir(self) -> Path:
        """Imported models (GGUF, CTranslate2, demo packages) as ready-to-load HF folders."""
        return self.home / "models"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        if home := env.get("GEMMACLI_HOME"):
            root = Path(home)
        else:
            root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gemmacli"
        catalog = env.get("GEMMACLI_CATALOG")
        return cls(home=root.expanduser(), catalog_file=Path(catalog).expanduser() if catalog else None)


@dataclass(frozen=True)
class ObjectStoreEnv:
    """Where s3:// and gs:// requests go; credentials stay with botocore and google-auth, which read their own."""

    s3_endpoint_url: str | None = None  # GEMMACLI_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    gcs_emulator_host: str | None = None  # STORAGE_EMULATOR_HOST: a local GCS emulator, used without credentials

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ObjectStoreEnv:
        env = os.environ if environ is None else environ
        endpoint = env.get("GEMMACLI_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        return cls(s3_endpoint_url=endpoint or None, gcs_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None)


def setting(default: Any, doc: str, **declared: Any) -> Any:
    """A ServerSettings field; `declared` holds the rest of its Setting (range, flags, panel, unit...)."""
    return field(default=default, metadata={"doc": doc, **declared})


MiB = 1024 * 1024
LIMITS = "Request limits"  # a --help panel of their own, and the README's limits table
# One helper per panel of `gemmacli serve --help`, so each field below stays one line.
_option = setting  # the main "Options" panel
_batching = partial(setting, panel="Queue and batching")
_memory = partial(setting, panel="Models in memory")
_access = partial(setting, panel="Access")
_media = partial(setting, panel="Remote media")
_limit = partial(setting, panel=LIMITS)


@dataclass(frozen=True)
class ServerSettings:
    """`gemmacli serve`'s settings: defaults < .env file < GEMMACLI_* variables < flags (see `load`)."""

    models: tuple[str, ...] = _option((DEFAULT_SERVE_MODEL,), "Model to serve (repeatable)", flags=("--model", "-m"))
    host: str = _option("127.0.0.1", "Address to bind; loopback unless asked otherwise")
    port: int = _option(8000, "TCP port", min=1, max=65535)
    device: str = _option("auto", "auto, cpu, cuda, cuda:N or mps", flags=("--device", "-d"))
    dtype: str = _option("auto", "Weights dtype (auto: bf16 where the hardware has it)", choices=DTYPE_NAMES)
    threads: int = _option(0, "CPU threads for torch", min=0, off="one per core")
    log_level: str = _option(
        "info", "Least level of the JSON log lines on stderr", choices=("debug", "info", "warning", "error")
    )
    warmup: bool = _option(True, "Run each model once before /health says ready")
    catalog: Path | None = _option(None, "Extra catalog entries (TOML)")

    max_batch: int = _batching(8, "Requests running at once; a model's chat requests decode as one batch", min=1)
    max_queue: int = _batching(64, "Requests waiting beyond those; more get 429", min=0)
    request_timeout: float = _batching(600.0, "Seconds a request may wait and run", min=1, unit="s")
    shutdown_timeout: float = _batching(30.0, "Seconds SIGTERM lets running requests finish", min=0, unit="s")
    embed_batch_window_ms: float = _batching(5.0, "Embedding requests this close share a model call", min=0, unit="ms")
    embed_max_batch: int = _batching(64, "Texts per embedding model call; a full batch goes at once", min=1)
    embed_cache_size: int = _batching(4096, "Recent embeddings answered from memory", min=0, off="no cache")

    load_on_demand: bool = _memory(False, "Requests may name any local model: it loads on first use")
    max_loaded: int = _memory(0, "Models in memory; the least recently used idle one unloads", min=0, off="no limit")
    idle_unload: float = _memory(0.0, "Seconds unused after which a model unloads", min=0, unit="s", off="never")
    load_wait: float = _memory(30.0, "Seconds a load waits for a busy model's place, then 503", min=0, unit="s")
    max_memory: str = _memory("", "accelerate's cap per device, e.g. 0=20GiB,cpu=64GiB", off="no cap")
    load_in_8bit: bool = _memory(False, "int8 weights through bitsandbytes (chat and Whisper models)")

    api_keys: tuple[str, ...] = _access(
        (), "Accepted bearer key (repeatable)", flags=("--api-key",), env="GEMMACLI_API_KEY", off="no auth"
    )
    api_key_file: Path | None = _access(None, "File of more bearer keys, one a line (# comments allowed)")
    metrics_auth: bool = _access(False, "Require the key for /metrics too", flags=("--metrics-auth/--public-metrics",))
    cors_origins: tuple[str, ...] = _access((), "Origin CORS allows (repeatable)", flags=("--cors-origin",), off="off")

    allow_remote_media: bool = _media(
        False, "Fetch http(s) image URLs (off: data: URLs only)", flags=("--allow-remote-media/--no-remote-media",)
    )
    remote_media_hosts: tuple[str, ...] = _media(
        (),
        "Host media URLs may name (repeatable; *.example.com too)",
        flags=("--remote-media-host",),
        off="any public host",
    )
    remote_media_networks: tuple[str, ...] = _media(
        (),
        "Private CIDR network to fetch from too, e.g. 10.1.2.0/24 (repeatable)",
        flags=("--remote-media-allow-network",),
    )
    remote_media_timeout: float = _media(10.0, "Seconds for one media fetch, redirects included", min=0.1, unit="s")

    # Each is checked before the memory it guards is committed; a refusal is a 400 naming the field (413: the body).
    max_body_bytes: int = _limit(50 * MiB, "Request body; more get 413", min=1, unit="bytes")
    max_messages: int = _limit(2048, "Chat messages per request", min=1)
    max_inputs: int = _limit(2048, "Embedding inputs, completion prompts per request", min=1)  # OpenAI: 2048
    max_text_chars: int = _limit(10_485_760, "Characters per text (message, prompt, input; a token id is one)", min=1)
    max_total_chars: int = _limit(20_971_520, "Characters per request", min=1)
    max_images: int = _limit(32, "Images per chat request", min=0)
    max_image_bytes: int = _limit(20 * MiB, "Bytes per image", min=1, unit="bytes")
    max_image_pixels: int = _limit(50_000_000, "Pixels per image (width × height, from the header)", min=1)
    min_image_side: int = _limit(2, "Smallest image side", min=1, unit="px")
    max_audio_clips: int = _limit(4, "Audio parts per chat request", min=0)
    max_audio_bytes: int = _limit(25 * MiB, "Bytes per audio file", min=1, unit="bytes")  # OpenAI's upload limit
    max_audio_seconds: float = _limit(7200.0, "Decoded length per audio file", min=1, unit="s")
    max_video_clips: int = _limit(2, "Video parts per chat request", min=0)
    max_video_bytes: int = _limit(32 * MiB, "Bytes per video file", min=1, unit="bytes")
    max_video_seconds: float = _limit(600.0, "Length per video (from its header)", min=1, unit="s")
    max_video_frames: int = _limit(32, "Frames the model sees per video, evenly spaced", min=1)  # Gemma 4's default
    max_n: int = _limit(8, "Choices per prompt (n); one prefill serves them all", min=1)  # OpenAI: 128
    max_stop: int = _limit(16, "Stop strings per request", min=0)  # OpenAI: 4
    max_stop_chars: int = _limit(1024, "Characters per stop string", min=1)
    max_audio_prompt_chars: int = _limit(4096, "Transcription prompt characters", min=0)  # Whisper reads 224 tokens
    embed_truncate: bool = _limit(False, "Cut embedding inputs over the model's window instead of a 400")

    def media_limits(self) -> MediaLimits:
        from gemmacli.media import MediaLimits  # it takes its defaults from this class, so it comes second

        return MediaLimits(**{f.name: getattr(self, f.name) for f in fields(MediaLimits)})

    def request_limits(self) -> RequestLimits:
        from gemmacli.server.schema.limits import RequestLimits  # as MediaLimits

        return RequestLimits(**{f.name: getattr(self, f.name) for f in fields(RequestLimits)})

    @classmethod
    def load(cls, overrides: dict[str, Any], environ: dict[str, str] | None = None, dotenv: Path | None = None):
        """Defaults < .env file < environment < explicit overrides (flags); None in overrides means "not given"."""
        env = dict(read_dotenv(dotenv or Path(".env")))
        env.update(os.environ if environ is None else environ)
        values = {}
        for s in SETTINGS:
            # The field's own spelling works too where the documented one differs (GEMMACLI_API_KEYS).
            name = next((n for n in (s.env, f"GEMMACLI_{s.name.upper()}") if env.get(n)), None)
            if name is not None:
                values[s.name] = s.parse(env[name], name)
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        if values.get("load_on_demand") and "models" not in values:
            values["models"] = ()  # nothing named: preload nothing rather than the default model
        return replace(cls(), **values)


@dataclass(frozen=True)
class Setting:
    """One ServerSettings field as its flag, its variable, its --help line and its README row show it."""

    name: str
    kind: type  # int, float, bool, str, Path, or tuple: a repeatable flag, a comma-separated variable
    default: Any
    doc: str
    env: str
    flags: tuple[str, ...] = ()  # click's spelling where it is not --name or --name/--no-name
    panel: str | None = None  # None: the main "Options" panel
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""  # how the default reads: "bytes" in MiB, else a suffix ("s", "px")
    off: str = ""  # what a 0, empty or off default means, shown instead of it

    @property
    def decls(self) -> tuple[str, ...]:
        dashed = "--" + self.name.replace("_", "-")
        return self.flags or ((f"{dashed}/--no-{dashed[2:]}",) if self.kind is bool else (dashed,))

    @property
    def flag(self) -> str:
        """The flag as the README names it: --model, --allow-remote-media."""
        return self.decls[0].split("/")[0]

    @property
    def shown(self) -> str:
        """The default as --help and the README write it: 50 MiB, 600 s, 10,485,760, off."""
        value = self.default
        if self.off and not value:
            return self.off
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ", ".join(value) or "none"
        if value is None or value == "":
            return "none"
        if self.unit == "bytes":
            return f"{value / MiB:g} MiB"
        if isinstance(value, float):
            value = f"{value:g}"  # 600.0 reads 600
        elif isinstance(value, int) and value >= 10_000:
            value = f"{value:,}"
        return f"{value} {self.unit}" if self.unit else str(value)

    @property
    def range(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g} to {self.max:g}"
        return f"at least {self.min:g}" if self.min is not None else f"at most {self.max:g}"

    def parse(self, raw: str, variable: str) -> Any:
        """A variable's text as this setting's value, or one readable error line naming the variable."""
        try:
            value = _PARSERS[self.kind](raw)
        except ValueError:
            raise GemmacliError(f"{variable}={raw!r} is not a valid value") from None
        if self.choices and value not in self.choices:
            raise GemmacliError(f"{variable}={raw!r} is not one of {', '.join(self.choices)}")
        # Written as "not within" so that nan is refused too.
        if not ((self.min is None or value >= self.min) and (self.max is None or value <= self.max)):
            raise GemmacliError(f"{variable}={raw!r} is out of range: {self.range}")
        return value


def _bool(raw: str) -> bool:
    if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(raw)
    return raw.lower() in ("1", "true", "yes", "on")


_PARSERS = {
    int: int,
    float: float,
    bool: _bool,
    str: str,
    Path: Path,
    tuple: lambda raw: tuple(v.strip() for v in raw.split(",") if v.strip()),
}


def _kind(hint: Any) -> type:
    """int, float, bool, str or Path (`X | None` is X); tuple for tuple[str, ...]."""
    if typing.get_origin(hint) is tuple:
        return tuple
    return next((a for a in typing.get_args(hint) if a is not type(None)), hint)


def _declared(cls: type) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        Setting(f.name, _kind(hints[f.name]), f.default, **{"env": f"GEMMACLI_{f.name.upper()}", **f.metadata})
        for f in fields(cls)
    )


SETTINGS = _declared(ServerSettings)


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
