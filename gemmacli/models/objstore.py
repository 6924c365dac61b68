"""Models in object storage, `s3://bucket/prefix` and `gs://bucket/prefix`, fetched once into the store via fsspec.

The remote listing (size and ETag of each file) is kept in the store marker: a later `download` lists the
prefix again and fetches only what changed, while `chat` and `serve` use the stored copy without asking.
Every file is checked against its listed size and, when the store gives one, its MD5 before it is stored.
s3fs and gcsfs are optional (`gemmacli[s3]`, `gemmacli[gcs]`) and imported only when a URL needs them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError
from gemmacli.models import store
from gemmacli.models.gguf_import import Report
from gemmacli.models.hub import HUB_FILE_PATTERNS
from gemmacli.settings import ObjectStoreEnv

_URL = re.compile(r"^(s3|gs|gcs)://([^/]*)/*(.*?)/*$", re.IGNORECASE)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")  # S3's and GCS's rules, loosely: both allow these
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
# Few retries: a wrong endpoint or a dead network should fail in seconds, not minutes.
_S3_CONFIG = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}}


@dataclass(frozen=True)
class ObjectURL:
    scheme: str  # "s3" or "gs"
    bucket: str
    prefix: str  # without leading or trailing '/'; "" is the whole bucket

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    @property
    def path(self) -> str:
        """bucket/prefix, as fsspec names it."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    @property
    def extra(self) -> str:
        return "s3" if self.scheme == "s3" else "gcs"

    @property
    def store_name(self) -> str:
        """A store folder name for the URL: readable, plus a hash so `a/b-c` and `a-b/c` never share one."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.scheme}-{self.bucket}-{self.prefix}").strip("-.")
        return f"{readable[:110]}-{hashlib.sha256(str(self).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class RemoteFile:
    size: int
    etag: str  # tells a changed object from an unchanged one
    md5: str | None  # hex digest, when the store gives one (not for multipart S3 uploads or composite GCS objects)


@dataclass(frozen=True)
class Fetched:
    path: Path
    fetched: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()  # unchanged since the last download
    size_only: tuple[str, ...] = ()  # fetched files whose content had no MD5 to check against
    fetched_bytes: int = 0

    def summary(self, url: ObjectURL) -> str:
        if not self.fetched:
            return f"{url}: up to date ({len(self.reused)} files unchanged)"
        text = f"{url}: fetched {len(self.fetched)} files ({self.fetched_bytes / 1e6:.1f} MB)"
        text += f", {len(self.reused)} unchanged" if self.reused else ""
        if self.size_only:
            text += f"; size checked only (multipart or KMS upload: no MD5 to compare): {', '.join(self.size_only)}"
        return text


def is_url(name: str) -> bool:
    return bool(re.match(r"^(s3|gs|gcs)://", name.strip(), re.IGNORECASE))


def parse(raw: str) -> ObjectURL:
    match = _URL.match(raw.strip())
    if match is None:
        raise ModelNotFoundError(f"{raw!r} is not an s3:// or gs:// URL", param="model")
    scheme, bucket, prefix = match.groups()
    scheme = "s3" if scheme.lower() == "s3" else "gs"
    if not _BUCKET.match(bucket):
        raise ModelNotFoundError(f"invalid bucket name {bucket!r} (expected {scheme}://BUCKET/PREFIX)", param="model")
    return ObjectURL(scheme, bucket, re.sub(r"/{2,}", "/", prefix))


def stored(url: ObjectURL, models_dir: Path) -> Path | None:
    """The stored copy of `url`, without asking the remote store (chat and serve run offline once fetched)."""
    found = store.read(models_dir / url.store_name)
    return found.path if found is not None and found.source == str(url) else None


def fetch(url: ObjectURL, models_dir: Path, report: Report = lambda step: None, env: ObjectStoreEnv | None = None):
    """List `url`, then download what is new or changed into the store; a no-op when nothing changed."""
    env = env or ObjectStoreEnv.from_env()
    fs = filesystem(url, env)
    report(f"listing {url}")
    remote = list_remote(fs, url, env)
    current = store.read(models_dir / url.store_name)
    previous = _listing(current.meta.get("remote", {})) if current and current.source == str(url) else {}
    if current is not None and previous == remote:
        return Fetched(current.path, reused=tuple(remote))
    return download(fs, url, remote, models_dir, report, env=env, previous=previous)


def filesystem(url: ObjectURL, env: ObjectStoreEnv):
    """A fresh fsspec filesystem for `url` (no cached instance or listing: each download sees the store as it is)."""
    if url.scheme == "s3":
        try:
            from s3fs import S3FileSystem
        except ImportError:
            raise ModelUnavailableError("s3:// URLs need s3fs: pip install 'gemmacli[s3]'", param="model") from None
        client = {"endpoint_url": env.s3_endpoint_url} if env.s3_endpoint_url else {}
        fs = S3FileSystem(client_kwargs=client, config_kwargs=_S3_CONFIG, skip_instance_cache=True)
        fs.retries = 3  # s3fs's own retries, on top of botocore's
        return fs
    try:
        # The plain JSON-API client: gcsfs's default class first probes each bucket's layout over gRPC.
        from gcsfs.core import GCSFileSystem
    except ImportError:
        raise ModelUnavailableError("gs:// URLs need gcsfs: pip install 'gemmacli[gcs]'", param="model") from None
    # An emulator takes no credentials; otherwise google-auth finds GOOGLE_APPLICATION_CREDENTIALS and friends.
    local = {"endpoint_url": env.gcs_emulator_host, "token": "anon"} if env.gcs_emulator_host else {}
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)  # it logs each failure as a traceback; we say it in a line
    return GCSFileSystem(skip_instance_cache=True, **local)


def list_remote(fs, url: ObjectURL, env: ObjectStoreEnv) -> dict[str, RemoteFile]:
    """The model files under `url` (the Hub's safetensors-only patterns), by path relative to the prefix."""
    from huggingface_hub.utils import filter_repo_objects

    try:
        found = fs.find(url.path, detail=True)
    except Exception as err:
        raise translate(err, url, env) from err
    files = {}
    for name, info in found.items():
        if info.get("type", "file") != "file" or name.endswith("/"):
            continue  # folder placeholders some tools create
        if name.strip("/") == url.path:
            raise ModelNotFoundError(f"{url} is a single object; gemmacli fetches a prefix holding a model folder")
        files[_relative(name, url)] = _remote_file(info)
    if not files:
        raise ModelNotFoundError(f"nothing found under {url} (is the prefix right?)", param="model")
    keep = set(filter_repo_objects(list(files), allow_patterns=list(HUB_FILE_PATTERNS)))
    if not keep:
        raise ModelNotFoundError(
            f"{url} has no safetensors weights or config/tokenizer files (gemmacli never fetches .bin, .pt or .gguf)"
        )
    return {key: files[key] for key in sorted(keep)}


def download(
    fs,
    url: ObjectURL,
    remote: dict[str, RemoteFile],
    models_dir: Path,
    report: Report = lambda step: None,
    *,
    env: ObjectStoreEnv | None = None,
    previous: dict[str, RemoteFile] | None = None,
) -> Fetched:
    """Fetch `remote` (a listing of `url`) into the store; files unchanged since `previous` are reused."""
    name, previous = url.store_name, previous or {}
    old = models_dir / name
    reusable = [k for k, f in remote.items() if previous.get(k) == f and _has(old / k, f.size)]
    todo = [k for k in remote if k not in reusable]
    size_only = []
    with store.staging(models_dir, name, _detect_task, source=str(url), meta={"remote": _to_meta(remote)}) as out:
        for key in reusable:
            _link_or_copy(old / key, out / key)
        bar = _bar(report, f"downloading {url}", sum(remote[k].size for k in todo))
        try:
            for key in todo:
                report(f"downloading {key}")
                _get(fs, url, key, out / key, bar, env or ObjectStoreEnv.from_env())
                expected = remote[key]
                if expected.md5 and url.scheme == "s3" and _kms_encrypted(fs, url, key):
                    expected = RemoteFile(expected.size, expected.etag, None)  # SSE-KMS ETags are no MD5
                if not verify(out / key, expected, f"{url}/{key}"):
                    size_only.append(key)
        finally:
            if bar is not None:
                bar.close()
    fetched_bytes = sum(remote[k].size for k in todo)
    return Fetched(old, tuple(todo), tuple(reusable), tuple(size_only), fetched_bytes)


def verify(path: Path, expected: RemoteFile, where: str) -> bool:
    """Refuse a file whose size or MD5 differs from the listing; True when the MD5 was checked too."""
    size = path.stat().st_size
    if size != expected.size:
        raise ModelUnavailableError(
            f"{where} arrived with {size} bytes instead of {expected.size} (changed or cut short while downloading); "
            "nothing was stored: run the download again"
        )
    if expected.md5 is None:
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected.md5:
        raise ModelUnavailableError(
            f"{where} arrived with MD5 {digest.hexdigest()} instead of {expected.md5} (changed or damaged "
            "while downloading); nothing was stored: run the download again"
        )
    return True


def _remote_file(info: dict) -> RemoteFile:
    """Size, ETag and MD5 as s3fs (ETag: the MD5 for single-part uploads, `md5-N` for multipart) or gcsfs give them."""
    if "md5Hash" in info or "generation" in info:  # GCS: md5Hash is base64; composite objects have none
        md5 = base64.b64decode(info["md5Hash"]).hex() if info.get("md5Hash") else None
        return RemoteFile(int(info["size"]), str(info.get("generation") or info.get("etag") or ""), md5)
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"').lower()
    return RemoteFile(int(info["size"]), etag, etag if _MD5_HEX.match(etag) else None)


def _relative(name: str, url: ObjectURL) -> str:
    """`name` relative to the prefix, refused when it could land outside the model folder (`..`, absolute)."""
    rel = name.strip("/")[len(url.path) :].lstrip("/")
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        raise GemmacliError(f"{url} holds an object named {name!r}, which gemmacli refuses to write to disk")
    return rel


def _get(fs, url: ObjectURL, key: str, dest: Path, bar, env: ObjectStoreEnv) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs.get_file(f"{url.path}/{key}", str(dest), callback=_callback(bar))
    except Exception as err:
        raise translate(err, url, env, key=key) from err


def _kms_encrypted(fs, url: ObjectURL, key: str) -> bool:
    """Whether S3 encrypted the object with KMS: its ETag is then not the MD5 of the content."""
    try:
        head = fs.call_s3("head_object", Bucket=url.bucket, Key=f"{url.prefix}/{key}" if url.prefix else key)
    except Exception as err:
        raise translate(err, url, ObjectStoreEnv.from_env(), key=key) from err
    return head.get("ServerSideEncryption") == "aws:kms" or bool(head.get("SSECustomerAlgorithm"))


def _callback(bar):
    """An fsspec callback that moves `bar` by the bytes each chunk brings."""
    from fsspec.callbacks import Callback

    class ToBar(Callback):
        def call(self, *args, **kwargs) -> None:
            if bar is not None and self.value > self._shown:
                bar.update(self.value - self._shown)
                self._shown = self.value

    callback = ToBar()
    callback._shown = 0
    return callback


def _bar(report: Report, desc: str, total: int):
    tqdm_class = getattr(report, "tqdm_class", None)
    return tqdm_class(desc=desc, total=total, unit="B") if tqdm_class is not None and total else None


def _detect_task(folder: Path):
    from gemmacli.models.resolve import detect_task  # resolve imports this module

    return detect_task(folder)


def _has(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _link_or_copy(src: Path, dest: Path) -> None:
    """A hard link costs no disk and survives the old folder's removal; copy across filesystems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _to_meta(remote: dict[str, RemoteFile]) -> dict:
    return {k: {"size": f.size, "etag": f.etag, "md5": f.md5} for k, f in remote.items()}


def _listing(meta: dict) -> dict[str, RemoteFile]:
    try:
        return {k: RemoteFile(int(v["size"]), str(v["etag"]), v.get("md5")) for k, v in meta.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}  # written by another version: treat as unknown, so everything is fetched again


def translate(err: Exception, url: ObjectURL, env: ObjectStoreEnv, key: str | None = None) -> GemmacliError:
    """One line a user can act on for an s3fs/gcsfs failure; `key` is the file being fetched, if any."""
    chain = _causes(err)
    names = {type(e).__name__ for e in chain}
    where = _endpoint(url, env)
    creds = (
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        if url.scheme == "s3"
        else "GOOGLE_APPLICATION_CREDENTIALS"
    )
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return ModelUnavailableError(f"no credentials for {url}: set {creds}", param="model")
    text = " ".join(str(e) for e in chain)
    denied = any(isinstance(e, PermissionError) for e in chain) or "Forbidden" in text or "AccessDenied" in text
    if denied or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return ModelUnavailableError(f"access denied to {url} at {where}: check {creds}", param="model")
    if any(isinstance(e, FileNotFoundError) for e in chain):
        if key is not None:
            return ModelUnavailableError(f"{url}/{key} disappeared while downloading: run the download again")
        return ModelNotFoundError(f"bucket {url.bucket!r} does not exist at {where}", param="model")
    if _network(chain) or names & {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"}:
        reason = str(chain[-1]).strip().splitlines()[0] if str(chain[-1]).strip() else type(chain[-1]).__name__
        return ModelUnavailableError(f"cannot reach {where} for {url}: {reason}", param="model")
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelUnavailableError(f"{url}: {reason}", param="model")


def _endpoint(url: ObjectURL, env: ObjectStoreEnv) -> str:
    if url.scheme == "s3":
        return env.s3_endpoint_url or "AWS S3"
    return env.gcs_emulator_host or "Google Cloud Storage"


def _causes(err: BaseException) -> list[BaseException]:
    """`err` and what it was raised from: s3fs turns botocore errors into OSErrors, keeping the original."""
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _network(chain: list[BaseException]) -> bool:
    try:
        from aiohttp import ClientError as HttpClientError
    except ImportError:  # both s3fs and gcsfs bring aiohttp; without it, only the builtin errors apply
        HttpClientError = ConnectionError
    return any(isinstance(e, (HttpClientError, ConnectionError, TimeoutError)) for e in chain)
