"""Fetching http(s) media URLs without letting a request reach the server's own network (SSRF).

Every hop (the URL, then each redirect) is parsed strictly (url_guard), its host checked against the
allow-list, its name resolved once and every address checked; the socket then connects to the checked
address itself, so DNS cannot answer differently between the check and the connection (rebinding).
http.client runs over that socket (TLS verifies and sends SNI for the URL's host name). A watchdog
closes the socket at the total deadline, so a server trickling bytes cannot hold a worker thread.

Blocking by design: callers run it on a worker thread, never the event loop or the inference thread.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urljoin

from gemmacli import __version__
from gemmacli.errors import GemmacliError, MediaError
from gemmacli.server.url_guard import (
    IPAddress,
    Network,
    Target,
    forbidden_reason,
    host_allowed,
    normalize_host_pattern,
    parse_url,
    refuse,
)

REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024
# identity: a compressed body would dodge the byte cap until it is inflated.
HEADERS = (
    ("User-Agent", f"gemmacli/{__version__}"),
    ("Accept", "image/*, audio/*, */*;q=0.5"),
    ("Accept-Encoding", "identity"),
    ("Connection", "close"),
)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for host."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


class RemoteMedia:
    """How this server fetches media URLs; built only when remote media is turned on.

    A plain class, not a dataclass: Litestar inspects the fields of dataclasses it injects into routes.
    """

    def __init__(
        self,
        hosts: tuple[str, ...] = (),  # allowed host names (*.example.com for subdomains); empty = any public host
        networks: tuple[Network, ...] = (),  # networks allowed although not public (an internal media server)
        timeout: float = 10.0,  # seconds for the whole fetch, redirects included
        *,
        max_redirects: int = 3,
        resolver: Callable[[str, int], list[IPAddress]] = resolve,  # the seam tests use to play DNS tricks
        tls: ssl.SSLContext | None = None,  # None: the system's trusted CAs
    ):
        self.hosts = hosts
        self.networks = networks
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.resolver = resolver
        self.tls = tls

    @classmethod
    def from_settings(cls, settings) -> RemoteMedia | None:
        """None while remote media is off; a bad host or network value is one clear startup error."""
        if not settings.allow_remote_media:
            return None
        try:
            hosts = tuple(normalize_host_pattern(h) for h in settings.remote_media_hosts)
        except ValueError as exc:
            raise GemmacliError(f"--remote-media-host: {exc}") from None
        networks = []
        for value in settings.remote_media_networks:
            try:
                networks.append(ipaddress.ip_network(value.strip(), strict=False))
            except ValueError:
                raise GemmacliError(f"--remote-media-allow-network: {value!r} is not a CIDR network") from None
        return cls(hosts, tuple(networks), settings.remote_media_timeout)

    def fetch(self, url: str, max_bytes: int, param: str) -> bytes:
        """The body at `url` (following up to max_redirects redirects), at most max_bytes; errors are MediaError."""
        deadline = Deadline(self.timeout)
        for hop in range(self.max_redirects + 1):
            try:
                target, address = self.check(url, param)
            except MediaError as exc:
                if hop:  # say so: the client sent a fine URL and may not know where it leads
                    exc.message = f"the URL redirected to {_shown(url)}, which was refused: {exc.message}"
                    exc.args = (exc.message,)
                raise
            try:
                status, location, body = self._get(target, address, deadline, max_bytes, param)
            except MediaError:
                raise
            except Exception as exc:  # every network failure, incl. the watchdog closing the socket
                raise refuse(_network_error(exc, target, deadline, self.timeout), param) from None
            if status not in REDIRECTS:
                return body
            if not location:
                raise refuse(f"{target.host} answered HTTP {status} without a Location header", param)
            if hop == self.max_redirects:
                raise refuse(f"the URL redirected more than {self.max_redirects} times", param)
            url = urljoin(target.url, location)
        raise AssertionError("unreachable")

    def check(self, url: str, param: str) -> tuple[Target, IPAddress]:
        """One hop's URL, parsed, its host allowed and its address pinned; every refusal is a MediaError."""
        target = parse_url(url, param)
        if not host_allowed(target.host, self.hosts):
            raise refuse(f"this server only fetches media from: {', '.join(self.hosts)} (not {target.host})", param)
        if target.ip is not None:
            addresses = [target.ip]
        else:
            try:
                addresses = self.resolver(target.host, target.port)
            except (OSError, UnicodeError, ValueError):
                raise refuse(f"cannot resolve the host {target.host}", param) from None
            if not addresses:
                raise refuse(f"cannot resolve the host {target.host}", param)
        # Refuse when any address is forbidden: a name answering public and private addresses is a trick.
        for ip in addresses:
            if reason := forbidden_reason(ip, self.networks):
                what = "is" if target.ip is not None else "resolves to"
                raise refuse(
                    f"the host {target.host} {what} a {reason} address, which this server does not fetch from", param
                )
        return target, addresses[0]

    def _get(
        self, target: Target, address: IPAddress, deadline: Deadline, max_bytes: int, param: str
    ) -> tuple[int, str | None, bytes]:
        conn = _connection(target, address, deadline.remaining(), self.tls)
        try:
            with deadline.watch(conn):
                conn.connect()
                conn.putrequest("GET", target.path, skip_accept_encoding=True)
                for name, value in HEADERS:
                    conn.putheader(name, value)
                conn.endheaders()
                response = conn.getresponse()
                if response.status in REDIRECTS:
                    return response.status, response.getheader("Location"), b""
                if response.status != 200:
                    raise refuse(f"{target.host} answered HTTP {response.status} {response.reason}".strip(), param)
                return 200, None, _read_capped(response, max_bytes, deadline, param)
        finally:
            conn.close()


