"""url_guard: the strict parse of media URLs and the classes of addresses a server must never reach.
Pure functions, no network."""

from __future__ import annotations

import ipaddress

import pytest

from gemmacli.errors import GemmacliError, MediaError
from gemmacli.server.remote_media import RemoteMedia
from gemmacli.server.settings import ServerSettings
from gemmacli.server.url_guard import forbidden_reason, host_allowed, normalize_host_pattern, parse_url

P = "messages[0].content[0].image_url"

BAD_URLS = {
    "file-scheme": ("file:///etc/passwd", "only http"),
    "file-scheme-host": ("file://localhost/etc/passwd", "only http"),
    "ftp-scheme": ("ftp://example.com/a.png", "only http"),
    "gopher-scheme": ("gopher://example.com:70/_GET%20/", "only http"),
    "dict-scheme": ("dict://127.0.0.1:6379/info", "only http"),
    "javascript-scheme": ("javascript:alert(1)", "only http"),
    "scheme-relative": ("//example.com/a.png", "scheme-relative"),
    "no-scheme": ("example.com/a.png", "only http"),
    "one-slash": ("http:/example.com/a.png", "only http"),
    "no-slashes": ("http:example.com/a.png", "only http"),
    "userinfo": ("http://user@example.com/a.png", "user name"),
    "userinfo-password": ("http://user:pass@example.com/a.png", "user name"),
    "userinfo-confusion": ("http://example.com@169.254.169.254/", "user name"),
    "userinfo-encoded-at": ("http://example.com%40evil.com/", "not a valid host"),
    "backslash-at (CVE-2026-24779)": ("http://example.com\\@169.254.169.254/", "backslash"),
    "backslash-path": ("http://example.com\\a.png", "backslash"),
    "backslash-slashes": ("http:\\\\example.com/a.png", "backslash"),
    "cyrillic-host": ("http://exаmple.com/a.png", "non-ASCII"),
    "fullwidth-dot": ("http://example。com/a.png", "non-ASCII"),
    "fullwidth-digits": ("http://１２７.0.0.1/", "non-ASCII"),
    "non-ascii-path": ("http://example.com/bild-ä.png", "non-ASCII"),
    "percent-host": ("http://%31%32%37.0.0.1/", "not a valid host"),
    "percent-dot-host": ("http://example%2Ecom/", "not a valid host"),
    "decimal-ip": ("http://2130706433/", "ambiguous numeric"),
    "hex-ip": ("http://0x7f000001/", "ambiguous numeric"),
    "octal-ip": ("http://0177.0.0.1/", "ambiguous numeric"),
    "short-ip": ("http://127.1/", "ambiguous numeric"),
    "hex-dotted-ip": ("http://0x7f.0.0.1/", "ambiguous numeric"),
    "zero-padded-ip": ("http://127.000.000.001/", "ambiguous numeric"),
    "five-part-ip": ("http://1.2.3.4.5/", "ambiguous numeric"),
    "tab-in-host": ("http://exa\tmple.com/", "whitespace"),
    "crlf-injection": ("http://example.com/a.png\r\nX-Injected: 1", "whitespace"),
    "space-in-path": ("http://example.com/a b.png", "whitespace"),
    "nul-byte": ("http://example.com/\x00.png", "control"),
    "del-char": ("http://example.com/\x7f.png", "control"),
    "leading-space": (" http://example.com/a.png", "whitespace"),
    "empty-host": ("http:///a.png", "no host"),
    "port-letters": ("http://example.com:80a/", "port"),
    "port-zero": ("http://example.com:0/", "port"),
    "port-too-big": ("http://example.com:65536/", "port"),
    "port-plus-sign": ("http://example.com:+80/", "port"),
    "port-empty": ("http://example.com:/", "port"),
    "two-ports": ("http://example.com:80:81/", "not a valid host"),
    "ipv6-zone-id": ("http://[fe80::1%25eth0]/", "zone"),
    "ipv6-unclosed": ("http://[::1/a.png", "malformed"),
    "ipv6-garbage": ("http://[zz::1]/", "malformed"),
    "ipv6-junk-after": ("http://[::1]x/", "malformed"),
    "ipv6-unbracketed": ("http://::1/", "not a valid host"),
    "underscore-host": ("http://a_b.example.com/", "not a valid host"),
    "leading-hyphen": ("http://-example.com/", "not a valid host"),
    "empty-label": ("http://example..com/", "not a valid host"),
    "label-too-long": (f"http://{'a' * 64}.com/", "not a valid host"),
    "url-too-long": ("http://example.com/" + "a" * 9000, "longer than"),
}


