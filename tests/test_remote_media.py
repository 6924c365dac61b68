"""RemoteMedia.fetch against a real HTTP server on 127.0.0.1 (tests/support/mediaserver.py): redirects, slow and
oversized bodies, DNS answers that change between lookups, and what actually reaches the wire.

127.0.0.1/32 is allowed the way an operator would allow an internal media server; every other internal
address stays forbidden. DNS is the one thing played: `resolver` is the seam where names become addresses."""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import quote

import pytest
from support.mediaserver import PNG, MediaServer

from gemmacli.errors import MediaError
from gemmacli.server.remote_media import RemoteMedia

P = "messages[0].content[0].image_url"
LOCAL = (ipaddress.ip_network("127.0.0.1/32"),)
CAP = 50_000


@pytest.fixture(scope="module")
def media():
    with MediaServer() as server:
        yield server


def fetcher(**kw) -> RemoteMedia:
    return RemoteMedia(**{"networks": LOCAL, "timeout": 5.0, **kw})


def refused(fetch: RemoteMedia, url: str, cap: int = CAP) -> str:
    with pytest.raises(MediaError) as err:
        fetch.fetch(url, cap, P)
    assert err.value.param == P and "\n" not in err.value.message
    return err.value.message


class DNS:
    """A resolver that answers from a script, one answer per lookup, and counts the lookups."""

    def __init__(self, *answers: list[str]):
        self.answers, self.lookups = list(answers), []

    def __call__(self, host: str, port: int):
        self.lookups.append(host)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [ipaddress.ip_address(a) for a in answer]


def test_a_png_is_fetched_byte_for_byte_with_the_urls_host_header(media):
    assert fetcher().fetch(media.url("/red.png"), CAP, P) == PNG
    assert media.seen[-1] == ("/red.png", f"127.0.0.1:{media.port}")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_three_relative_redirects_are_followed(media, status):
    assert fetcher().fetch(media.url(f"/chain?n=3&status={status}"), CAP, P) == PNG


REDIRECT_LIMITS = {"four-redirects": "/chain?n=4", "redirect-loop": "/loop"}


@pytest.mark.parametrize("path", REDIRECT_LIMITS.values(), ids=REDIRECT_LIMITS.keys())
def test_redirect_chains_and_loops_stop_after_three(media, path):
    before = len(media.seen)
    assert "redirected more than 3 times" in refused(fetcher(), media.url(path))
    assert len(media.seen) - before == 4  # the URL and three redirects, then no more requests


REDIRECT_TARGETS = {
    "to-metadata": ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    "to-metadata-v6": ("http://[fd00:ec2::254]/latest/", "cloud metadata"),
    "to-other-loopback": ("http://127.0.0.2/", "loopback"),
    "to-ipv6-loopback": ("http://[::1]/", "loopback"),
    "to-mapped-loopback": ("http://[::ffff:127.0.0.2]/", "loopback"),
    "to-private": ("http://10.0.0.1/admin", "private"),
    "to-cgnat": ("http://100.64.0.1/", "carrier-grade NAT"),
    "to-unspecified": ("http://0.0.0.0/", "unspecified"),
    "to-decimal-ip": ("http://2130706433/", "ambiguous numeric"),
    "to-file": ("file:///etc/passwd", "only http"),
    "to-gopher": ("gopher://127.0.0.1:6379/_INFO", "only http"),
    "to-userinfo": ("http://user@127.0.0.1/", "user name"),
    "to-backslash": ("http://127.0.0.1\\@169.254.169.254/", "backslash"),
}


@pytest.mark.parametrize(("location", "says"), REDIRECT_TARGETS.values(), ids=REDIRECT_TARGETS.keys())
def test_every_redirect_hop_is_checked_again(media, location, says):
    before = len(media.seen)
    message = refused(fetcher(), media.url(f"/to?url={quote(location, safe='')}"))
    assert "redirected to" in message and says in message
    assert len(media.seen) - before == 1  # nothing was requested after the redirect


