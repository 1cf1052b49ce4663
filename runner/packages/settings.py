"""The `[packages]` configuration section and the per-repository package overrides.

Pure: pydantic models and validators, no I/O. `runner.settings` puts `PackagesSettings`
in `Settings` and the override fields in each `[[repos]]` entry; `sources_for` turns
them into the `PackageSources` a build may use.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal, Protocol, Self

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from runner.packages.profile import check_repository_name
from runner.packages.sources import (
    ARCHIVE_URL,
    PackageSources,
    Repository,
    archive_repositories,
    check_sig_level,
    mirror_repositories,
)
from sandbox import parse_size


class _Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_ARCH_MIRROR = "https://geo.mirror.pkgbuild.com/$repo/os/$arch"
PackageSource = Literal["mirror", "archive"]


def check_archive_date(value: str | None) -> str | None:
    """Return `value` if it is a real date written YYYY/MM/DD (or None).

    Raises:
        ValueError: It is not.
    """
    if value is None:
        return None
    parts = value.split("/")
    if (
        len(parts) != 3
        or not all(p.isdigit() for p in parts)
        or [len(p) for p in parts] != [4, 2, 2]
    ):
        raise ValueError(f"archive_date must be written YYYY/MM/DD, not {value[:40]!r}")
    try:
        date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        raise ValueError(f"archive_date {value!r} is not a real date") from None
    return value


def check_mirrors(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Return `value` if every mirror is an http(s) URL with `$repo` in it.

    Raises:
        ValueError: One is not.
    """
    for mirror in value or ():
        if not mirror.startswith(("http://", "https://")) or any(c.isspace() for c in mirror):
            raise ValueError(f"mirror {mirror[:80]!r} must be an http:// or https:// URL")
        if "$repo" not in mirror:
            raise ValueError(
                f"mirror {mirror[:80]!r} must contain $repo (Arch mirrors are "
                "https://host/path/$repo/os/$arch)"
            )
    return value


class ExtraRepoSettings(_Section):
    """One entry of `extra_repos`: a pacman repository trusted builds may use."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    servers: Annotated[tuple[str, ...], Field(min_length=1, max_length=16)]
    sig_level: str = "Required DatabaseOptional"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        reason = check_repository_name(value)
        if reason is not None:
            raise ValueError(f"repository name {value!r} {reason}")
        return value

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for server in value:
            if not server.startswith(("http://", "https://")) or any(c.isspace() for c in server):
                raise ValueError(f"server {server[:80]!r} must be an http:// or https:// URL")
        return value

    @field_validator("sig_level")
    @classmethod
    def _sig_level(cls, value: str) -> str:
        return check_sig_level(value)


class PackagesSettings(_Section):
    """`[packages]`: host-side package sync, its cache, and the default package source."""

    cache_dir: Path = Path("/var/lib/isorunner/packages")
    max_cache_bytes: str = "20G"
    keyring: Path = Path("/var/lib/isorunner/keyring")
    architecture: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,16}$")] = "x86_64"
    repositories: Annotated[tuple[str, ...], Field(min_length=1, max_length=32)] = (
        "core",
        "extra",
        "multilib",
    )
    package_source: PackageSource = "mirror"
    mirrors: Annotated[tuple[str, ...], Field(max_length=16)] = (_ARCH_MIRROR,)
    archive_date: str | None = None
    archive_url: AnyHttpUrl = AnyHttpUrl(ARCHIVE_URL)
    extra_repos: tuple[ExtraRepoSettings, ...] = ()
    parallel_downloads: Annotated[int, Field(ge=1, le=32)] = 4
    download_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    download_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    verify_workers: Annotated[int, Field(ge=1, le=32)] = 2

    @field_validator("max_cache_bytes")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            reason = check_repository_name(name)
            if reason is not None:
                raise ValueError(f"repository name {name!r} {reason}")
        return value

    @field_validator("archive_date")
    @classmethod
    def _archive_date(cls, value: str | None) -> str | None:
        return check_archive_date(value)

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_mirrors(value)

    @model_validator(mode="after")
    def _source_complete(self) -> Self:
        check_source(self.package_source, self.mirrors, self.archive_date, "packages")
        check_extra(self.extra_repos, self.repositories, "packages")
        return self


def check_source(
    source: str, mirrors: tuple[str, ...], archive_date: str | None, where: str
) -> None:
    """Refuse an archive source without a date, or a mirror source without mirrors."""
    if source == "archive" and archive_date is None:
        raise ValueError(f'{where}: package_source = "archive" needs archive_date = "YYYY/MM/DD"')
    if source == "mirror" and not mirrors:
        raise ValueError(f'{where}: package_source = "mirror" needs at least one entry in mirrors')


def check_extra(
    extra: tuple[ExtraRepoSettings, ...], repositories: tuple[str, ...], where: str
) -> None:
    """Refuse an extra repository named twice, or named like a configured one."""
    names = [repo.name for repo in extra]
    for name in names:
        if names.count(name) > 1 or name in repositories:
            raise ValueError(
                f"{where}: extra_repos names [{name}] twice, or a repository of "
                "packages.repositories; give each repository once"
            )


class PackageOverrides(Protocol):
    """The package fields of one `[[repos]]` entry (None: use the `[packages]` value)."""

    @property
    def package_source(self) -> PackageSource | None:
        """The source: mirror, archive, or None."""
        ...

    @property
    def mirrors(self) -> tuple[str, ...] | None:
        """Mirror URL templates, or None."""
        ...

    @property
    def archive_date(self) -> str | None:
        """YYYY/MM/DD, or None."""
        ...

    @property
    def extra_repos(self) -> tuple[ExtraRepoSettings, ...] | None:
        """Extra repositories for trusted builds, or None."""
        ...


def sources_for(
    packages: PackagesSettings, repo: PackageOverrides | None, *, config_key: str
) -> PackageSources:
    """The repositories one forge repository's builds may use.

    Args:
        packages: The `[packages]` section (the defaults).
        repo: The `[[repos]]` entry, or None (e.g. `isorunner build` of a local profile).
        config_key: Where the entry is configured, for messages.
    """
    source = (repo.package_source if repo else None) or packages.package_source
    mirrors = repo.mirrors if repo is not None and repo.mirrors is not None else packages.mirrors
    date_ = (repo.archive_date if repo else None) or packages.archive_date
    extra = (
        repo.extra_repos
        if repo is not None and repo.extra_repos is not None
        else packages.extra_repos
    )
    if source == "archive":
        assert date_ is not None  # validated with the settings
        repositories = archive_repositories(
            packages.repositories, date_, archive_url=str(packages.archive_url)
        )
    else:
        repositories = mirror_repositories(packages.repositories, mirrors)
    return PackageSources(
        repositories,
        extra_repos=tuple(Repository(e.name, e.servers, e.sig_level) for e in extra),
        config_key=config_key,
    )
