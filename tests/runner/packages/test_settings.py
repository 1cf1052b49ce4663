"""Tests of runner.packages.settings: the [packages] section, per-repo overrides, sources."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from runner.packages.settings import PackagesSettings, sources_for
from runner.settings import RepoSettings, Settings
from runner.wiring import package_sources

MIRROR = "https://m.example/$repo/os/$arch"


def _settings(packages: dict[str, Any], repo: dict[str, Any] | None = None) -> Settings:
    entry = {"forge": "github", "name": "acme/live", **(repo or {})}
    return Settings(
        packages=packages,
        repos=(entry,),
        github={"webhook_secret": "packages-test-webhook-secret"},
    )


def test_defaults_use_an_arch_mirror() -> None:
    """Without configuration, builds use core, extra and multilib from an Arch mirror."""
    sources = sources_for(PackagesSettings(), None, config_key="packages")
    assert [r.name for r in sources.repositories] == ["core", "extra", "multilib"]
    assert sources.repositories[0].urls("x86_64") == (
        "https://geo.mirror.pkgbuild.com/core/os/x86_64",
    )
    assert sources.extra_repos == ()


def test_a_repository_overrides_the_source_and_extra_repos() -> None:
    """A [[repos]] entry's archive date and extra_repos replace the defaults for its builds."""
    settings = _settings(
        {"mirrors": [MIRROR], "extra_repos": [{"name": "shared", "servers": [MIRROR]}]},
        {
            "package_source": "archive",
            "archive_date": "2024/01/15",
            "extra_repos": [
                {"name": "mine", "servers": ["https://p.example/$arch"], "sig_level": "Optional"}
            ],
        },
    )
    sources = package_sources(settings, "github", "ACME/live")
    assert sources.repositories[1].urls("x86_64") == (
        "https://archive.archlinux.org/repos/2024/01/15/extra/os/x86_64",
    )
    assert [(r.name, r.sig_level) for r in sources.extra_repos] == [("mine", "Optional")]
    assert sources.config_key == 'repos "github:acme/live"'
    inherited = package_sources(settings, "gitlab", "other/repo")
    assert inherited.repositories[0].urls("x86_64") == ("https://m.example/core/os/x86_64",)
    assert [r.name for r in inherited.extra_repos] == ["shared"]
    assert inherited.config_key == "packages"


@pytest.mark.parametrize(
    ("packages", "repo", "message"),
    [
        ({"package_source": "archive"}, None, "needs archive_date"),
        ({"archive_date": "2024-01-15"}, None, "YYYY/MM/DD"),
        ({"archive_date": "2024/02/30"}, None, "not a real date"),
        ({"mirrors": ["https://m.example/os"]}, None, "must contain $repo"),
        ({"mirrors": ["ftp://m/$repo"]}, None, "http:// or https://"),
        ({"mirrors": []}, None, "needs at least one entry in mirrors"),
        ({"max_cache_bytes": "lots"}, None, "not a size"),
        ({"repositories": ["co re"]}, None, "holds ' '"),
        ({"extra_repos": [{"name": "core", "servers": [MIRROR]}]}, None, "twice"),
        ({"extra_repos": [{"name": "x", "servers": [MIRROR], "sig_level": "Sometimes"}]}, None,
         "SigLevel word"),
        ({}, {"package_source": "archive"}, "repos github:acme/live: package_source"),
        ({}, {"archive_date": "1/2/3"}, "YYYY/MM/DD"),
    ],
)  # fmt: skip
def test_bad_package_settings_are_refused(
    packages: dict[str, Any], repo: dict[str, Any] | None, message: str
) -> None:
    """Each inconsistent or malformed package setting is refused, naming the problem."""
    with pytest.raises(ValidationError, match=message.replace("$", r"\$")):
        _settings(packages, repo)


def test_a_hostile_archive_date_is_cut_in_the_message() -> None:
    """A megabyte-long archive date is refused without echoing it whole."""
    with pytest.raises(ValidationError) as info:
        RepoSettings(forge="github", name="a/b", archive_date="9" * 1_000_000)
    assert len(str(info.value)) < 2000
