"""Object storage URLs: parsing, every failure as one clear line, and gs:// against a local GCS emulator."""

from __future__ import annotations

import json
import sys
import uuid

import pytest
from support.objservers import CLEARED, GcsEmulator, S3Server, free_port, point_gemmacli_at
from typer.testing import CliRunner

from gemmacli.cli import app
from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError
from gemmacli.models import objstore
from gemmacli.models.resolve import resolve
from gemmacli.settings import ObjectStoreEnv, Paths

MODEL = {
    "config.json": json.dumps({"architectures": ["BertModel"], "model_type": "bert"}).encode(),
    "model.safetensors": bytes(range(256)) * 8,
}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("raw", "scheme", "bucket", "prefix"),
    [
        ("s3://models/gemma/1b/", "s3", "models", "gemma/1b"),
        ("S3://models//a//b", "s3", "models", "a/b"),
        ("gs://my_bucket.example", "gs", "my_bucket.example", ""),
        ("gcs://models/x", "gs", "models", "x"),
    ],
)
def test_urls_parse_to_bucket_and_prefix(raw, scheme, bucket, prefix):
    url = objstore.parse(raw)
    assert (url.scheme, url.bucket, url.prefix) == (scheme, bucket, prefix)
    assert objstore.parse(str(url)) == url


@pytest.mark.parametrize("raw", ["s3://", "s3:///prefix", "s3://UPPER/x", "gs://a/x", "s3://bad!name/x"])
def test_bad_urls_are_model_not_found(raw):
    with pytest.raises(ModelNotFoundError, match="bucket name"):
        objstore.parse(raw)


def test_store_names_are_safe_and_distinct(catalog, tmp_path):
    one, two = objstore.parse("s3://abc-d/e"), objstore.parse("s3://abc/d-e")
    assert one.store_name != two.store_name and one.store_name.startswith("s3-abc-d-e-")
    ref = resolve("gs://models/whisper small/", catalog, Paths(tmp_path))
    assert ref.name == "gs://models/whisper small" and ref.url.store_name.startswith("gs-models-whisper-small-")


@pytest.mark.parametrize(("scheme", "extra"), [("s3", "s3"), ("gs", "gcs")])
def test_missing_extra_names_it(scheme, extra, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "s3fs" if scheme == "s3" else "gcsfs.core", None)  # as if not installed
    monkeypatch.setenv("GEMMACLI_HOME", str(tmp_path))
    result = invoke("download", f"{scheme}://models/x", "-q")
    assert result.exit_code == 1
    message = f"{scheme}:// URLs need {extra}fs: pip install 'gemmacli[{extra}]'"
    assert result.stderr.strip() == f"error: {scheme}://models/x: {message}"


# -- S3 failures, against moto's server


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    point_gemmacli_at(s3_server, monkeypatch, tmp_path / "home")
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    fs = s3_server.fs()
    fs.mkdir(bucket)
    for key, body in MODEL.items():
        fs.pipe(f"{bucket}/ok/{key}", body)
    fs.pipe(f"{bucket}/docs/README.md", b"# no model here")
    fs.pipe(f"{bucket}/one.gguf", b"GGUF")
    s3_server.bucket = bucket
    return s3_server


def fetch(url: str):
    return objstore.fetch(objstore.parse(url), Paths.from_env().models_dir)


def test_missing_bucket_empty_prefix_and_no_model_files(s3):
    with pytest.raises(ModelNotFoundError, match=rf"bucket 'no-such-bucket' does not exist at {s3.url}"):
        fetch("s3://no-such-bucket/x")
    with pytest.raises(ModelNotFoundError, match=r"nothing found under s3://.*/nothing"):
        fetch(f"s3://{s3.bucket}/nothing")
    with pytest.raises(ModelNotFoundError, match="no safetensors weights or config"):
        fetch(f"s3://{s3.bucket}/docs")
    with pytest.raises(ModelNotFoundError, match="is a single object"):
        fetch(f"s3://{s3.bucket}/one.gguf")


