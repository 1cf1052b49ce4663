"""The fake forge's memory: seeded repositories, injected faults and everything received.

No HTTP here. One `ForgeState` is shared by the server thread (or task) and the test;
every method takes its lock, and inspection methods return deep copies, so a test never
sees an object the server is still changing. Also holds the two pieces of disk I/O both
forges share: streaming a request body to a file, and packing a profile into a tar.gz.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import itertools
import secrets
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

Forge = Literal["github", "gitlab"]
FaultKind = Literal["status", "drop", "hang"]

# Request headers whose values are secrets: recorded as "<scheme> <redacted>" or "<redacted>".
SECRET_HEADERS = frozenset({"authorization", "private-token", "job-token"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake forge received it, secrets redacted.

    `path` is the raw (still percent-encoded) path including the forge prefix, e.g.
    `/gitlab/api/v4/projects/acme%2Fprofile/statuses/<sha>`. `status` is the status code
    of the answer, 0 when the connection was dropped or the answer never started.
    """

    method: str
    path: str
    query: str
    host: str
    headers: Mapping[str, str]
    json: object | None
    had_authorization: bool
    status: int = 0
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """An answer to give instead of the real one to the next `times` matching requests.

    `kind` is "status" (answer `status` with `headers` and `body`), "drop" (close the
    connection without answering) or "hang" (answer nothing for `seconds`, then close).
    With `after_handling` the request is first handled for real (an upload is stored)
    and only the answer is replaced, as when GitHub's upload host answers 504 for an
    asset it did store; with `truncate` as well, the handler sees only the first half
    of the body, as when a proxy gives up mid-upload (a half-stored file).
    """

    method: str
    path: str
    kind: FaultKind
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    after_handling: bool = False
    truncate: bool = False
    query: str = "*"

    def matches(self, method: str, path: str, query: str = "") -> bool:
        """Tell whether a request is one this fault is waiting for (`query`: a glob too)."""
        method_ok = self.method == "*" or self.method.upper() == method.upper()
        path_ok = fnmatch.fnmatchcase(path, self.path)
        return method_ok and path_ok and fnmatch.fnmatchcase(query, self.query)


@dataclass(slots=True)
class StatusRecord:
    """A commit status the forge accepted (GitLab's `name` is stored as `context`)."""

    id: int
    state: str
    context: str
    description: str | None
    target_url: str | None
    ref: str | None = None


@dataclass(slots=True)
class StoredFile:
    """A file the forge received: a GitHub release asset or a GitLab package file."""

    id: int
    name: str
    path: Path
    size: int
    sha256: str
    content_type: str = "application/octet-stream"
    label: str | None = None
    # GitHub's release-asset states: "uploaded", or "open" for a partial upload.
    state: str = "uploaded"
    package: str = ""
    version: str = ""


@dataclass(slots=True)
class AssetLink:
    """A GitLab release asset link."""

    id: int
    name: str
    url: str
    direct_asset_path: str | None
    link_type: str


@dataclass(slots=True)
class Release:
    """A release on either forge; GitHub uses `assets`, GitLab uses `links`."""

    id: int
    tag_name: str
    name: str | None
    body: str | None
    target_commitish: str | None
    draft: bool = False
    prerelease: bool = False
    created_at: str = ""
    published_at: str | None = None
    assets: list[StoredFile] = field(default_factory=list)
    links: list[AssetLink] = field(default_factory=list)


@dataclass(slots=True)
class App:
    """A seeded GitHub App: who may sign its JWTs, and one installation's repositories."""

    issuers: frozenset[str]
    public_key_pem: bytes
    installation_id: int
    repos: frozenset[str]
    minted: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Repo:
    """A seeded repository (GitHub) or project (GitLab) and what was posted to it."""

    forge: Forge
    name: str
    token: str
    commits: dict[str, Path]
    refs: dict[str, str]
    project_id: int | None = None
    # Installation tokens minted for this repository by a seeded GitHub App.
    app_tokens: set[str] = field(default_factory=set)
    statuses: dict[str, list[StatusRecord]] = field(default_factory=dict)
    releases: list[Release] = field(default_factory=list)
    packages: list[StoredFile] = field(default_factory=list)
    # GitLab generic packages: (name, version) -> package id, made by the first upload.
    package_ids: dict[tuple[str, str], int] = field(default_factory=dict)

    def resolve(self, ref: str) -> str | None:
        """Return the full commit id for a sha, an abbreviated sha, or a seeded ref."""
        if ref in self.commits:
            return ref
        for short in ("refs/heads/", "refs/tags/", "heads/", "tags/"):
            if ref.startswith(short) and ref.removeprefix(short) in self.refs:
                return self.refs[ref.removeprefix(short)]
        if ref in self.refs:
            return self.refs[ref]
        if len(ref) >= 7:
            found = [sha for sha in self.commits if sha.startswith(ref)]
            if len(found) == 1:
                return found[0]
        return None


