"""Where a build's packages may come from: repositories, their servers and signature rules.

Pure: no I/O. The runner maps each `[[repos]]` entry's package settings (or the global
default) onto a `PackageSources`; `choose_repositories` then decides, for one build,
which repositories pacman searches: the ones the profile's pacman.conf names (in its
order), each of which must be a configured source, or, for trusted builds only, one of
the repo's `extra_repos`. A fork's pull request never gets a repository its pacman.conf
adds.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.packages.exceptions import RepositoryNotAllowed
from runner.packages.profile import check_repository_name

#: What pacman enforces unless a repository of `extra_repos` says otherwise: every
#: package signed by a trusted key; databases checked when they are signed.
DEFAULT_SIG_LEVEL = "Required DatabaseOptional"

_SIG_WORDS = frozenset(("Never", "Optional", "Required", "TrustedOnly", "TrustAll"))
_SIG_PREFIXES = ("", "Package", "Database")

#: The Arch Linux Archive (reference/mkarchiso-nspawn.md §3.6).
ARCHIVE_URL = "https://archive.archlinux.org"
#: The server path of an Arch mirror; pacman expands `$repo` and `$arch`.
SERVER_PATH = "$repo/os/$arch"


def check_sig_level(text: str) -> str:
    """Return `text` normalised if it is a valid pacman `SigLevel` value.

    Args:
        text: Space-separated words such as "Required DatabaseOptional" or
            "Optional TrustAll" (pacman.conf(5) "Package and database signature checking").

    Returns:
        The words joined by single spaces.

    Raises:
        ValueError: A word is not one pacman knows.
    """
    words = text.split()
    if not words:
        raise ValueError("SigLevel must not be empty")
    for word in words:
        base = next(
            (word[len(p) :] for p in _SIG_PREFIXES[1:] if word.startswith(p)),
            word,
        )
        if base not in _SIG_WORDS:
            raise ValueError(
                f"SigLevel word {word!r} is not one of Never, Optional, Required, "
                "TrustedOnly, TrustAll (optionally prefixed by Package or Database)"
            )
    return " ".join(words)


def package_signatures(sig_level: str) -> str:
    """How a SigLevel treats package signatures: "never", "optional" or "required".

    Words apply left to right from isorunner's `[options]` default (Required), as in
    pacman.conf(5); `Database…` words do not concern packages; trust words are pacman's.

    Args:
        sig_level: A value accepted by `check_sig_level`.
    """
    mode = "required"
    for word in sig_level.split():
        if word.startswith("Database"):
            continue
        base = word.removeprefix("Package")
        if base in ("Never", "Optional", "Required"):
            mode = base.lower()
    return mode


def expand_server(template: str, *, repo: str, arch: str) -> str:
    """Expand pacman's `$repo` and `$arch` in a Server URL; no trailing slash."""
    return template.replace("$repo", repo).replace("$arch", arch).rstrip("/")


@dataclass(frozen=True, slots=True)
class Repository:
    """One pacman repository: its name, its servers and its signature rule.

    Attributes:
        name: The repository name (`[core]` → "core").
        servers: Server URL templates in order of preference (`$repo`, `$arch` allowed).
        sig_level: pacman's SigLevel for it.
    """

    name: str
    servers: tuple[str, ...]
    sig_level: str = DEFAULT_SIG_LEVEL

    def __post_init__(self) -> None:
        reason = check_repository_name(self.name)
        if reason is not None:
            raise ValueError(f"repository name {self.name!r} {reason}")
        if not self.servers:
            raise ValueError(f"repository {self.name!r} needs at least one server")
        for server in self.servers:
            if not server.startswith(("http://", "https://")):
                raise ValueError(f"server {server!r} must be an http:// or https:// URL")
        object.__setattr__(self, "sig_level", check_sig_level(self.sig_level))

    def urls(self, arch: str) -> tuple[str, ...]:
        """The expanded server URLs for `arch`, in order."""
        return tuple(expand_server(s, repo=self.name, arch=arch) for s in self.servers)


