"""The `PackageError` tree: why a build's packages could not be made ready.

Pure: exception classes only, no I/O. Kept apart from the modules that raise them so
that every module of `runner.packages` imports it without cycles. Each class says whose
fault it is (`profile_fault`): the pipeline fails the build for the profile's faults
(the user must change the profile or ask for a config change) and errors it for the
infrastructure's (a retry or the operator may help).

```
RunnerError (runner.exceptions)
 └── PackageError                 message; profile_fault
      ├── ProfilePackagesInvalid  a package list or the profile's pacman.conf is unusable (path)
      ├── RepositoryNotAllowed    the profile names a repository this build may not use
      │                           (repository, config_key)
      ├── PackageNotFound         targets that exist in none of the repositories
      │                           (names, repositories)
      ├── DependencyUnresolvable  pacman could not satisfy a dependency or a conflict
      ├── SignatureInvalid        a package or database signature failed (package)
      ├── CorruptedPackage        a download's sha256 differs from the database's (package)
      ├── DatabaseInvalid         a repository database is unreadable or has a bad entry
      ├── DownloadFailed          every mirror failed for one file (what, failures)
      └── PackageSetupError       the host is not ready: pacman, keyring, cache, disk
```

Messages say what failed, for which package or repository, and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

from runner.exceptions import RunnerError


class PackageError(RunnerError):
    """Root of the package sync errors.

    Attributes:
        message: What failed and what to do.
        profile_fault: True when the profile (or its repository's config) must change.
    """

    profile_fault = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProfilePackagesInvalid(PackageError):
    """A package list or the profile's pacman.conf cannot be used.

    Attributes:
        path: The offending file, relative to the profile.
    """

    profile_fault = True

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class RepositoryNotAllowed(PackageError):
    """The profile's pacman.conf names a repository this build may not use.

    Attributes:
        repository: The repository's name as the profile writes it.
        config_key: The configuration key that would allow it.
    """

    profile_fault = True

    def __init__(self, message: str, *, repository: str, config_key: str) -> None:
        super().__init__(message)
        self.repository = repository
        self.config_key = config_key


class PackageNotFound(PackageError):
    """Packages named by the profile exist in none of the repositories searched.

    Attributes:
        names: The targets not found.
        repositories: The repositories searched, in order.
    """

    profile_fault = True

    def __init__(self, names: Sequence[str], repositories: Sequence[str]) -> None:
        self.names = tuple(names)
        self.repositories = tuple(repositories)
        which = ", ".join(self.names)
        plural = "s" if len(self.names) > 1 else ""
        super().__init__(
            f"package{plural} not found: {which} (searched {', '.join(self.repositories)}); "
            "check the spelling in the profile's package list, or add the repository that "
            "has it to the profile's pacman.conf and to the runner's config"
        )


class DependencyUnresolvable(PackageError):
    """pacman found the targets but not a consistent set with their dependencies."""

    profile_fault = True


class SignatureInvalid(PackageError):
    """A package's or a database's signature did not verify against the keyring.

    Attributes:
        package: The package (or `<repo> database`) whose signature failed.
    """

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


class CorruptedPackage(PackageError):
    """A downloaded file does not have the sha256 its repository database records.

    Attributes:
        package: The package's file name.
        url: Where it came from.
    """

    def __init__(self, message: str, *, package: str, url: str) -> None:
        super().__init__(message)
        self.package = package
        self.url = url


class DatabaseInvalid(PackageError):
    """A repository database is unreadable or holds an entry that cannot be used."""


class DownloadFailed(PackageError):
    """Every mirror failed to deliver one file.

    Attributes:
        what: The file (package file name or `<repo>.db`).
        failures: One `(mirror, reason)` pair per mirror tried, in order.
    """

    def __init__(self, what: str, failures: Sequence[tuple[str, str]]) -> None:
        self.what = what
        self.failures = tuple(failures)
        tried = "; ".join(f"{mirror}: {reason}" for mirror, reason in self.failures)
        super().__init__(
            f"could not download {what} from any mirror ({tried}); check the mirrors in "
            "the config and that they are up, then retry the build"
        )


class PackageSetupError(PackageError):
    """The host cannot sync packages (pacman, keyring, cache directory); an operator must act."""