@pytest.mark.parametrize(("url", "says"), BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_urls_are_refused_with_a_clear_message(url, says):
    with pytest.raises(MediaError) as err:
        parse_url(url, P)
    assert err.value.param == P and says in err.value.message
    assert "Traceback" not in err.value.message and "\n" not in err.value.message


GOOD_URLS = {
    "upper-case scheme and host": ("HTTP://Example.COM/a.png", ("http", "example.com", 80, "/a.png")),
    "port, query, fragment": ("https://example.com:8443/p?q=1&r=2#frag", ("https", "example.com", 8443, "/p?q=1&r=2")),
    "no path": ("http://example.com", ("http", "example.com", 80, "/")),
    "ipv6 literal": ("http://[2606:4700:0::1111]:8080/x", ("http", "2606:4700::1111", 8080, "/x")),
    "ipv4 literal": ("https://8.8.8.8/x.png", ("https", "8.8.8.8", 443, "/x.png")),
    "punycode": ("http://xn--80ak6aa92e.com/a.png", ("http", "xn--80ak6aa92e.com", 80, "/a.png")),
    "percent-encoded path": ("http://example.com/a%20b.png", ("http", "example.com", 80, "/a%20b.png")),
    "trailing dot": ("http://example.com./a.png", ("http", "example.com.", 80, "/a.png")),
}


@pytest.mark.parametrize(("url", "expected"), GOOD_URLS.values(), ids=GOOD_URLS.keys())
def test_good_urls_parse_to_exactly_what_is_connected_to(url, expected):
    target = parse_url(url, P)
    assert (target.scheme, target.host, target.port, target.path) == expected
    assert parse_url(target.url, P) == target  # what redirects are resolved against round-trips


FORBIDDEN = {
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "0.0.0.0": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.0.1": "private",
    "169.254.1.1": "link-local",
    "169.254.169.254": "cloud metadata",
    "168.63.129.16": "cloud metadata",
    "100.100.100.200": "cloud metadata",
    "100.64.0.1": "shared (carrier-grade NAT)",
    "100.127.255.254": "shared (carrier-grade NAT)",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.10": "private",
    "198.18.0.1": "private",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "unique local",
    "fd12:3456::1": "unique local",
    "fd00:ec2::254": "cloud metadata",
    "ff02::1": "multicast",
    "fec0::1": "site-local",
    "2001:db8::1": "private",
    "100::1": "reserved",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "cloud metadata",
    "::ffff:100.64.0.1": "shared (carrier-grade NAT)",
    "2002:7f00:1::": "loopback",
    "2002:c0a8:101::": "private",
    "2002:a9fe:a9fe::1": "cloud metadata",
    "64:ff9b::7f00:1": "loopback",
    "64:ff9b::a9fe:a9fe": "cloud metadata",
    "::127.0.0.1": "loopback",
    "::8.8.8.8": "reserved",
}


@pytest.mark.parametrize(("address", "reason"), FORBIDDEN.items(), ids=FORBIDDEN.keys())
def test_every_internal_address_class_is_refused(address, reason):
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address):
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_an_allowed_network_opens_exactly_that_network_but_never_metadata():
    nets = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("169.254.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "169.254.1.1", "fd00:1::1"):
        assert forbidden_reason(ipaddress.ip_address(address), nets) is None, address
    assert forbidden_reason(ipaddress.ip_address("127.0.0.2"), nets) == "loopback"
    for metadata in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert forbidden_reason(ipaddress.ip_address(metadata), nets) == "cloud metadata"


def test_host_allow_list_exact_names_and_subdomain_wildcards():
    allowed = (normalize_host_pattern("Images.Example.com."), normalize_host_pattern("*.cdn.example.net"))
    assert allowed == ("images.example.com", "*.cdn.example.net")
    assert host_allowed("images.example.com", allowed) and host_allowed("images.example.com.", allowed)
    assert host_allowed("a.b.cdn.example.net", allowed)
    for host in ("example.com", "cdn.example.net", "evilcdn.example.net", "images.example.com.evil.org"):
        assert not host_allowed(host, allowed), host
    assert host_allowed("anything.org", ())  # empty: any host (still only public addresses)
    assert normalize_host_pattern("[::1]") == "::1"


@pytest.mark.parametrize(
    "pattern",
    ["", "exa mple.com", "http://example.com", "a_b.com", "*"],
    ids=["empty", "space", "url", "underscore", "bare-star"],
)
def test_bad_host_patterns_are_a_startup_error(pattern):
    with pytest.raises(GemmacliError, match="--remote-media-host"):
        RemoteMedia.from_settings(ServerSettings(allow_remote_media=True, remote_media_hosts=(pattern,)))


@pytest.mark.parametrize(
    "network",
    ["10.0.0.0/33", "localhost", "10.0.0.0/8/8", ""],
    ids=["prefix-too-long", "name", "two-prefixes", "empty"],
)
def test_bad_allowed_networks_are_a_startup_error(network):
    with pytest.raises(GemmacliError, match="--remote-media-allow-network"):
        RemoteMedia.from_settings(ServerSettings(allow_remote_media=True, remote_media_networks=(network,)))


def test_remote_media_is_off_unless_asked():
    assert RemoteMedia.from_settings(ServerSettings()) is None
    on = RemoteMedia.from_settings(
        ServerSettings(allow_remote_media=True, remote_media_networks=("10.1.0.0/16",), remote_media_timeout=3)
    )
    assert on.networks == (ipaddress.ip_network("10.1.0.0/16"),) and on.timeout == 3 and on.hosts == ()