def utc_now() -> str:
    """Return the current time as GitHub and GitLab spell it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ForgeState:
    """Thread-safe store behind the fake forge: seeds, faults, records."""

    def __init__(self, workdir: Path, base_url: str, other_host_url: str) -> None:
        self.workdir = workdir
        # Both name the same server; the second one uses another host name (localhost)
        # so that a redirect to it crosses hosts, as api.github.com -> codeload does.
        self.base_url = base_url
        self.other_host_url = other_host_url
        self.codeload_token = secrets.token_urlsafe(16)
        # GitHub wants each asset *under* 2 GiB (forge-apis.md §6.1); the upload
        # benchmark raises this to send exactly 2 GiB.
        self.max_asset_size = 2**31 - 1
        self._lock = threading.RLock()
        self._repos: dict[tuple[Forge, str], Repo] = {}
        self.apps: dict[int, App] = {}
        self._requests: list[RecordedRequest] = []
        self._faults: list[tuple[Fault, int]] = []
        self._outages: list[tuple[Fault, Callable[[], bool]]] = []
        self._violations: list[str] = []
        self._ids = itertools.count(1000)

    # -- seeding -------------------------------------------------------------------------

    def seed(self, repo: Repo) -> None:
        """Add or replace a repository."""
        with self._lock:
            self._repos[(repo.forge, repo.name.lower())] = repo

    def repo(self, forge: Forge, name: str) -> Repo | None:
        """Find a repository by name (case-insensitive, as both forges do) or GitLab id.

        The server mutates the returned object only inside `locked()`.
        """
        with self._lock:
            found = self._repos.get((forge, name.lower()))
            if found is None and forge == "gitlab" and name.isdigit():
                ids = (r for r in self._repos.values() if r.project_id == int(name))
                found = next(ids, None)
            return found

    def locked(self) -> threading.RLock:
        """Return the (re-entrant) lock guarding every repository's contents."""
        return self._lock

    def next_id(self) -> int:
        """Return a fresh object id, unique across both forges."""
        with self._lock:
            return next(self._ids)

    # -- faults --------------------------------------------------------------------------

    def inject(self, fault: Fault, times: int) -> None:
        """Arm `fault` for the next `times` matching requests."""
        if times < 1:
            raise ValueError(f"a fault must apply at least once, got times={times}")
        with self._lock:
            self._faults.append((fault, times))

    def outage(self, fault: Fault, active: Callable[[], bool]) -> None:
        """Play `fault` for every matching request while `active()` says True."""
        with self._lock:
            self._outages.append((fault, active))

    def take_fault(self, method: str, path: str, query: str = "") -> Fault | None:
        """Consume and return the first armed fault matching the request, if any.

        An outage that is on wins over counted faults and is never used up.
        """
        with self._lock:
            for fault, active in self._outages:
                if fault.matches(method, path, query) and active():
                    return fault
            for index, (fault, left) in enumerate(self._faults):
                if fault.matches(method, path, query):
                    if left == 1:
                        del self._faults[index]
                    else:
                        self._faults[index] = (fault, left - 1)
                    return fault
            return None

    def pending_faults(self) -> list[tuple[Fault, int]]:
        """Return the faults still armed, with how many requests each still awaits."""
        with self._lock:
            return list(self._faults)

    # -- records -------------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> int:
        """Append a received request and return its index."""
        with self._lock:
            self._requests.append(request)
            return len(self._requests) - 1

    def finish(self, index: int, status: int, fault: str | None) -> None:
        """Note the status code (and fault, if any) a recorded request was answered with."""
        with self._lock:
            self._requests[index] = replace(self._requests[index], status=status, fault=fault)

    def requests(self) -> list[RecordedRequest]:
        """Return every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def violate(self, message: str) -> None:
        """Record a request that the GitHub OpenAPI description does not allow."""
        with self._lock:
            self._violations.append(message)

    def violations(self) -> list[str]:
        """Return every OpenAPI violation recorded so far."""
        with self._lock:
            return list(self._violations)

    def snapshot(self, forge: Forge, name: str) -> Repo:
        """Return a deep copy of a repository and everything posted to it.

        Raises:
            KeyError: no such repository was seeded.
        """
        with self._lock:
            found = self._repos.get((forge, name.lower()))
            if found is None:
                raise KeyError(f"no {forge} repository {name!r} was seeded")
            return copy.deepcopy(found)


async def stream_to_file(chunks: AsyncIterator[bytes], path: Path) -> tuple[int, str]:
    """Write a request body to `path` chunk by chunk; return its size and sha256.

    Memory stays flat whatever the size: the upload benchmark sends 2 GiB.
    """
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        async for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


ARCHIVE_MTIME = 1_735_787_045
"""The time on every entry of a packed profile (2025-01-02T03:04:05Z), as `git archive`
stamps every entry with the commit's time; the e2e tests' commits carry this time."""


def _stamp(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = ARCHIVE_MTIME
    return info


def pack_profile(source: Path, dest: Path, top: str, commit: str | None) -> None:
    """Write `source` as a tar.gz whose only top-level entry is the directory `top`.

    A pax global header carries `commit` as its comment, as GitHub's codeload does, and
    every entry is stamped with `ARCHIVE_MTIME`, as `git archive` does. When `source`
    is a file it is taken to be a ready archive (a hostile one, say) and copied.
    """
    if source.is_file():
        dest.write_bytes(source.read_bytes())
        return
    headers = {"comment": commit} if commit else {}
    with tarfile.open(dest, "w:gz", format=tarfile.PAX_FORMAT, pax_headers=headers) as tar:
        tar.add(source, arcname=top, recursive=True, filter=_stamp)
