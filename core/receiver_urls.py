"""Which webhook receiver URLs custody will post to (server-side request forgery guard).

Checked twice: when an endpoint is registered (form, scheme, literal addresses and well-known
metadata names: no DNS lookup in the API) and before every attempt, on the addresses the name
resolves to then; the request is then made to that checked address (the name goes in `Host` and
TLS SNI), so a DNS answer that changes between check and connect (rebinding) reaches nothing else.

- Always refused: link-local addresses (169.254.0.0/16, fe80::/10: cloud instance metadata lives
  there), other metadata addresses (fd00:ec2::254, 100.100.100.200), unspecified and multicast.
- Refused unless local receivers are allowed (`CUSTODY_WEBHOOKS__ALLOW_LOCAL_RECEIVERS`, on by
  default outside production, since dev and tests post to 127.0.0.1): loopback, private,
  shared (100.64.0.0/10) and reserved addresses: anything that is not globally routable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from core.errors import InvalidWebhookUrl

MAX_URL_LENGTH = 2048
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_refusal(ip: IPAddress, allow_local: bool) -> str | None:
    """Why custody will not post to `ip`, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip in METADATA_ADDRESSES:
        return "a link-local or cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return "an unspecified or multicast address"
    if not ip.is_global and not allow_local:
        return "a loopback, private or reserved address (local receivers are not allowed here)"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def check_receiver_url(url: str, *, allow_local: bool) -> str:
    """The URL as it will be stored; InvalidWebhookUrl saying what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidWebhookUrl("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidWebhookUrl("the URL is not well-formed (bad port or brackets)") from e
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("only http and https receivers are supported")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidWebhookUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("credentials in the URL are not accepted (they would be shown with the endpoint)")
    if port == 0:
        raise InvalidWebhookUrl("port 0 is not a receiver")
    ip = _literal(host)
    if ip is not None:
        refusal = address_refusal(ip, allow_local)
        if refusal:
            raise InvalidWebhookUrl(f"the receiver is {refusal}")
    elif host in METADATA_HOSTS or (host.startswith("metadata.") and host.endswith(".internal")):
        raise InvalidWebhookUrl("the receiver is a cloud metadata service")
    elif (host == "localhost" or host.endswith(".localhost")) and not allow_local:
        raise InvalidWebhookUrl("the receiver is a loopback address (local receivers are not allowed here)")
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))


@dataclass(frozen=True)
class PinnedReceiver:
    """Where to connect (the checked address), and the name the receiver expects."""

    url: str  # the receiver URL with its host replaced by the checked address
    host_header: str
    sni_hostname: str | None  # https to a name: the certificate is checked against it


class ReceiverRefused(Exception):
    """The receiver resolves to an address custody does not post to (or does not resolve)."""


async def pin_receiver(url: str, *, allow_local: bool) -> PinnedReceiver:
    """Resolve the receiver's host now and check every address it has; raises ReceiverRefused."""
    try:
        check_receiver_url(url, allow_local=allow_local)
    except InvalidWebhookUrl as e:
        raise ReceiverRefused(e.message) from e
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ReceiverRefused(f"the receiver's host does not resolve ({type(e).__name__})") from e
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
        if not addresses:
            raise ReceiverRefused("the receiver's host has no address")
    for address in addresses:
        refusal = address_refusal(address, allow_local)
        if refusal:
            raise ReceiverRefused(f"the receiver's host resolves to {refusal}")
    chosen = addresses[0]
    netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    if parts.port is not None:
        netloc += f":{parts.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    sni = host if parts.scheme == "https" and literal is None else None
    return PinnedReceiver(url=urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host_header=host_header, sni_hostname=sni)
