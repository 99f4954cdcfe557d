"""The ``webhooks`` and ``http.disable_webhooks`` sections of langgraph.json: typed settings,
and a malformed section stops start-up with one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.config import ConfigError, WebhookSettings, WebhookUrlPolicy, load_settings


def write(tmp_path: Path, **extra: object) -> Path:
    (tmp_path / "ok.py").write_text("graph = None\n")
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps({"graphs": {"g": "./ok.py:graph"}, **extra}))
    return path


def test_defaults_refuse_loopback_and_private_networks(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, webhooks={}, http={}))
    assert settings.webhooks == WebhookSettings()
    assert settings.webhooks.enabled
    policy = settings.webhooks.url
    assert policy.disable_loopback and policy.disable_private_ips and not policy.require_https
    assert load_settings(write(tmp_path)).webhooks == WebhookSettings()


def test_full_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "t0k")
    monkeypatch.setenv("HOOK_TENANT", "acme")
    config = write(
        tmp_path,
        http={"disable_webhooks": True, "disable_mcp": True},
        webhooks={
            "env_prefix": "HOOK_",
            "url": {
                "require_https": True,
                "disable_loopback": False,
                "disable_private_ips": False,
                "allowed_domains": ["Hooks.Example.com", "*.corp.example."],
                "allowed_ports": [443, 8443],
                "max_url_length": 512,
            },
            "headers": {
                "Authorization": "Bearer ${{ env.HOOK_TOKEN }}",
                "X-Tenant": "${{env.HOOK_TENANT}}/${{ env.HOOK_TOKEN }}",
                "X-Static": "plain",
            },
            "allowed_fields": ["run_id", "status"],
        },
    )
    hooks = load_settings(config).webhooks
    assert not hooks.enabled
    assert hooks.url == WebhookUrlPolicy(
        require_https=True,
        disable_loopback=False,
        disable_private_ips=False,
        allowed_domains=("hooks.example.com", "*.corp.example"),
        allowed_ports=(443, 8443),
        max_url_length=512,
    )
    assert hooks.headers == (
        ("Authorization", "Bearer t0k"),
        ("X-Tenant", "acme/t0k"),
        ("X-Static", "plain"),
    )
    assert hooks.allowed_fields == ("run_id", "status")


def test_header_variables_may_come_from_the_config_env(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        env={"LG_WEBHOOK_FROM_ENV_SECTION": "v"},
        webhooks={"headers": {"X-A": "${{ env.LG_WEBHOOK_FROM_ENV_SECTION }}"}},
    )
    try:
        assert load_settings(config).webhooks.headers == (("X-A", "v"),)
    finally:
        os.environ.pop("LG_WEBHOOK_FROM_ENV_SECTION", None)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"webhooks": []}, "'webhooks' must be an object"),
        ({"webhooks": {"urls": {}}}, "unknown key(s) in 'webhooks': urls"),
        ({"webhooks": {"url": {"disable_loopbak": False}}},
         "unknown key(s) in 'webhooks.url': disable_loopbak"),
        ({"webhooks": {"url": "https://x"}}, "'webhooks.url' must be an object"),
        ({"webhooks": {"url": {"disable_loopback": "no"}}},
         "'webhooks.url.disable_loopback' must be true or false"),
        ({"webhooks": {"url": {"require_https": 1}}}, "'webhooks.url.require_https' must be"),
        ({"webhooks": {"url": {"allowed_ports": ["443"]}}}, "'webhooks.url.allowed_ports'"),
        ({"webhooks": {"url": {"allowed_ports": [0]}}}, "'webhooks.url.allowed_ports'"),
        ({"webhooks": {"url": {"allowed_ports": [True]}}}, "'webhooks.url.allowed_ports'"),
        ({"webhooks": {"url": {"allowed_domains": "x.com"}}}, "'webhooks.url.allowed_domains'"),
        ({"webhooks": {"url": {"allowed_domains": ["*"]}}}, "'webhooks.url.allowed_domains'"),
        ({"webhooks": {"url": {"allowed_domains": ["a.com:80"]}}},
         "'webhooks.url.allowed_domains'"),
        ({"webhooks": {"url": {"max_url_length": 0}}}, "'webhooks.url.max_url_length'"),
        ({"webhooks": {"headers": ["X-A: b"]}}, "'webhooks.headers' must be an object"),
        ({"webhooks": {"headers": {"X-A": 1}}}, "'webhooks.headers.X-A' must be a string"),
        ({"webhooks": {"headers": {"Bad Name": "x"}}}, "'webhooks.headers.Bad Name' is not"),
        ({"webhooks": {"headers": {"Host": "x"}}}, "'webhooks.headers.Host' is not"),
        ({"webhooks": {"headers": {"X-A": "${{ env.HOME }}"}}},
         "only variables starting with 'LG_WEBHOOK_'"),
        ({"webhooks": {"headers": {"X-A": "${{ env.LG_WEBHOOK_UNSET_XYZ }}"}}},
         "reads LG_WEBHOOK_UNSET_XYZ, which is not set"),
        ({"webhooks": {"env_prefix": 3}}, "'webhooks.env_prefix' must be a string"),
        ({"webhooks": {"allowed_fields": "run_id"}}, "'webhooks.allowed_fields' must be a list"),
        ({"http": []}, "'http' must be an object"),
        ({"http": {"disable_webhooks": "yes"}}, "'http.disable_webhooks' must be true or false"),
    ],
)  # fmt: skip
def test_malformed_sections(tmp_path: Path, extra: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, **extra))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_section_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = write(tmp_path, webhooks={"url": {"allowed_ports": "443"}})
    result = subprocess.run(
        [sys.executable, "-m", "agentd.cli", "serve", "--config", str(config), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentd: ")
    assert "'webhooks.url.allowed_ports' must be a list of port numbers" in lines[0]
