"""A small fake Hugging Face Hub on 127.0.0.1, for testing real huggingface_hub downloads offline.

It answers exactly what `snapshot_download` (huggingface_hub 2.4) calls, with the headers the real Hub sends:

    GET  /api/models/{owner}/{name}[/revision/{rev}]            repo info: sha, siblings, gated
    GET  /api/models/{owner}/{name}/tree/{rev}[/{path}]          file listing (?recursive=true), LFS oids
    HEAD /{owner}/{name}/resolve/{rev}/{path}                    X-Repo-Commit, ETag, Content-Length
    GET  /{owner}/{name}/resolve/{rev}/{path}                    the bytes (Range: bytes=N- honoured)
    GET  /api/agent-harnesses                                    an empty registry (huggingface_hub asks
                                                                 once per process, for its User-Agent)

and fails the way the Hub does: X-Error-Code RepoNotFound (401 without a token, 404 with one),
RevisionNotFound (404), EntryNotFound (404), GatedRepo (401/403 on file downloads; the repo info and
listing of a gated repo stay public, as on the real Hub). No Xet headers are ever sent, so
huggingface_hub stays on plain HTTP downloads.

    with FakeHub({"org/tiny": {"config.json": b"{}", ...}}, gated={"org/gated"}) as hub:
        point_hf_at(monkeypatch, hub.url, tmp_path / "hf")
        hub_download(...)
        assert hub.downloaded("org/tiny") == [...]

For a subprocess (e.g. the `gemmacli` console script), pass `hf_env(hub.url, hf_home)` as its environment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Files the Hub keeps in Git LFS: they get an `lfs` entry in the listing and a sha256 ETag.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf", ".msgpack", ".h5", ".ot", ".model")

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("info", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")),
    ("tree", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")),
    ("file", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")),
]


@dataclass(frozen=True)
class HubRequest:
    method: str
    path: str  # percent-decoded, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    status: int = 0


@dataclass(frozen=True)
class _File:
    data: bytes
    git_oid: str  # sha1 of the git blob, as the Hub lists it
    sha256: str | None  # LFS files only

    @classmethod
    def of(cls, name: str, data: bytes) -> _File:
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        lfs = name.endswith(LFS_SUFFIXES)
        return cls(data, git_oid, hashlib.sha256(data).hexdigest() if lfs else None)

    @property
    def etag(self) -> str:
        return self.sha256 or self.git_oid


def files_from_dir(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, keyed by its repo path ('1_Pooling/config.json')."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeHub:
    """Serves `repos` ({repo_id: {path: bytes}} or {repo_id: folder}) until stopped.

    Every repo has the branches/tags in `revisions`, each with its own commit sha (see `commit`), all
    holding the same files. Repos in `gated` refuse file downloads unless the request carries `token`.
    """

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, bytes] | Path],
        *,
        gated: Iterable[str] = (),
        revisions: Iterable[str] = ("main",),
        token: str | None = None,
    ):
        self.repos = {
            repo_id: {name: _File.of(name, data) for name, data in _files(src).items()}
            for repo_id, src in repos.items()
        }
        self.gated = set(gated)
        self.revisions = tuple(revisions)
        self.token = token
        self.requests: list[HubRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)  # so stop() is quick
        threading.Thread(target=serve, name="fakehub", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: afterwards any request fails with a connection error, as with no network."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- what tests look at ------------------------------------------------------------------------

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The 40-hex commit sha that `revision` of `repo_id` resolves to."""
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    def downloaded(self, repo_id: str) -> list[str]:
        """Repo paths whose bytes were fetched (GET on /resolve), in request order."""
        prefix = f"/{repo_id}/resolve/"
        return [
            r.path[len(prefix) :].split("/", 1)[1]
            for r in self.requests
            if r.method == "GET" and r.path.startswith(prefix)
        ]

    # -- answering -----------------------------------------------------------------------------------

    def _record(self, request: HubRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> _Reply:
        for kind, pattern in _ROUTES:
            if m := pattern.match(path):
                groups = {k: unquote(v) if v is not None else None for k, v in m.groupdict().items()}
                return self._route(kind, groups, query, headers)
        if path == "/api/agent-harnesses":
            return _Reply.json({"standardEnvVars": [], "harnesses": {}})
        return _Reply.error(404, None, f"no route for {method} {unquote(path)}")

    def _route(self, kind: str, g: dict[str, Any], query: dict[str, str], headers: dict[str, str]) -> _Reply:
        repo_id, rev = g["repo"], g["rev"] or "main"
        authed = "authorization" in headers
        if repo_id not in self.repos:
            return _Reply.error(404 if authed else 401, "RepoNotFound", "Repository not found")
        sha = self._resolve(repo_id, rev)
        if sha is None:
            return _Reply.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = self.repos[repo_id]
        if kind == "info":
            return _Reply.json(self._info(repo_id, sha, files))
        if kind == "tree":
            recursive = query.get("recursive", "false").lower() == "true"
            return _Reply.json(_tree(files, g["path"] or "", recursive))
        if repo_id in self.gated and headers.get("authorization") != f"Bearer {self.token}":
            msg = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
            return _Reply.error(403 if authed else 401, "GatedRepo", msg)
        file = files.get(g["path"])
        if file is None:
            return _Reply.error(404, "EntryNotFound", f"{g['path']} does not exist on {rev}", commit=sha)
        return _Reply.file(file, sha, headers.get("range"))

    def _resolve(self, repo_id: str, rev: str) -> str | None:
        """The commit sha of a branch/tag name or of a sha itself; None for an unknown revision."""
        for name in self.revisions:
            sha = self.commit(repo_id, name)
            if rev in (name, sha):
                return sha
        return None

    def _info(self, repo_id: str, sha: str, files: dict[str, _File]) -> dict[str, Any]:
        return {
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "private": False,
            "gated": "manual" if repo_id in self.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": [{"rfilename": name} for name in sorted(files)],
        }


def _files(src: Mapping[str, bytes] | Path) -> Mapping[str, bytes]:
    return files_from_dir(src) if isinstance(src, Path) else src


def _tree(files: dict[str, _File], under: str, recursive: bool) -> list[dict[str, Any]]:
    """Entries as /api/models/{repo}/tree lists them: the folders, then the files, under `under`."""
    prefix = f"{under.strip('/')}/" if under.strip("/") else ""

    def listed(path: str) -> bool:
        rest = path[len(prefix) :]
        return path.startswith(prefix) and bool(rest) and (recursive or "/" not in rest)

    folders = {name.rsplit("/", depth)[0] for name in files for depth in range(1, name.count("/") + 1)}
    entries: list[dict[str, Any]] = [
        {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
        for d in sorted(folders)
        if listed(d)
    ]
    for name in sorted(filter(listed, files)):
        f = files[name]
        entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": len(f.data), "path": name}
        if f.sha256:
            entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
        entries.append(entry)
    return entries


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""  # for HEAD only its length is sent, as Content-Length

    @classmethod
    def json(cls, payload: Any) -> _Reply:
        return cls(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())

    @classmethod
    def error(cls, status: int, code: str | None, message: str, commit: str | None = None) -> _Reply:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        return cls(status, headers, json.dumps({"error": message}).encode())

    @classmethod
    def file(cls, f: _File, sha: str, range_header: str | None) -> _Reply:
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": sha,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
        }
        if f.sha256:  # the real Hub names the LFS object in these on its CDN redirect
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))}
        start = int(m.group(1)) if range_header and (m := re.match(r"bytes=(\d+)-$", range_header)) else 0
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(f.data) - 1}/{len(f.data)}"
        return cls(206 if start else 200, headers, f.data[start:])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # snapshot_download opens 8 connections at once; the default backlog of 5 drops SYNs, which
    # costs a one-second TCP retransmit.
    request_queue_size = 64


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a stopped hub refuses everything at once
        # instead of a pooled keep-alive connection still being served by a leftover thread.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = hub._answer(self.command, url.path, query, headers)
            hub._record(HubRequest(self.command, unquote(url.path), query, headers, reply.status))
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean; hub.requests is the log

    return Handler


