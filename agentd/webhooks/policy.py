"""Which webhook URLs a run may name. Checked when the run is created (422) and again before
every delivery attempt, so a host name re-pointed at an internal address after creation (DNS
rebinding) is refused too; the sender then connects to the very address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from agentd.config import WebhookUrlPolicy
from agentd.schemas import Unprocessable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
DNS_TIMEOUT = 3.0

# Instance metadata services (AWS, ECS, GCP/Azure share the first; Alibaba): never a target,
# whatever the policy, because they hand out the server's cloud credentials.
_METADATA = {ipaddress.ip_address(a) for a in
             ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")}  # fmt: skip


def _nets(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


_NETS = {
    "loopback": _nets("127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128"),  # 0.0.0.0 and :: too
    "link-local": _nets("169.254.0.0/16", "fe80::/10"),
    "private": _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"),
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebhookRefused(Unprocessable):
    """The URL breaks the policy: a 422 at run creation, a logged refusal at send time."""


class WebhookUnresolved(WebhookRefused):
    """The host name did not resolve (in time): at send time this is worth retrying."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    host: str  # ASCII (IDNA) host name or IP literal, as it goes in the Host header
    addresses: tuple[str, ...]  # every address the host resolved to, all of them allowed

    def pinned(self) -> httpx.URL:
        """The URL with its host replaced by the checked address: no second lookup."""
        return self.url.copy_with(host=self.addresses[0])


def classify(ip: IPAddress) -> str:
    """``public``, ``loopback``, ``link-local``, ``private``, ``metadata`` or ``reserved``."""
    ip = _embedded_ipv4(ip)
    if ip in _METADATA:
        return "metadata"
    for kind, nets in _NETS.items():
        if any(ip in net for net in nets):
            return kind
    if ip.is_multicast or not ip.is_global:
        return "reserved"
    return "public"


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is judged by it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses, through the event loop's resolver (off the loop's thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class UrlPolicy:
    def __init__(self, rules: WebhookUrlPolicy, *, resolver: Resolver = resolve):
        self.rules = rules
        self.resolver = resolver

    async def check(self, raw: str) -> Target:
        """The URL's target with every address it resolves to, or ``WebhookRefused``."""
        url, host, port = self._parse(raw)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        elif host == "localhost" or host.endswith(".localhost"):
            addresses = ["127.0.0.1"]  # RFC 6761: always the local host, whatever DNS says
        else:
            addresses = await self._resolve(host, port)
        for address in addresses:
            self._check_address(host, ipaddress.ip_address(address))
        return Target(url, host, tuple(addresses))

    def _parse(self, raw: str) -> tuple[httpx.URL, str, int]:
        rules = self.rules
        if len(raw) > rules.max_url_length:
            raise WebhookRefused(
                f"Webhook URL is too long ({len(raw)} characters; the limit is "
                f"{rules.max_url_length}, webhooks.url.max_url_length)"
            )
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
            raise WebhookRefused("Webhook URL must not contain spaces or control characters")
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, ValueError) as exc:
            raise WebhookRefused(f"Webhook URL is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") and url.scheme:
            raise WebhookRefused(f"Webhook URL scheme must be http or https, not {url.scheme!r}")
        if not url.scheme or not url.raw_host:
            raise WebhookRefused(
                "Webhook URL must be an absolute http:// or https:// URL; relative URLs "
                "are not supported"
            )
        if rules.require_https and url.scheme != "https":
            raise WebhookRefused("Webhook URL must use https (webhooks.url.require_https)")
        host = url.raw_host.decode("ascii").rstrip(".")
        port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
        if not 0 < port < 65536:
            raise WebhookRefused(f"Webhook URL port {port} is not a valid port")
        if rules.allowed_ports and port not in rules.allowed_ports:
            allowed = ", ".join(map(str, rules.allowed_ports))
            raise WebhookRefused(f"Webhook URL port {port} is not allowed (allowed: {allowed}; "
                                 "webhooks.url.allowed_ports)")  # fmt: skip
        if rules.allowed_domains and not any(_matches(host, d) for d in rules.allowed_domains):
            raise WebhookRefused(f"Webhook host {host!r} is not in webhooks.url.allowed_domains")
        return url, host, port

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            async with asyncio.timeout(DNS_TIMEOUT):
                addresses = await self.resolver(host, port)
        except (OSError, TimeoutError, UnicodeError):
            addresses = []
        if not addresses:
            raise WebhookUnresolved(f"Webhook host {host!r} could not be resolved")
        return addresses

    def _check_address(self, host: str, ip: IPAddress) -> None:
        kind = classify(ip)
        shown = host if host == str(ip) else f"{host} ({ip})"
        if kind == "public":
            return
        if kind == "loopback" and not self.rules.disable_loopback:
            return
        if kind in ("private", "link-local") and not self.rules.disable_private_ips:
            return
        if kind == "loopback":
            raise WebhookRefused(
                f"Webhook URL points to a loopback address: {shown}. Loopback webhooks are "
                "disabled by default; set webhooks.url.disable_loopback to false in "
                "langgraph.json to allow them"
            )
        if kind in ("private", "link-local"):
            raise WebhookRefused(
                f"Webhook URL points to a {kind} network address: {shown}. Private-network "
                "webhooks are disabled by default; set webhooks.url.disable_private_ips to "
                "false in langgraph.json to allow them"
            )
        if kind == "metadata":
            raise WebhookRefused(
                f"Webhook URL points to a cloud metadata address: {shown}; never allowed"
            )
        raise WebhookRefused(f"Webhook URL points to a reserved address: {shown}; never allowed")


def _matches(host: str, pattern: str) -> bool:
    """``*.x.com`` matches subdomains of x.com (not x.com itself); anything else is exact."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern
