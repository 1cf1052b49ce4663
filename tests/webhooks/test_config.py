"""Tests for webhooks.config: repository rules and configuration checks."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from webhooks.build import Forge, RefKind
from webhooks.config import Ignored, RepoRule, WebhookConfig


def test_repo_rule_defaults_build_main_and_v_tags() -> None:
    """By default a rule builds `main` and tags starting with `v`."""
    rule = RepoRule(Forge.GITHUB, "o/r")
    assert rule.builds_branch("main")
    assert not rule.builds_branch("Main")
    assert rule.builds_tag("v1.2.3")
    assert not rule.builds_tag("1.2.3")


def test_repo_rule_globs_match_across_slashes() -> None:
    """Branch globs are fnmatch patterns, where `*` also matches `/`."""
    rule = RepoRule(Forge.GITLAB, "g/p", branches=("release/*", "main"))
    assert rule.builds_branch("release/2026/01")
    assert not rule.builds_branch("feature/release/x")


def test_repo_rule_classify_push_names_kind_or_reason() -> None:
    """A pushed ref is a branch or a tag build, or an Ignored reason."""
    rule = RepoRule(Forge.GITHUB, "o/r")
    assert rule.classify_push("refs/heads/main") is RefKind.BRANCH
    assert rule.classify_push("refs/tags/v1") is RefKind.TAG
    assert isinstance(rule.classify_push("refs/heads/dev"), Ignored)
    assert isinstance(rule.classify_push("refs/tags/nightly"), Ignored)
    assert isinstance(rule.classify_push("refs/pull/1/head"), Ignored)


def test_rule_for_compares_names_case_insensitively_per_forge() -> None:
    """Rules are found by forge and case-insensitive name."""
    github_rule = RepoRule(Forge.GITHUB, "Owner/Repo")
    config = WebhookConfig(public_url="https://ci", repos=(github_rule,))
    assert config.rule_for(Forge.GITHUB, "owner/REPO") is github_rule
    assert config.rule_for(Forge.GITLAB, "owner/repo") is None
    assert config.rule_for(Forge.GITHUB, "owner/other") is None


@pytest.mark.parametrize("public_url", ["https://ci.example.org", "https://ci.example.org/"])
def test_build_url_joins_public_url(public_url: str) -> None:
    """Build links are `<public_url>/builds/<id>` with one slash."""
    config = WebhookConfig(public_url=public_url, repos=())
    assert config.build_url(7) == "https://ci.example.org/builds/7"


def test_gitlab_configured_with_either_secret() -> None:
    """GitLab is configured with a token, a signing token, or both."""
    key = SecretStr("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    assert not WebhookConfig(public_url="u", repos=()).gitlab_configured
    assert WebhookConfig(public_url="u", repos=(), gitlab_token=SecretStr("t")).gitlab_configured
    assert WebhookConfig(public_url="u", repos=(), gitlab_signing_token=key).gitlab_configured


@pytest.mark.parametrize("field", ["github_secret", "gitlab_token", "gitlab_signing_token"])
def test_webhook_config_refuses_empty_secret(field: str) -> None:
    """An empty secret would accept forged deliveries, so it is refused."""
    with pytest.raises(ValueError, match="is empty"):
        WebhookConfig(public_url="u", repos=(), **{field: SecretStr("")})  # type: ignore[arg-type]


def test_webhook_config_refuses_undecodable_signing_token() -> None:
    """A signing token that is not base64 is refused without echoing it."""
    with pytest.raises(ValueError, match="signing token") as caught:
        WebhookConfig(public_url="u", repos=(), gitlab_signing_token=SecretStr("whsec_n0t!b64"))
    assert "n0t!b64" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"), [("max_body_bytes", 0), ("signature_tolerance_seconds", -1)]
)
def test_webhook_config_refuses_bad_limits(field: str, value: int) -> None:
    """A non-positive body cap or a negative tolerance is refused."""
    with pytest.raises(ValueError, match=field):
        WebhookConfig(public_url="u", repos=(), **{field: value})  # type: ignore[arg-type]
