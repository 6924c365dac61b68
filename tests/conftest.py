"""Session fixtures: the real demo models, imported once by gemmacli itself, and a tiny vision model.

Models are cached between runs in $GEMMACLI_TEST_HOME (default ~/.cache/gemmacli-tests): the first
run imports them from the demo packages (about two minutes on two cores), later runs take seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports huggingface_hub: tests never touch the network or the user's caches.
TEST_HOME = Path(os.environ.get("GEMMACLI_TEST_HOME", Path.home() / ".cache" / "gemmacli-tests"))
os.environ["GEMMACLI_HOME"] = str(TEST_HOME)
os.environ["HF_HOME"] = str(TEST_HOME / "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("GEMMACLI_CATALOG", None)

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def paths():
    from gemmacli.settings import Paths

    return Paths.from_env()


@pytest.fixture(scope="session")
def catalog():
    from gemmacli.models.catalog import Catalog

    return Catalog.load()


def _demo(name: str, catalog, paths) -> Path:
    from gemmacli.models import demo

    return demo.ensure(catalog.get(name), paths.models_dir)


@pytest.fixture(scope="session")
def gemma_dir(catalog, paths) -> Path:
    return _demo("gemma-3-270m", catalog, paths)


@pytest.fixture(scope="session")
def minilm_dir(catalog, paths) -> Path:
    return _demo("all-minilm-l6-v2", catalog, paths)


@pytest.fixture(scope="session")
def whisper_dir(catalog, paths) -> Path:
    return _demo("whisper-tiny.en", catalog, paths)


@pytest.fixture(scope="session")
def vision_dir(gemma_dir, paths) -> Path:
    from support.testkit import ensure_tiny_gemma3_vision

    return ensure_tiny_gemma3_vision(paths.home / "testkit" / "tiny-gemma3-vision", gemma_dir)


@pytest.fixture(scope="session")
def gemma4_dir(gemma_dir, paths) -> Path:
    from support.gemma4_kit import ensure_tiny_gemma4

    return ensure_tiny_gemma4(paths.home / "testkit" / "tiny-gemma4", gemma_dir)


@pytest.fixture(scope="session")
def gemma4_moe_dir(gemma_dir, paths) -> Path:
    from support.gemma4_kit import ensure_tiny_gemma4

    return ensure_tiny_gemma4(paths.home / "testkit" / "tiny-gemma4-moe", gemma_dir, moe=True)


@pytest.fixture(scope="session")
def gemma3n_dir(gemma_dir, paths) -> Path:
    """Gemma 3n with its towers: its vision tower is timm's MobileNetV5, so this skips where timm cannot load."""
    from support.gemma3n_kit import ensure_tiny_gemma3n

    try:
        import timm  # noqa: F401
    except Exception as exc:  # missing, or its torchvision does not fit this torch
        pytest.skip(f"Gemma 3n's vision tower needs timm: {type(exc).__name__}: {exc}")
    return ensure_tiny_gemma3n(paths.home / "testkit" / "tiny-gemma3n", gemma_dir)


@pytest.fixture(scope="session")
def gemma3n_text_dir(gemma_dir, paths) -> Path:
    from support.gemma3n_kit import ensure_tiny_gemma3n_text

    return ensure_tiny_gemma3n_text(paths.home / "testkit" / "tiny-gemma3n-text", gemma_dir)


@pytest.fixture(scope="session")
def hermes_dir(gemma_dir, paths) -> Path:
    from support.hermes_kit import ensure_tiny_hermes

    return ensure_tiny_hermes(paths.home / "testkit" / "tiny-hermes", gemma_dir)


@pytest.fixture(scope="session")
def cpu_bf16():
    from gemmacli.device import Placement

    return Placement("cpu", "bfloat16")


@pytest.fixture(scope="session")
def cpu_fp32():
    from gemmacli.device import Placement

    return Placement("cpu", "float32")


@pytest.fixture(scope="session")
def chat_runner(gemma_dir, catalog):
    """bf16 where the CPU computes it natively (as `--dtype auto` does), else fp32, which is faster there."""
    from gemmacli.device import placement
    from gemmacli.runners.chat import ChatRunner

    where = placement("cpu", "auto")
    return ChatRunner.load(gemma_dir, where, name="gemma-3-270m", defaults=catalog.get("gemma-3-270m").defaults)


@pytest.fixture(scope="session")
def vision_runner(vision_dir, cpu_bf16):
    from gemmacli.runners.chat import ChatRunner

    return ChatRunner.load(vision_dir, cpu_bf16, name="tiny-gemma3-vision")


@pytest.fixture(scope="session")
def embed_runner(minilm_dir, cpu_fp32):
    from gemmacli.runners.embed import EmbedRunner

    return EmbedRunner.load(minilm_dir, cpu_fp32, name="all-minilm-l6-v2")


@pytest.fixture(scope="session")
def transcribe_runner(whisper_dir, cpu_fp32):
    from gemmacli.runners.transcribe import TranscribeRunner

    return TranscribeRunner.load(whisper_dir, cpu_fp32, name="whisper-tiny.en")


@pytest.fixture(scope="session")
def images() -> Path:
    return DATA / "images"


@pytest.fixture(scope="session")
def audio() -> Path:
    return DATA / "audio"


# -- the server, on the same runners, over real HTTP on 127.0.0.1


@pytest.fixture(scope="session")
def served(chat_runner, vision_runner, embed_runner, transcribe_runner):
    """The demo runners as an app's loaded models: fresh records (and statistics) for each app."""
    from gemmacli.server.loaded import LoadedModel

    def models() -> list[LoadedModel]:
        return [
            LoadedModel("gemma-3-270m", chat_runner, aliases=("google/gemma-3-270m", "gemma3:270m")),
            LoadedModel("tiny-gemma3-vision", vision_runner),
            LoadedModel("all-minilm-l6-v2", embed_runner),
            LoadedModel("whisper-tiny.en", transcribe_runner),
        ]

    return models


@pytest.fixture(scope="session")
def server(served):
    """The real app on the demo models, served by uvicorn; yields its base URL."""
    from support.liveserver import LiveServer

    from gemmacli.server import create_app
    from gemmacli.server.settings import ServerSettings

    with LiveServer(create_app(ServerSettings(max_batch=4), models=served())) as live:
        yield live.url


@pytest.fixture(scope="session")
def openai_client(server):
    """The official openai client, unmodified, pointed at the server."""
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(server):
    import httpx

    with httpx.Client(base_url=server, timeout=120) as client:
        yield client


@pytest.fixture
def cli():
    """`gemmacli ARGS` through Typer's CliRunner: cli("chat", "hi", "-q") -> its Result (stdout, stderr apart)."""
    from typer.testing import CliRunner

    from gemmacli.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture(scope="module")
def fake_chat():
    """An httpx client on the real app over the scripted FakeChatRunner "fake-chat" (tests/support/fakes.py),
    which must be idle again once the module's tests are done."""
    from support.liveserver import fake_chat_server

    with fake_chat_server("fake-chat") as (client, runner, _):
        yield client
        assert runner.decoder.idle