def test_object_names_that_would_escape_the_folder_are_refused(s3):
    s3.client().put_object(Bucket=s3.bucket, Key="ok/../evil.json", Body=b"{}")
    with pytest.raises(GemmacliError, match="refuses to write"):
        fetch(f"s3://{s3.bucket}/ok")
    assert not list(Paths.from_env().home.rglob("evil.json"))


def test_access_denied_and_no_credentials(s3, monkeypatch):
    s3.require_auth(True)
    try:
        with pytest.raises(ModelUnavailableError, match=r"access denied to s3://.* check AWS_ACCESS_KEY_ID"):
            fetch(f"s3://{s3.bucket}/ok")
    finally:
        s3.require_auth(False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ModelUnavailableError, match="no credentials for s3://"):
        fetch(f"s3://{s3.bucket}/ok")


def test_unreachable_endpoint(s3, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("GEMMACLI_S3_ENDPOINT_URL", dead)
    with pytest.raises(ModelUnavailableError, match=f"cannot reach {dead} for s3://"):
        fetch(f"s3://{s3.bucket}/ok")


def test_aws_endpoint_url_is_honoured(s3, monkeypatch):
    monkeypatch.delenv("GEMMACLI_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    assert ObjectStoreEnv.from_env().s3_endpoint_url == s3.url
    assert fetch(f"s3://{s3.bucket}/ok").fetched == ("config.json", "model.safetensors")


def test_cli_download_reports_each_failure_in_one_line_and_goes_on(s3):
    ok = f"s3://{s3.bucket}/ok"
    result = invoke("download", "s3://no-such-bucket/m", f"s3://{s3.bucket}/nothing", ok)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: s3://no-such-bucket/m: bucket 'no-such-bucket' does not exist at {s3.url}",
        f"error: s3://{s3.bucket}/nothing: nothing found under s3://{s3.bucket}/nothing (is the prefix right?)",
    ]
    assert result.stdout.startswith(f"{ok}\t") and result.stdout.count("\n") == 1
    assert f"{ok}: fetched 2 files" in result.stderr


def test_chat_with_a_missing_bucket_is_one_line(s3):
    result = invoke("chat", "-m", "s3://no-such-bucket/gemma", "hello", "-q")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: bucket 'no-such-bucket' does not exist at {s3.url}"


# -- gs://, against gcp-storage-emulator (STORAGE_EMULATOR_HOST, no credentials)


@pytest.fixture
def gcs(monkeypatch, tmp_path):
    for key in CLEARED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GEMMACLI_HOME", str(tmp_path / "home"))
    with GcsEmulator() as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        fs = emulator.fs()
        fs.mkdir("models")
        for key, body in MODEL.items():
            fs.pipe(f"models/tiny/{key}", body)
        yield emulator


def test_gs_download_checks_md5_then_noop_then_changed_file(gcs):
    first = fetch("gs://models/tiny")
    assert first.fetched == ("config.json", "model.safetensors") and first.size_only == ()  # both MD5-checked
    assert (first.path / "model.safetensors").read_bytes() == MODEL["model.safetensors"]
    assert fetch("gs://models/tiny").fetched == ()
    gcs.fs().pipe("models/tiny/model.safetensors", b"new weights")
    third = fetch("gs://models/tiny")
    assert third.fetched == ("model.safetensors",) and third.reused == ("config.json",)
    assert (third.path / "model.safetensors").read_bytes() == b"new weights"


def test_gs_missing_bucket_and_empty_prefix(gcs):
    with pytest.raises(ModelNotFoundError, match=f"bucket 'absent' does not exist at {gcs.url}"):
        fetch("gs://absent/tiny")
    with pytest.raises(ModelNotFoundError, match="nothing found under gs://models/nothing"):
        fetch("gs://models/nothing")
