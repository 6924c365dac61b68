"""s3:// models against a real S3 API (moto's server on 127.0.0.1), fetched with the real s3fs client."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from support.objservers import S3Server, point_gemmacli_at
from typer.testing import CliRunner

from gemmacli.cli import app
from gemmacli.errors import ModelUnavailableError
from gemmacli.models import objstore, store
from gemmacli.models.loader import ModelLoader
from gemmacli.settings import ObjectStoreEnv, Paths

TINY = {  # enough for gemmacli to call it an embedding model; never loaded
    "config.json": json.dumps({"architectures": ["BertModel"], "model_type": "bert"}).encode(),
    "tokenizer.json": b'{"version": "1.0"}',
    "model.safetensors": bytes(range(256)) * 40,
    "README.md": b"not fetched",
}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """The server, with gemmacli pointed at it through GEMMACLI_S3_ENDPOINT_URL and a private GEMMACLI_HOME."""
    point_gemmacli_at(s3_server, monkeypatch, tmp_path / "home")
    return s3_server


@pytest.fixture
def bucket(s3) -> str:
    name = f"models-{uuid.uuid4().hex[:10]}"
    s3.fs().mkdir(name)
    return name


@pytest.fixture
def tiny(s3, bucket) -> objstore.ObjectURL:
    fs = s3.fs()
    for key, body in TINY.items():
        fs.pipe(f"{bucket}/tiny/{key}", body)
    return objstore.parse(f"s3://{bucket}/tiny")


def models_dir() -> Path:
    return Paths.from_env().models_dir


@pytest.mark.slow
def test_download_embed_then_noop_then_only_the_changed_file(s3, bucket, minilm_dir, embed_runner):
    s3.upload(minilm_dir, bucket, "mini", part_size=8 << 20)  # model.safetensors goes up in parts
    url = f"s3://{bucket}/mini/"
    first = invoke("download", url)
    assert first.exit_code == 0, first.output
    name, folder = first.stdout.strip().split("\t")
    folder = Path(folder)
    assert name == url.rstrip("/") and folder.parent == models_dir()
    assert "fetched 11 files" in first.stderr
    assert "size checked only" in first.stderr and "model.safetensors" in first.stderr  # its ETag is no MD5
    assert not (folder / "README.md").exists()  # only what a model needs, as from the Hub

    embedded = invoke("embed", "-m", name, "hello there", "-q")
    assert embedded.exit_code == 0, embedded.output
    body = json.loads(embedded.stdout)
    assert body["model"] == name
    np.testing.assert_allclose(body["data"][0]["embedding"], embed_runner.embed(["hello there"]).vectors[0], atol=1e-6)

    marker = (folder / store.MARKER).stat().st_mtime_ns
    weights = (folder / "model.safetensors").stat().st_ino
    again = invoke("download", url)
    assert again.exit_code == 0 and "up to date (11 files unchanged)" in again.stderr
    assert (folder / store.MARKER).stat().st_mtime_ns == marker  # nothing was rewritten

    changed = json.loads((minilm_dir / "tokenizer_config.json").read_text()) | {"model_max_length": 256}
    s3.fs().pipe(f"{bucket}/mini/tokenizer_config.json", json.dumps(changed).encode())
    third = invoke("download", url, "-q")
    assert third.exit_code == 0 and third.stdout == first.stdout
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 256
    assert (folder / "model.safetensors").stat().st_ino == weights  # unchanged files are kept, not fetched


@pytest.mark.slow
def test_serve_an_s3_model_by_its_url(s3, bucket, minilm_dir, embed_runner, tmp_path):
    import openai
    from test_serve import free_port, wait_for_health

    s3.upload(minilm_dir, bucket, "mini")
    url, port = f"s3://{bucket}/mini", free_port()
    command = [sys.executable, "-m", "gemmacli", "serve", "-m", url, "--port", str(port), "--device", "cpu", "-q"]
    log_file = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, cwd=tmp_path, env=os.environ.copy(), stderr=log_file, text=True)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process, tmp_path / "server.log")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == [url]
        vector = client.embeddings.create(model=url, input="hello there").data[0].embedding
        np.testing.assert_allclose(vector, embed_runner.embed(["hello there"]).vectors[0], atol=1e-5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log_file.close()
    assert objstore.stored(objstore.parse(url), models_dir()) is not None  # fetched into the store once


def test_first_use_fetches_then_later_uses_need_no_server(tiny, monkeypatch):
    prepared = ModelLoader(paths=Paths.from_env()).prepare(str(tiny), report=lambda step: None)
    assert prepared.ref.name == str(tiny) and prepared.task == "embed"
    names = sorted(p.name for p in prepared.folder.iterdir())
    assert names == [store.MARKER, "config.json", "model.safetensors", "tokenizer.json"]
    monkeypatch.setenv("GEMMACLI_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert ModelLoader(paths=Paths.from_env()).prepare(str(tiny), report=lambda step: None).folder == prepared.folder


def test_every_file_is_checked_against_the_listing(s3, tiny):
    env, fs = ObjectStoreEnv.from_env(), objstore.filesystem(tiny, ObjectStoreEnv.from_env())
    good = objstore.fetch(tiny, models_dir(), env=env)
    assert good.fetched == ("config.json", "model.safetensors", "tokenizer.json") and good.size_only == ()
    listing = objstore.list_remote(fs, tiny, env)
    weights = TINY["model.safetensors"]

    # The object changes between the listing and the download: same size, other bytes, then another size.
    s3.fs().pipe(f"{tiny.path}/model.safetensors", weights[::-1])
    with pytest.raises(ModelUnavailableError, match=r"MD5 \w+ instead of"):
        objstore.download(fs, tiny, listing, models_dir(), env=env)
    s3.fs().pipe(f"{tiny.path}/model.safetensors", weights[:100])
    with pytest.raises(ModelUnavailableError, match="100 bytes instead of 10240"):
        objstore.download(fs, tiny, listing, models_dir(), env=env)

    # Nothing half-done is left, and the good copy stays usable.
    assert objstore.stored(tiny, models_dir()) == good.path
    assert (good.path / "model.safetensors").read_bytes() == weights
    assert not [p for p in models_dir().iterdir() if p.name.startswith(".staging")]


def test_kms_encrypted_objects_are_checked_by_size(s3, bucket):
    client = s3.client()
    for key, body in TINY.items():
        extra = {"ServerSideEncryption": "aws:kms"} if key == "config.json" else {}
        client.put_object(Bucket=bucket, Key=f"kms/{key}", Body=body, **extra)
    fetched = objstore.fetch(objstore.parse(f"s3://{bucket}/kms"), models_dir())
    assert fetched.size_only == ("config.json",)  # an SSE-KMS ETag is not the MD5 of the content


def test_a_damaged_local_copy_is_fetched_again(s3, tiny):
    first = objstore.fetch(tiny, models_dir())
    with (first.path / "model.safetensors").open("r+b") as f:
        f.truncate(10)
    assert objstore.stored(tiny, models_dir()) is None  # never loaded as it is
    second = objstore.fetch(tiny, models_dir())
    assert "model.safetensors" in second.fetched
    assert (second.path / "model.safetensors").read_bytes() == TINY["model.safetensors"]


def test_download_progress_counts_bytes(s3, tiny):
    from rich.console import Console

    from gemmacli.progress import progress_bars

    class Report:
        def __init__(self, bars):
            self.tqdm_class, self.steps = bars, []

        def __call__(self, step):
            self.steps.append(step)

    with progress_bars(Console(file=io.StringIO())) as bars:
        report = Report(bars)
        objstore.fetch(tiny, models_dir(), report)
        [task] = [t for t in bars.progress.tasks if t.description.startswith("downloading s3://")]
    expected = sum(len(TINY[k]) for k in ("config.json", "model.safetensors", "tokenizer.json"))
    assert task.total == expected and task.completed == expected and task.fields["unit"] == "B"
    assert "downloading model.safetensors" in report.steps
