"""Outbound HTTP to URLs that callers gave us (webhooks, alert channels), guarded against SSRF.

A URL must be HTTPS and every address its host resolves to must be public: not loopback,
private, link-local (cloud metadata at 169.254.169.254), shared, reserved or multicast. The
check runs at registration and again at each delivery, and the connection is opened to the
very address that was checked (TLS still verifies the hostname), so DNS rebinding between the
check and the connect cannot redirect it. `allow_loopback` (development and tests only) also
permits plain HTTP and loopback addresses.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]
#: Response bytes kept for the attempt record.
BODY_LIMIT = 2000


class EgressRefusedError(ValueError):
    """A URL we will not call: wrong scheme, credentials in it, or a non-public address."""


class EgressFailedError(ConnectionError):
    """The call did not produce an HTTP response: refused, reset, timed out, TLS failure."""


@dataclass(frozen=True)
class Target:
    """A checked URL, split for connecting to an address while speaking to the hostname."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        """The Host header: the name, with the port only when it is not the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


@dataclass(frozen=True)
class Response:
    """What came back: status, headers, the start of the body, how long it took, from where."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    latency_ms: float
    address: str


def parse(url: str, *, allow_loopback: bool) -> Target:
    """Check a URL's form (scheme, no credentials, a host and a valid port)."""
    parts = urlsplit(url.strip())
    allowed = ("https", "http") if allow_loopback else ("https",)
    if parts.scheme not in allowed:
        raise EgressRefusedError("the URL must use https")
    if parts.username or parts.password:
        raise EgressRefusedError("the URL must not carry credentials")
    if not parts.hostname:
        raise EgressRefusedError("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EgressRefusedError("the URL's port is not valid") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address (they reach it)."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _public(address: Address, allow_loopback: bool) -> bool:
    address = _embedded(address)
    if allow_loopback and address.is_loopback:
        return True
    return address.is_global and not address.is_multicast


def resolve(target: Target, *, allow_loopback: bool, resolver: Resolver = socket.getaddrinfo) -> list[Address]:
    """Every address the host resolves to, all of them public, or EgressRefusedError."""
    try:
        infos = resolver(target.host, target.port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise EgressRefusedError(f"the host {target.host!r} is not a valid name") from None
    except socket.gaierror:  # may be a passing DNS failure: retried at delivery, refused at registration
        raise EgressFailedError(f"the host {target.host!r} does not resolve") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise EgressRefusedError(f"the host {target.host!r} does not resolve")
    for address in addresses:
        if not _public(address, allow_loopback):
            raise EgressRefusedError(f"the host {target.host!r} resolves to a non-public address ({address})")
    return addresses


def check(url: str, *, allow_loopback: bool, resolver: Resolver = socket.getaddrinfo) -> None:
    """Refuse a URL that is not HTTPS to public addresses, or whose host does not resolve (at registration)."""
    try:
        resolve(parse(url, allow_loopback=allow_loopback), allow_loopback=allow_loopback, resolver=resolver)
    except EgressFailedError as exc:
        raise EgressRefusedError(str(exc)) from None


_POOLS: OrderedDict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = OrderedDict()
_MAX_POOLS = 256


def _pool(target: Target, address: Address) -> urllib3.HTTPConnectionPool:
    """A keep-alive pool per (checked address, hostname): reused connections go where the check said."""
    key = (target.scheme, str(address), target.port, target.host)
    pool = _POOLS.get(key)
    if pool is None:
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(str(address), target.port, maxsize=2, retries=False,
                                               server_hostname=target.host, assert_hostname=target.host,
                                               cert_reqs="CERT_REQUIRED")
        else:
            pool = urllib3.HTTPConnectionPool(str(address), target.port, maxsize=2, retries=False)
        _POOLS[key] = pool
        while len(_POOLS) > _MAX_POOLS:
            _POOLS.popitem(last=False)[1].close()
    _POOLS.move_to_end(key)
    return pool


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float, allow_loopback: bool,
         resolver: Resolver = socket.getaddrinfo) -> Response:
    """POST the body to a checked public address; redirects are returned, never followed."""
    target = parse(url, allow_loopback=allow_loopback)
    address = resolve(target, allow_loopback=allow_loopback, resolver=resolver)[0]
    started = time.perf_counter()
    try:
        reply = _pool(target, address).urlopen(
            "POST", target.path, body=body, headers={**headers, "Host": target.host_header},
            redirect=False, retries=False, preload_content=False, assert_same_host=False,
            timeout=urllib3.Timeout(total=timeout))
        data = reply.read(BODY_LIMIT)
        if reply.length_remaining is not None and reply.length_remaining <= 64 * 1024:
            reply.drain_conn()  # a short rest: read it so the connection can be reused
        else:
            reply.close()  # an endless or large body: drop the connection instead of reading it
        reply.release_conn()
    except HTTPError as exc:
        raise EgressFailedError(_describe(exc)) from None
    latency = (time.perf_counter() - started) * 1000
    return Response(reply.status, dict(reply.headers), data, latency, str(address))


def _describe(exc: HTTPError) -> str:
    """What went wrong, without the URL (its path or query may carry a token)."""
    for kind, text in ((ConnectTimeoutError, "connect timed out"), (ReadTimeoutError, "read timed out"),
                       (NewConnectionError, "connection refused or unreachable"), (SSLError, "TLS failed"),
                       (ProtocolError, "connection broken")):
        if isinstance(exc, kind):
            return f"{type(exc).__name__}: {text}"
    return type(exc).__name__


def retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
