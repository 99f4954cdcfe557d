"""The webhook URL policy on its own: address classes, URL rules, opt-ins, and the second
check at send time that defeats DNS rebinding."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from agentd.config import WebhookUrlPolicy
from agentd.webhooks import policy as module
from agentd.webhooks.policy import UrlPolicy, WebhookRefused, WebhookUnresolved, classify


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("1.1.1.1", "public"),
        ("2606:4700::1111", "public"),
        ("172.32.0.1", "public"),  # just past 172.16/12
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("0.0.0.0", "loopback"),
        ("::1", "loopback"),
        ("::", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),  # CGNAT
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("224.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "reserved"),  # documentation
    ],
)
def test_classify(address: str, kind: str) -> None:
    assert classify(ipaddress.ip_address(address)) == kind


def policy(**rules: object) -> UrlPolicy:
    return UrlPolicy(WebhookUrlPolicy(**rules))  # type: ignore[arg-type]


async def refused(p: UrlPolicy, url: str) -> str:
    with pytest.raises(WebhookRefused) as info:
        await p.check(url)
    return info.value.detail


async def test_public_ip_literal_is_allowed_and_pinned() -> None:
    target = await policy().check("https://u:p@1.1.1.1:8443/hook?token=a%2Fb&x=1&x=2#frag")
    assert target.addresses == ("1.1.1.1",)
    assert str(target.pinned()) == "https://u:p@1.1.1.1:8443/hook?token=a%2Fb&x=1&x=2#frag"
    v6 = await policy().check("http://[2606:4700::1111]/h?q=1")
    assert str(v6.pinned()) == "http://[2606:4700::1111]/h?q=1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/h", "loopback"),
        ("http://localhost:8000/h", "loopback"),
        ("http://hooks.localhost/h", "loopback"),
        ("http://127.1/h", "loopback"),  # resolved: inet_aton's short form
        ("http://2130706433/h", "loopback"),
        ("http://0x7f.1/h", "loopback"),
        ("http://[::1]/h", "loopback"),
        ("http://10.0.0.1/h", "private"),
        ("http://[fe80::1]/h", "link-local"),
        ("http://169.254.169.254/", "metadata"),
        ("http://224.0.0.1/", "reserved"),
        ("/hooks/x", "relative"),
        ("hooks/x", "relative"),
        ("//1.1.1.1/x", "relative"),
        ("ftp://1.1.1.1/x", "scheme must be http or https"),
        ("javascript:alert(1)", "scheme must be http or https"),
        ("http://1.1.1.1/a b", "spaces"),
        ("http://1.1.1.1/a\nb", "control characters"),
        ("http://1.1.1.1:0/", "port 0"),
        ("http://1.1.1.1:99999/", "port 99999"),
        ("http://[::1/", "not a valid URL"),
        ("http://host.invalid/h", "could not be resolved"),
    ],
)
async def test_default_policy_refuses(url: str, reason: str) -> None:
    assert reason in await refused(policy(), url)


async def test_refusals_hide_the_query_string_and_name_the_opt_in() -> None:
    detail = await refused(policy(), "http://127.0.0.1:9/h?secret=xyz")
    assert "secret" not in detail and "webhooks.url.disable_loopback" in detail
    assert "webhooks.url.disable_private_ips" in await refused(policy(), "http://10.0.0.1/")


async def test_unresolvable_host_is_its_own_error() -> None:
    with pytest.raises(WebhookUnresolved):
        await policy().check("http://nothing.invalid/")


async def test_opt_in_to_loopback_keeps_private_refused() -> None:
    p = policy(disable_loopback=False)
    assert (await p.check("http://localhost:8000/h")).addresses == ("127.0.0.1",)
    assert (await p.check("http://[::1]:8000/h")).addresses == ("::1",)
    assert "private" in await refused(p, "http://192.168.1.1/")
    assert "metadata" in await refused(p, "http://169.254.169.254/")


async def test_opt_in_to_private_networks_never_allows_metadata() -> None:
    p = policy(disable_private_ips=False)
    for url in ("http://10.0.0.1/", "http://172.20.0.3/", "http://100.64.1.1/",
                "http://[fd00::5]/", "http://169.254.3.3/", "http://[fe80::2]/"):  # fmt: skip
        await p.check(url)
    assert "loopback" in await refused(p, "http://127.0.0.1/")
    assert "metadata" in await refused(p, "http://169.254.169.254/latest/")
    assert "metadata" in await refused(p, "http://[fd00:ec2::254]/")


async def test_require_https() -> None:
    p = policy(require_https=True)
    assert "must use https" in await refused(p, "http://1.1.1.1/")
    await p.check("https://1.1.1.1/")


async def public(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


async def test_allowed_domains_wildcard_matches_subdomains_only() -> None:
    rules = WebhookUrlPolicy(allowed_domains=("*.example.com", "hooks.other.org"))
    p = UrlPolicy(rules, resolver=public)
    for url in ("https://example.com/", "https://badexample.com/", "https://other.org/",
                "https://x.hooks.other.org/", "https://1.1.1.1/"):  # fmt: skip
        assert "allowed_domains" in await refused(p, url)
    for url in ("https://a.example.com/", "https://a.b.example.com/", "https://HOOKS.other.org/"):
        assert (await p.check(url)).addresses == ("93.184.215.14",)


async def test_allowed_ports_respect_default_ports() -> None:
    p = policy(allowed_ports=(443, 8443))
    await p.check("https://1.1.1.1/")  # 443 by default
    await p.check("https://1.1.1.1:8443/")
    assert "port 80 is not allowed" in await refused(p, "http://1.1.1.1/")
    assert "port 9000 is not allowed" in await refused(p, "https://1.1.1.1:9000/")


async def test_max_url_length() -> None:
    p = policy(max_url_length=30)
    await p.check("https://1.1.1.1/" + "x" * 14)
    assert "too long" in await refused(p, "https://1.1.1.1/" + "x" * 15)


async def test_every_resolved_address_must_pass() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    p = UrlPolicy(WebhookUrlPolicy(), resolver=resolver)
    assert "10.0.0.7" in await refused(p, "https://hooks.example.com/")


async def test_dns_rebinding_is_caught_at_the_second_check() -> None:
    answers = [["93.184.215.14"], ["127.0.0.1"]]

    async def resolver(host: str, port: int) -> list[str]:
        return answers.pop(0)

    p = UrlPolicy(WebhookUrlPolicy(), resolver=resolver)
    target = await p.check("https://hooks.example.com/h?q=1")  # at creation: public
    # The sender connects to the checked address, naming the host in Host and SNI.
    assert target.host == "hooks.example.com"
    assert str(target.pinned()) == "https://93.184.215.14/h?q=1"
    assert "loopback" in await refused(p, "https://hooks.example.com/h?q=1")  # at send time


async def test_slow_dns_is_unresolved(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["1.1.1.1"]

    monkeypatch.setattr(module, "DNS_TIMEOUT", 0.05)
    with pytest.raises(WebhookUnresolved):
        await UrlPolicy(WebhookUrlPolicy(), resolver=resolver).check("https://slow.example/")
