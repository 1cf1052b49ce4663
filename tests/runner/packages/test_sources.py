"""Tests of runner.packages.sources: which repositories a build may use, and SigLevels."""

from __future__ import annotations

import pytest

from runner.packages.exceptions import RepositoryNotAllowed
from runner.packages.sources import (
    PackageSources,
    Repository,
    archive_repositories,
    check_sig_level,
    choose_repositories,
    expand_server,
    mirror_repositories,
    package_signatures,
)

MIRROR = "https://mirror.example/$repo/os/$arch"


def _sources() -> PackageSources:
    return PackageSources(
        mirror_repositories(("core", "extra"), (MIRROR,)),
        extra_repos=(Repository("custom", ("https://pkgs.example/$arch",), "Optional TrustAll"),),
        config_key='repos["example/live"]',
    )


def test_choose_repositories_follows_the_profile_order() -> None:
    """The profile's repositories are searched in its order, with the config's servers."""
    chosen = choose_repositories(("extra", "core"), _sources(), trusted=True)
    assert [r.name for r in chosen] == ["extra", "core"]
    assert chosen[0].urls("x86_64") == ("https://mirror.example/extra/os/x86_64",)


def test_choose_repositories_without_pacman_conf_uses_the_config() -> None:
    """A profile without pacman.conf gets the configured repositories."""
    assert [r.name for r in choose_repositories(None, _sources(), trusted=False)] == [
        "core",
        "extra",
    ]


def test_choose_repositories_gives_extra_repos_to_trusted_builds() -> None:
    """A trusted build may use a repository of extra_repos, with its own SigLevel."""
    chosen = choose_repositories(("core", "custom"), _sources(), trusted=True)
    assert [(r.name, r.sig_level) for r in chosen] == [
        ("core", "Required DatabaseOptional"),
        ("custom", "Optional TrustAll"),
    ]


def test_choose_repositories_refuses_extra_repos_to_forks() -> None:
    """A fork's build naming an extra_repos repository is refused, naming the key."""
    with pytest.raises(RepositoryNotAllowed) as info:
        choose_repositories(("core", "custom"), _sources(), trusted=False)
    assert info.value.repository == "custom"
    assert info.value.config_key == 'repos["example/live"].extra_repos'
    assert "pull requests from forks use only [core], [extra]" in info.value.message


def test_choose_repositories_refuses_a_fork_adding_a_repository() -> None:
    """A fork's pacman.conf adding an unknown repository is refused, naming the key."""
    with pytest.raises(RepositoryNotAllowed) as info:
        choose_repositories(("core", "evil"), _sources(), trusted=False)
    assert "adds repository [evil]" in info.value.message
    assert 'repos["example/live"].extra_repos' in info.value.message


def test_choose_repositories_tells_trusted_builds_how_to_allow_one() -> None:
    """An unknown repository in a trusted build says which config key would allow it."""
    with pytest.raises(RepositoryNotAllowed) as info:
        choose_repositories(("core", "mine"), _sources(), trusted=True)
    assert "add [mine] with its Server and SigLevel to" in info.value.message
    assert info.value.profile_fault


def test_choose_repositories_refuses_a_conf_without_repositories() -> None:
    """A pacman.conf with only [options] names no repository: refused."""
    with pytest.raises(RepositoryNotAllowed, match="names no repository"):
        choose_repositories((), _sources(), trusted=True)


def test_archive_repositories_pin_the_day() -> None:
    """The archive source points every repository at the same day of the archive."""
    (core,) = archive_repositories(("core",), "2024/01/15", archive_url="http://a.example/")
    assert core.urls("x86_64") == ("http://a.example/repos/2024/01/15/core/os/x86_64",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Required DatabaseOptional", "Required DatabaseOptional"),
        ("  Optional   TrustAll ", "Optional TrustAll"),
        ("PackageRequired PackageTrustedOnly DatabaseNever", None),
    ],
)
def test_check_sig_level_normalises_valid_values(text: str, expected: str | None) -> None:
    """Valid SigLevel values come back with single spaces."""
    assert check_sig_level(text) == (expected or " ".join(text.split()))


@pytest.mark.parametrize("text", ["", "Sometimes", "PackageMaybe", "Required;rm"])
def test_check_sig_level_refuses_unknown_words(text: str) -> None:
    """Words pacman does not know are refused."""
    with pytest.raises(ValueError, match="SigLevel"):
        check_sig_level(text)


@pytest.mark.parametrize(
    ("level", "mode"),
    [
        ("Required DatabaseOptional", "required"),
        ("Optional TrustAll", "optional"),
        ("Never", "never"),
        ("DatabaseNever", "required"),
        ("Optional PackageRequired", "required"),
        ("Required PackageOptional", "optional"),
    ],
)
def test_package_signatures_reads_left_to_right(level: str, mode: str) -> None:
    """Package signature checking follows the last word that concerns packages."""
    assert package_signatures(level) == mode


def test_repository_refuses_bad_values() -> None:
    """A repository needs a valid name, an http(s) server and a valid SigLevel."""
    with pytest.raises(ValueError, match="needs at least one server"):
        Repository("core", ())
    with pytest.raises(ValueError, match="http"):
        Repository("core", ("ftp://x/$repo",))
    with pytest.raises(ValueError, match="repository name"):
        Repository("c/re", (MIRROR,))
    with pytest.raises(ValueError, match="SigLevel"):
        Repository("core", (MIRROR,), "Whenever")
    with pytest.raises(ValueError, match="configured twice"):
        PackageSources(
            mirror_repositories(("core",), (MIRROR,)), extra_repos=(Repository("core", (MIRROR,)),)
        )


def test_expand_server_replaces_repo_and_arch() -> None:
    """$repo and $arch are expanded and a trailing slash is dropped."""
    assert expand_server("http://m/$repo/os/$arch/", repo="core", arch="x86_64") == (
        "http://m/core/os/x86_64"
    )
