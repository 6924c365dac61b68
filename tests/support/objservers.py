"""Real object stores on 127.0.0.1 for the s3:// and gs:// tests: moto's S3 server and a GCS emulator."""

from __future__ import annotations

import logging
import socket
import urllib.request
from pathlib import Path

# Credentials the local servers accept; nothing here may look for real ones (or ask a metadata service for them).
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}
CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
CLEARED += ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 API over HTTP in a thread (ThreadedMotoServer); `fs` uploads with the real s3fs client."""

    def __enter__(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.require_auth(False)
        self._server.stop()

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.url}, skip_instance_cache=True)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def upload(self, folder: Path, bucket: str, prefix: str, *, part_size: int | None = None) -> None:
        """Every file of `folder` under bucket/prefix; `part_size` makes the big ones multipart uploads."""
        fs = self.fs()
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            target = f"{bucket}/{prefix}/{path.relative_to(folder).as_posix()}"
            fs.put_file(str(path), target, **({"chunksize": part_size} if part_size else {}))

    def require_auth(self, on: bool) -> None:
        """moto checks credentials only when asked: then the test keys are unknown and every call is refused."""
        body = b"0" if on else b"inf"
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth", data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10).read()


class GcsEmulator:
    """gcp-storage-emulator's JSON API, in memory, in a thread; gcsfs reaches it without credentials."""

    def __enter__(self) -> GcsEmulator:
        from gcp_storage_emulator.server import create_server

        logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
        port = free_port()
        self._server = create_server("127.0.0.1", port, in_memory=True)
        self._server.start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def fs(self):
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(endpoint_url=self.url, token="anon", skip_instance_cache=True)


def point_gemmacli_at(server: S3Server, monkeypatch, home) -> None:
    """Test credentials, no stray AWS/GCS settings, GEMMACLI_S3_ENDPOINT_URL at `server`, a private GEMMACLI_HOME."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    for key in CLEARED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GEMMACLI_S3_ENDPOINT_URL", server.url)
    monkeypatch.setenv("GEMMACLI_HOME", str(home))