def test_internal_addresses_are_refused_before_connecting_unless_allowed(media):
    before = len(media.seen)
    assert "loopback" in refused(RemoteMedia(timeout=5), media.url("/red.png"))
    assert "loopback" in refused(fetcher(), media.url("/red.png", host="[::ffff:127.0.0.2]"))
    assert len(media.seen) == before


def test_a_trickling_body_stops_at_the_deadline(media):
    started = time.monotonic()
    assert "longer than the 1 s limit" in refused(fetcher(timeout=1), media.url("/slow?seconds=10"))
    assert time.monotonic() - started < 2.5


def test_trickling_headers_stop_at_the_deadline(media):
    started = time.monotonic()
    assert "longer than the 1 s limit" in refused(fetcher(timeout=1), media.url("/slow-headers?seconds=10"))
    assert time.monotonic() - started < 2.5


def test_the_byte_cap_holds_while_streaming_and_on_the_declared_length(media):
    assert "larger than the limit of 50,000 bytes" in refused(fetcher(), media.url("/big?size=5000000"))
    assert "is 9,999,999,999 bytes; the limit is 50,000" in refused(
        fetcher(), media.url("/big-declared?size=9999999999")
    )
    assert len(fetcher().fetch(media.url(f"/big?size={CAP}"), CAP, P)) == CAP  # exactly the cap is fine


ANSWERS = {
    "status-404": ("/status?code=404", "answered HTTP 404"),
    "status-500": ("/status?code=500", "answered HTTP 500"),
    "status-204": ("/status?code=204", "answered HTTP 204"),
    "redirect-without-location": ("/no-location", "without a Location"),
}


@pytest.mark.parametrize(("path", "says"), ANSWERS.values(), ids=ANSWERS.keys())
def test_answers_other_than_200_are_refused(media, path, says):
    assert says in refused(fetcher(), media.url(path))


def test_network_failures_are_one_line_each(media):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert "refused the connection" in refused(fetcher(), f"http://127.0.0.1:{closed}/a.png")
    # TLS spoken to a plain HTTP server: the handshake fails, the client hears why.
    assert "TLS with 127.0.0.1 failed" in refused(fetcher(), f"https://127.0.0.1:{media.port}/red.png")
    failing = DNS([])
    assert "cannot resolve the host nowhere.test" in refused(fetcher(resolver=failing), "http://nowhere.test/a.png")


def test_the_connection_is_pinned_to_the_checked_address(media):
    # A rebinding name: the first lookup says 127.0.0.1 (allowed), any later one says 10.0.0.1 (forbidden).
    dns = DNS(["127.0.0.1"], ["10.0.0.1"])
    assert fetcher(resolver=dns).fetch(f"http://media.test:{media.port}/red.png", CAP, P) == PNG
    assert dns.lookups == ["media.test"]  # looked up once: the connection went to the checked address
    assert media.seen[-1] == ("/red.png", f"media.test:{media.port}")  # while speaking for the name


def test_a_name_with_any_forbidden_address_is_refused(media):
    before = len(media.seen)
    message = refused(fetcher(resolver=DNS(["127.0.0.1", "10.0.0.1"])), f"http://media.test:{media.port}/red.png")
    assert "media.test resolves to a private address" in message and "10.0.0.1" not in message
    assert len(media.seen) == before


def test_a_redirect_to_a_name_is_resolved_and_checked_again(media):
    dns = DNS(["10.0.0.1"])
    hop = quote(f"http://internal.test:{media.port}/red.png", safe="")
    message = refused(fetcher(resolver=dns), media.url(f"/to?url={hop}"))
    assert "internal.test resolves to a private address" in message and dns.lookups == ["internal.test"]


def test_the_host_allow_list_applies_to_every_hop(media):
    dns = DNS(["127.0.0.1"])
    only = fetcher(hosts=("media.test",), resolver=dns)
    assert only.fetch(f"http://media.test:{media.port}/chain?n=2", CAP, P) == PNG  # relative hops stay on it
    assert "only fetches media from: media.test (not 127.0.0.1)" in refused(only, media.url("/red.png"))
    hop = quote(f"http://other.test:{media.port}/red.png", safe="")
    message = refused(only, f"http://media.test:{media.port}/to?url={hop}")
    assert "redirected to" in message and "not other.test" in message
