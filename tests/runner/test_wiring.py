"""Tests of `runner.wiring`: the components built from `Settings`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runner.exceptions import ConfigError
from runner.forges.client import ForgeTransport
from runner.forges.github_client import GitHubClient
from runner.forges.gitlab_client import GitLabClient
from runner.settings import GitHubSettings, GitLabSettings, Settings
from runner.wiring import (
    forge_clients,
    forge_hosts,
    read_private_key,
    sandbox_config,
    webhook_config,
)
from webhooks.build import Forge

SECRET = "wiring-test-webhook-secret"


def test_sandbox_config_maps_the_section(tmp_path: Path) -> None:
    """The [sandbox] section becomes the sandbox's frozen config, sizes parsed."""
    settings = Settings(
        sandbox={"sandbox_root": tmp_path, "memory_limit": "2G", "max_output_bytes": "3G"}
    )
    config = sandbox_config(settings)
    assert config.base_dir == tmp_path / "base"
    assert config.memory_limit == 2 << 30
    assert config.max_output_bytes == 3 << 30
    assert config.uid_base == settings.sandbox.uid_base


def test_machine_prefix_is_stable_per_root_and_distinct_across_roots(tmp_path: Path) -> None:
    """A restarted instance keeps its prefix; another sandbox root gets another one."""
    first = sandbox_config(Settings(sandbox={"sandbox_root": tmp_path / "a"}))
    again = sandbox_config(Settings(sandbox={"sandbox_root": tmp_path / "b"}))
    assert first.machine_prefix != again.machine_prefix
    same = sandbox_config(Settings(sandbox={"sandbox_root": tmp_path / "a"}))
    assert same.machine_prefix == first.machine_prefix
    assert first.machine_name("build-1").startswith(first.machine_prefix)


def test_webhook_config_carries_rules_and_secrets() -> None:
    """Repos, secrets and the body cap reach the web app's config."""
    settings = Settings(
        github={"webhook_secret": SECRET},
        repos=({"forge": "github", "name": "a/b", "branches": ["main", "release/*"]},),
    )
    config = webhook_config(settings)
    assert config.github_secret is not None
    assert config.github_secret.get_secret_value() == SECRET
    assert config.repos[0].branches == ("main", "release/*")
    assert config.gitlab_token is None


@pytest.mark.anyio
async def test_forge_clients_only_for_configured_tokens(tmp_path: Path) -> None:
    """A forge gets a client only when its API credentials are configured."""
    async with httpx.AsyncClient() as http:
        transport = ForgeTransport(http)
        assert forge_clients(Settings(), transport) == {}
        clients = forge_clients(
            Settings(
                github={"token": "ghp_cli-test-token"}, gitlab={"token": "glpat-cli-test-token"}
            ),
            transport,
        )
        assert isinstance(clients[Forge.GITHUB], GitHubClient)
        assert isinstance(clients[Forge.GITLAB], GitLabClient)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = tmp_path / "app.pem"
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        app = forge_clients(
            Settings(github={"app_id": 42, "private_key_file": pem}),
            transport,
        )
        assert isinstance(app[Forge.GITHUB], GitHubClient)


def test_read_private_key_errors_name_the_file_not_the_content(tmp_path: Path) -> None:
    """A bad key file is reported by path; its contents are never echoed."""
    bad = tmp_path / "bad.pem"
    bad.write_text("not-a-key-but-secret-looking")
    with pytest.raises(ConfigError, match="is not a PEM RSA private key") as caught:
        read_private_key(bad)
    assert "secret-looking" not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        read_private_key(tmp_path / "missing.pem")


def test_forge_hosts_maps_configured_apis_to_their_forge() -> None:
    """The service labels github.com's API, upload and codeload hosts and GitLab's host."""
    settings = Settings(
        github=GitHubSettings(), gitlab=GitLabSettings(url="https://git.example.org")
    )
    assert forge_hosts(settings) == {
        "api.github.com": "github",
        "uploads.github.com": "github",
        "codeload.github.com": "github",
        "git.example.org": "gitlab",
    }