class Deadline:
    """The fetch's total time budget, and a watchdog that shuts the connection's socket when it runs out."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("deadline")
        return left

    @contextmanager
    def watch(self, conn: http.client.HTTPConnection) -> Iterator[None]:
        def fire() -> None:
            self.expired = True
            if conn.sock is not None:
                with suppress(OSError):  # the plain socket's shutdown wakes a blocked read at once, TLS or not
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)

        timer = threading.Timer(self.remaining(), fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


def _connection(
    target: Target, address: IPAddress, timeout: float, tls: ssl.SSLContext | None
) -> http.client.HTTPConnection:
    if target.scheme == "https":
        return _PinnedHTTPS(
            target.host, target.port, timeout=timeout, address=address, context=tls or ssl.create_default_context()
        )
    return _PinnedHTTP(target.host, target.port, timeout=timeout, address=address)


class _PinnedHTTP(http.client.HTTPConnection):
    """http.client speaking for `host` (Host header) over a socket connected to the already-checked address."""

    def __init__(self, host: str, port: int, *, timeout: float, address: IPAddress):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self.address), self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, timeout: float, address: IPAddress, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address

    def connect(self) -> None:
        self.sock = sock = socket.create_connection((str(self.address), self.port), self.timeout)
        # The certificate is checked against the URL's host name, sent as SNI too (never the IP we pinned).
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _read_capped(response: http.client.HTTPResponse, max_bytes: int, deadline: Deadline, param: str) -> bytes:
    """The body, refused as soon as it is known to pass max_bytes (declared or while streaming)."""
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise refuse(f"the remote file is {int(declared):,} bytes; the limit is {max_bytes:,}", param)
    chunks, size = [], 0
    while chunk := response.read1(CHUNK):  # read1: one socket read at a time, so the deadline is seen
        size += len(chunk)
        if size > max_bytes:
            raise refuse(f"the remote file is larger than the limit of {max_bytes:,} bytes", param)
        chunks.append(chunk)
        deadline.remaining()
    if deadline.expired:
        raise TimeoutError("deadline")
    return b"".join(chunks)


def _shown(url: str, limit: int = 100) -> str:
    return repr(url if len(url) <= limit else url[:limit] + "...")


def _network_error(exc: Exception, target: Target, deadline: Deadline, timeout: float) -> str:
    """One readable line for a failed fetch; never a stack trace, never a resolved address."""
    if deadline.expired or isinstance(exc, TimeoutError):
        return f"fetching from {target.host} took longer than the {timeout:g} s limit"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {target.host} could not be verified: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {target.host} failed: {exc.reason or 'handshake error'}"
    if isinstance(exc, ConnectionRefusedError):
        return f"{target.host} refused the connection on port {target.port}"
    if isinstance(exc, http.client.HTTPException):
        return f"{target.host} sent an invalid HTTP response ({type(exc).__name__})"
    return f"could not fetch from {target.host}: {type(exc).__name__}"