def closed_port_url() -> str:
    """An http://127.0.0.1:<port> URL where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def hf_env(endpoint: str, hf_home: Path, *, offline: bool = False, token: str | None = None) -> dict[str, str]:
    """The environment variables that point huggingface_hub (in a new process) at `endpoint` and `hf_home`."""
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1" if offline else "0"}
    if token:
        env["HF_TOKEN"] = token
    return env


def point_hf_at(
    monkeypatch: Any, endpoint: str, hf_home: Path, *, offline: bool = False, token: str | None = None
) -> None:
    """Point huggingface_hub in this process (and any subprocess) at `endpoint`, caching under `hf_home`.

    huggingface_hub copies HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE into `huggingface_hub.constants` at
    import time, so setting the variables is not enough in-process: the constants are patched too.
    """
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in hf_env(endpoint, hf_home, offline=offline, token=token).items():
        monkeypatch.setenv(name, value)
    # Every path derived from HF_HOME (token, caches, the agent registry...) moves under `hf_home`.
    old_home, home = constants.HF_HOME, str(hf_home)
    for name, value in vars(constants).items():
        if name.isupper() and isinstance(value, str) and value.startswith(old_home):
            monkeypatch.setattr(constants, name, home + value[len(old_home) :])
    patched = {
        "ENDPOINT": endpoint.rstrip("/"),
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint.rstrip("/") + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": offline,
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
