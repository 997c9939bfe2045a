"""Where webhooks may be sent: public https addresses only (server-side request forgery).

A URL is checked when an endpoint is created or changed, and again before every delivery:
DNS may answer differently by then (DNS rebinding), so a delivery resolves the host, checks
every address, and connects to the checked address itself (the `Host` header and TLS server
name stay the URL's host, so certificates are verified as usual). With
`WEBHOOK_ALLOW_PRIVATE_URLS` (tests, local use) nothing is refused and plain http is allowed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

from app.core.errors import WebhookUrlNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_SECONDS = 5.0

# Cloud metadata services; link-local and private ranges cover them, named here all the same.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


def is_public(address: IPAddress) -> bool:
    """Whether a webhook may be sent to `address`: a global unicast address, not loopback,
    private, link-local, multicast, unspecified, reserved or a metadata service."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return not (
        address in METADATA_ADDRESSES
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or not address.is_global
    )


def split_url(url: str, *, allow_private: bool) -> SplitResult:
    """`url` taken apart; its scheme (https, or http when allowed) and host checked."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise WebhookUrlNotAllowed("The webhook URL is not a valid URL.") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise WebhookUrlNotAllowed("A webhook URL must use https.")
    if not parts.hostname:
        raise WebhookUrlNotAllowed("A webhook URL must name a host.")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlNotAllowed("A webhook URL must not carry credentials.")
    return parts


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal: itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookUrlNotAllowed(f"The webhook URL's host {host!r} does not resolve.") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookUrlNotAllowed(f"The webhook URL's host {host!r} does not resolve.")
    return addresses


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse (`WebhookUrlNotAllowed`) a URL webhooks may not be sent to."""
    await pin(url, allow_private=allow_private)


@dataclass(frozen=True, slots=True)
class PinnedUrl:
    """A request to a checked address: send to `url`, with these headers and extensions."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


async def pin(url: str, *, allow_private: bool) -> PinnedUrl:
    """`url` resolved and checked, addressed to its first checked address."""
    parts = split_url(url, allow_private=allow_private)
    if allow_private:
        return PinnedUrl(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolve(host, port)
    refused = [a for a in addresses if not is_public(a)]
    if refused:
        raise WebhookUrlNotAllowed(
            f"The webhook URL's host resolves to a non-public address ({refused[0]})."
        )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rpartition("@")[2]
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return PinnedUrl(urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header}, extensions)
