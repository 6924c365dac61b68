"""A small threaded HTTP server on 127.0.0.1 that plays every part a remote media host can play:
a real PNG, redirects (chains, loops, to forbidden addresses), slow and oversized bodies, non-images.
It records each request's path and Host header, so tests can see where a fetch really went."""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PNG = (Path(__file__).parent.parent / "data" / "images" / "red_circle_64.png").read_bytes()
JPEG = (Path(__file__).parent.parent / "data" / "images" / "red_circle_640x480.jpg").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host")))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        name = url.path.strip("/").split("/")[0].replace("-", "_").replace(".", "_")
        route = getattr(self, f"route_{name}", None)
        with suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts, size caps)
            route(query) if route else self.send(404, b"not found", "text/plain")

    def send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send(status, b"", "text/plain", {"Location": location})

    def route_red_png(self, query) -> None:
        self.send(200, PNG, "image/png")

    def route_photo_jpg(self, query) -> None:
        self.send(200, JPEG, "image/jpeg")

    def route_chain(self, query) -> None:
        """/chain?n=3: n relative redirects, then the PNG."""
        n = int(query.get("n", "1"))
        self.redirect(f"/chain?n={n - 1}" if n > 1 else "/red.png", int(query.get("status", "302")))

    def route_to(self, query) -> None:
        """/to?url=X: one redirect to any URL at all, the attacker's favourite."""
        self.redirect(query["url"])

    def route_loop(self, query) -> None:
        self.redirect("/loop")

    def route_no_location(self, query) -> None:
        self.send(302, b"", "text/plain")

    def route_text(self, query) -> None:
        self.send(200, b"<html>not an image</html>", "text/html")

    def route_fake_png(self, query) -> None:
        self.send(200, b"this is not a PNG at all", "image/png")

    def route_empty(self, query) -> None:
        self.send(200, b"", "image/png")

    def route_status(self, query) -> None:
        self.send(int(query["code"]), b"nope", "text/plain")

    def route_big(self, query) -> None:
        """/big?size=N: N bytes, streamed without a Content-Length (only the count can stop it)."""
        size = int(query["size"])
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for start in range(0, size, 8192):
            self.wfile.write(b"\0" * min(8192, size - start))

    def route_big_declared(self, query) -> None:
        """/big-declared?size=N: announces N bytes, sends a few; the announcement alone must be refused."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", query["size"])
        self.end_headers()
        self.wfile.write(PNG[:16])
        self.close_connection = True

    def route_slow(self, query) -> None:
        """/slow?seconds=S: a valid header, then the PNG one byte per 0.2 s for S seconds (a trickle)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self._trickle(PNG, float(query.get("seconds", "30")))

    def route_slow_headers(self, query) -> None:
        """Headers themselves trickling in, so no single read ever times out."""
        self._trickle(b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"a" * 400, float(query.get("seconds", "30")))

    def _trickle(self, data: bytes, seconds: float) -> None:
        end = time.monotonic() + seconds
        for byte in data:
            if time.monotonic() > end or self.server.stopping.is_set():
                break
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str | None]] = []
        self.stopping = threading.Event()


class MediaServer:
    """`with MediaServer() as media: media.url("/red.png")`."""

    def __init__(self):
        self.server = _Server()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="media-test", daemon=True)

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self.server.seen

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