def mirror_repositories(names: tuple[str, ...], mirrors: tuple[str, ...]) -> tuple[Repository, ...]:
    """Repositories served by Arch mirrors (`https://host/$repo/os/$arch` templates)."""
    return tuple(Repository(name, mirrors) for name in names)


def archive_repositories(
    names: tuple[str, ...], date: str, *, archive_url: str = ARCHIVE_URL
) -> tuple[Repository, ...]:
    """Repositories pinned to one day of the Arch Linux Archive (`YYYY/MM/DD`)."""
    server = f"{archive_url.rstrip('/')}/repos/{date}/{SERVER_PATH}"
    return tuple(Repository(name, (server,)) for name in names)


@dataclass(frozen=True, slots=True)
class PackageSources:
    """The repositories the builds of one forge repository may use.

    Attributes:
        repositories: The configured sources, in pacman's search order; used as they
            are when the profile has no pacman.conf.
        extra_repos: More repositories that trusted builds may use when the profile's
            pacman.conf names them.
        config_key: Where these are configured, for messages (e.g.
            `repos["example/archlive"]`).
    """

    repositories: tuple[Repository, ...]
    extra_repos: tuple[Repository, ...] = ()
    config_key: str = "packages"

    def __post_init__(self) -> None:
        if not self.repositories:
            raise ValueError("at least one repository must be configured")
        names = [r.name for r in (*self.repositories, *self.extra_repos)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"repositories configured twice: {', '.join(duplicates)}")


def choose_repositories(
    profile_repositories: tuple[str, ...] | None,
    sources: PackageSources,
    *,
    trusted: bool,
) -> tuple[Repository, ...]:
    """Decide which repositories pacman searches for one build, in order.

    Args:
        profile_repositories: The repository names of the profile's pacman.conf, or
            None when it has none (the configured sources are used then).
        sources: What the runner's config allows.
        trusted: False for pull/merge requests from forks: they get the configured
            sources only, never `extra_repos`.

    Returns:
        The repositories, in the profile's order.

    Raises:
        RepositoryNotAllowed: The profile names a repository that is not configured,
            or (untrusted builds) one that only `extra_repos` allows; the message names
            the config key that would allow it.
    """
    if profile_repositories is None:
        return sources.repositories
    configured = {r.name: r for r in sources.repositories}
    extra = {r.name: r for r in sources.extra_repos}
    chosen: list[Repository] = []
    key = f"{sources.config_key}.extra_repos"
    for name in profile_repositories:
        if name in configured:
            chosen.append(configured[name])
        elif name in extra and trusted:
            chosen.append(extra[name])
        elif name in extra:
            raise RepositoryNotAllowed(
                f"the profile's pacman.conf uses repository [{name}], which only {key} "
                "allows, and this build comes from a fork: pull requests from forks use "
                f"only {_names(sources.repositories)}; build it from a branch of the "
                "repository itself",
                repository=name,
                config_key=key,
            )
        elif not trusted:
            raise RepositoryNotAllowed(
                f"the profile's pacman.conf adds repository [{name}]: pull requests from "
                f"forks use only {_names(sources.repositories)}; a repository of your own "
                f"can be added to {key} for trusted builds",
                repository=name,
                config_key=key,
            )
        else:
            raise RepositoryNotAllowed(
                f"the profile's pacman.conf uses repository [{name}], which the runner does "
                f"not know: it has {_names(sources.repositories)}; add [{name}] with its "
                f"Server and SigLevel to {key} in the runner's config, or remove it from "
                "the profile's pacman.conf",
                repository=name,
                config_key=key,
            )
    if not chosen:
        raise RepositoryNotAllowed(
            "the profile's pacman.conf names no repository; add at least "
            f"[{sources.repositories[0].name}]",
            repository="",
            config_key=f"{sources.config_key}.repositories",
        )
    return tuple(chosen)


def _names(repositories: tuple[Repository, ...]) -> str:
    return ", ".join(f"[{r.name}]" for r in repositories)
