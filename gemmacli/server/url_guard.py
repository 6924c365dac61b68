"""What a remote media URL may name: strict URL parsing and the address classes a server must never reach.

Parsing is deliberately narrower than browsers and HTTP libraries: anything two parsers could read two
ways (backslashes, userinfo, percent-encoded or numeric-shorthand hosts, non-ASCII) is refused, and the
connection is later made from exactly the parts checked here, so no second parser ever sees the URL.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gemmacli.errors import MediaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}
# Cloud instance-metadata endpoints: refused even inside a network allowed with --remote-media-allow-network.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200", "192.0.0.192")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


@dataclass(frozen=True)
class Target:
    """One checked URL: the connection is made from these fields and nothing else."""

    scheme: str  # "http" or "https"
    host: str  # lowercase name without trailing dot, or an IP literal (IPv6 without brackets)
    port: int
    path: str  # path and query, never empty; the fragment is dropped (it never goes on the wire)
    ip: IPAddress | None  # set when the host is an IP literal

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"


def refuse(message: str, param: str) -> MediaError:
    return MediaError(message, param=param)


def parse_url(url: str, param: str) -> Target:
    """The one parse of a media URL; every ambiguity is a 400 naming `param`."""
    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"the URL is longer than {MAX_URL_LENGTH} characters", param)
    if not url.isascii():
        raise refuse(
            "the URL has non-ASCII characters: percent-encode the path, and write an international "
            "domain name in its xn-- (punycode) form",
            param,
        )
    if "\\" in url:
        raise refuse("the URL has a backslash, which HTTP clients disagree about; use '/'", param)
    if any(c <= " " or c == "\x7f" for c in url):
        raise refuse("the URL has whitespace or control characters; percent-encode them", param)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed or invalid [IPv6] host
        raise refuse("the URL's IPv6 address is malformed", param) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not url[len(scheme) :].startswith("://"):
        shown = f"{scheme}:" if scheme else "a scheme-relative URL"
        raise refuse(f"only http:// and https:// media URLs can be fetched, not {shown}", param)
    if "@" in parts.netloc:
        raise refuse("the URL has a user name or password (user@host), which is not accepted", param)
    host, port = _split_netloc(parts.netloc, scheme, param)
    ip = _ip_literal(host, param)
    path = parts.path or "/"
    return Target(scheme, str(ip) if ip else host, port, path + (f"?{parts.query}" if parts.query else ""), ip)


def _split_netloc(netloc: str, scheme: str, param: str) -> tuple[str, str | int]:
    if netloc.startswith("["):
        host, sep, rest = netloc[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise refuse("the URL's IPv6 address is malformed", param)
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = netloc.rpartition(":") if ":" in netloc else (netloc, "", None)
        if ":" in host:
            raise refuse(f"the URL's host {host!r} is not a valid host name (IPv6 addresses go in [brackets])", param)
    if port_text is None:
        return host.lower(), DEFAULT_PORTS[scheme]
    if not _PORT.match(port_text) or not 0 < int(port_text) < 65536:
        raise refuse(f"the URL's port {port_text!r} is not a number from 1 to 65535", param)
    return host.lower(), int(port_text)


def _ip_literal(host: str, param: str) -> IPAddress | None:
    """An IP literal in canonical form, None for a DNS name; shorthand like 127.1 or 0x7f.0.0.1 is refused."""
    if not host:
        raise refuse("the URL has no host", param)
    if ":" in host:  # only bracketed IPv6 gets here with a colon
        if "%" in host:
            raise refuse("IPv6 zone ids (%) are not accepted in media URLs", param)
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse("the URL's IPv6 address is malformed", param) from None
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise refuse(f"the URL's host {host!r} is not a valid host name (letters, digits, '-' and '.')", param)
    if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(name)  # dotted quad only: no octal, hex, or fewer than four parts
        except ValueError:
            raise refuse(
                f"the URL's host {host!r} is an ambiguous numeric address; write an IPv4 address as "
                "four decimal numbers",
                param,
            ) from None
    return None


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Exact names, or `*.example.com` for any subdomain of example.com; an empty list allows every host."""
    if not allowed:
        return True
    host = host.removesuffix(".")
    return any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allowed)


def normalize_host_pattern(pattern: str) -> str:
    """A --remote-media-host value in the form host_allowed compares against (lowercase, IPv6 canonical)."""
    value = pattern.strip().lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    name = value.removeprefix("*.")
    if not value or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{pattern!r} is not a host name (example.com or *.example.com)")
    return value


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, NAT64, IPv4-compatible), which is where it leads."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_class(ip: IPAddress) -> str | None:
    """Why a server must not connect to `ip` (e.g. "loopback"), or None for a public address."""
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("shared (carrier-grade NAT)", ip.version == 4 and ip in _CGNAT),
        ("unique local", ip.version == 6 and ip in _ULA),
        ("private", ip.is_private and not ip.is_reserved),
        ("site-local", ip.version == 6 and ip.is_site_local),
        ("reserved", ip.is_reserved),
        ("not publicly routable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def forbidden_reason(ip: IPAddress, allowed_networks: tuple[Network, ...] = ()) -> str | None:
    """None when the server may connect to `ip`; else the class of address that forbids it.

    An IPv6 form wrapping an IPv4 address is judged by the IPv4 address it leads to. Networks the
    operator allowed win over every class except cloud metadata.
    """
    inner = _embedded_ipv4(ip)
    judged = inner or ip
    if ip in METADATA_ADDRESSES or judged in METADATA_ADDRESSES:
        return "cloud metadata"
    if any(a in net for a in (ip, judged) for net in allowed_networks if a.version == net.version):
        return None
    reason = address_class(judged)
    if reason is None and inner is not None and ip.ipv4_mapped is None and ip not in _NAT64:
        reason = address_class(ip)  # 6to4 and IPv4-compatible forms must pass as IPv6 addresses too
    return reason
