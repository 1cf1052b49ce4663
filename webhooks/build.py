"""Build values shared across the service, and the seams the web app depends on.

Pure: values and `Protocol`s only, no I/O. `webhooks/` produces `BuildRequest`s and
reads `BuildRecord`s; `runner/` implements `BuildSink` and `BuildCatalog` (its job
store) and passes them to `create_app`, so this package never imports `runner`.

The artifact layout is defined here too, for both sides: a finished build's ISOs and
its sums files (`SUMS_FILES`) live in `artifacts_dir(root, build_id)`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, NamedTuple, Protocol


class Forge(enum.StrEnum):
    """The forge a build request came from."""

    GITHUB = "github"
    GITLAB = "gitlab"


class RefKind(enum.StrEnum):
    """What was pushed: a branch, a tag, or a pull/merge request update."""

    BRANCH = "branch"
    TAG = "tag"
    PULL_REQUEST = "pull_request"


class BuildState(enum.StrEnum):
    """The lifecycle states of a build; transitions live in `runner.jobs`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERRORED = "errored"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Whether no transition leaves this state."""
        return self not in (BuildState.QUEUED, BuildState.RUNNING)


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """One accepted delivery, normalised: what to build and where to report.

    Attributes:
        forge: Which forge sent it.
        repo: `owner/name` on GitHub, the full project path on GitLab. For pull and
            merge requests this is the base (target) repository: statuses go there.
        commit_sha: The 40-hex commit to build (never a tag object SHA).
        ref: The full ref that was pushed (`refs/heads/main`, `refs/tags/v1`); for a
            pull/merge request, the head branch as `refs/heads/<source branch>`.
        kind: Branch, tag or pull request.
        pr_number: The pull request number or merge request IID, else None.
        trusted: False for requests whose code comes from a fork; those are built but
            never published.
        commit_time: The commit's timestamp, timezone-aware; later SOURCE_DATE_EPOCH.
        delivery_id: The forge's idempotency key for this delivery (GitHub hook id +
            delivery GUID, GitLab `Idempotency-Key`/`webhook-id`).
        source_repo: Where the commit lives when it differs from `repo` (fork PRs),
            else the same as `repo`; the profile archive is fetched from here.
        project_id: GitLab's numeric project id of `repo`, else None.
        web_url: The repository's web page, for links to the commit.
        title: The commit message's first line or the PR title, shown on pages.
        sender: Who pushed or opened the request.
        previous_sha: The commit the branch or pull request pointed at before this
            push, when the forge says (GitHub `before`, GitLab `before`/`oldrev`);
            None for a new branch or tag, or when unknown. A build whose commit is
            another build's `previous_sha` on the same line is the older of the two,
            whatever order their deliveries arrived in.
    """

    forge: Forge
    repo: str
    commit_sha: str
    ref: str
    kind: RefKind
    pr_number: int | None
    trusted: bool
    commit_time: datetime
    delivery_id: str
    source_repo: str
    project_id: int | None = None
    web_url: str = ""
    title: str = ""
    sender: str = ""
    previous_sha: str | None = None

    @property
    def ref_name(self) -> str:
        """The short name of the ref: branch or tag without its `refs/…/` prefix."""
        for prefix in ("refs/heads/", "refs/tags/"):
            if self.ref.startswith(prefix):
                return self.ref[len(prefix) :]
        return self.ref


class ReleaseState(enum.StrEnum):
    """Where a tag build's release is: the runner's outbox publishes it after the build.

    `queued` until the first attempt, `publishing` while an attempt runs, `retrying`
    after an attempt failed (`next_attempt_at` says when the next one starts), then
    `published`, or `refused` when the forge refused it for good.
    """

    QUEUED = "queued"
    PUBLISHING = "publishing"
    RETRYING = "retrying"
    PUBLISHED = "published"
    REFUSED = "refused"

    @property
    def is_final(self) -> bool:
        """Whether publishing is over (published or refused)."""
        return self in (ReleaseState.PUBLISHED, ReleaseState.REFUSED)


@dataclass(frozen=True, slots=True)
class ReleaseFile:
    """One file of a release, as the runner publishes it.

    Attributes:
        name: The file (and asset) name.
        size: Its size in bytes.
        sha256: Its SHA-256, lowercase hex.
        uploaded: Whether the forge holds it whole (uploaded, or found there).
    """

    name: str
    size: int
    sha256: str
    uploaded: bool = False


@dataclass(frozen=True, slots=True)
class Release:
    """The publishing of a tag build's release: its progress and its result.

    Attributes:
        tag: The tag released.
        state: Where publishing is.
        attempts: How many attempts failed so far.
        refusals: How many of the latest attempts in a row the forge refused (not an
            outage); past a few, the release is refused for good.
        next_attempt_at: When the next attempt is due (UTC), while one is to come.
        last_error: Why the last attempt failed, or why the forge refused; "" if none.
        url: The release's page on the forge once published, else "".
        files: The files published, in publishing order (empty before the first
            attempt has read the build's artifacts).
        updated_at: When any of this last changed (UTC).
    """

    tag: str
    state: ReleaseState
    updated_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str = ""
    url: str = ""
    files: tuple[ReleaseFile, ...] = ()
    refusals: int = 0


@dataclass(frozen=True, slots=True)
class PackageEntry:
    """One package a build installed, as its repository database described the file.

    Attributes:
        name: The package name.
        version: Its full version (`[epoch:]pkgver-pkgrel`).
        repo: The repository it came from (`core`, `extra`, …).
        sha256: The package file's sha256.
    """

    name: str
    version: str
    repo: str
    sha256: str


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """A stored build: its request, its state and its timings.

    Attributes:
        id: The build's id, stable for its lifetime.
        request: What was asked for.
        state: Where it is in its lifecycle.
        created_at: When the request was stored (UTC).
        started_at: When a worker started it, else None.
        finished_at: When it reached a final state, else None.
        detail: A short human-readable note on the state (why it failed, who
            superseded it); empty when there is nothing to add.
        packages: The packages the build installed (sorted by name), once they were
            resolved; None before that (and in build lists, which leave them out).
        release: The release this build publishes (trusted tag builds that
            succeeded), else None.
    """

    id: int
    request: BuildRequest
    state: BuildState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str = ""
    packages: tuple[PackageEntry, ...] | None = None
    release: Release | None = None


class Submission(NamedTuple):
    """The outcome of storing a request: its build id and whether it is new."""

    build_id: int
    created: bool


class BuildSink(Protocol):
    """Stores build requests durably, deduplicated. Implemented by the job store."""

    async def submit(self, request: BuildRequest) -> Submission:
        """Store `request` unless it repeats one already stored; return its build.

        A repeat is the same `delivery_id` (a redelivery), or the same forge, repo
        and commit as a stored branch or pull request build that was not cancelled
        (a push and a pull request update for one commit make one build). A tag
        makes its own build, deduplicated per tag and commit, because it publishes.
        Returns only once the request is durable.
        """
        ...


class BuildCatalog(Protocol):
    """Reads stored builds. Implemented by the job store."""

    async def get(self, build_id: int) -> BuildRecord | None:
        """Return the build with this id, or None."""
        ...


class BuildLogSource(Protocol):
    """Finds build logs on disk. Implemented by the runner's log store."""

    def existing(self, build_id: int) -> Path | None:
        """Return the build's log file if it has one yet, else None."""
        ...


# ---------------------------------------------------------------------------------
# Seams of the build pages, the JSON API and the health endpoints. Implemented in
# `runner.web` (adapters over the job store, the worker and the pipeline).
# ---------------------------------------------------------------------------------


class BuildBrowser(Protocol):
    """Lists stored builds, newest first. Implemented by the job store."""

    async def list_builds(
        self,
        *,
        repo: str | None = None,
        state: BuildState | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[BuildRecord]:
        """Return up to `limit` builds with ids below `before_id`, newest first.

        Args:
            repo: Only builds of this repository (exact name), when given.
            state: Only builds in this state, when given.
            limit: The most builds to return (1 to 1000).
            before_id: Keyset pagination: only ids smaller than this one.
        """
        ...


class BuildControl(Protocol):
    """Cancels and retries builds on an administrator's request.

    Implementations translate their own errors into `webhooks.exceptions`:
    `BuildNotFound` for an unknown id, `BuildConflict` when the build's state does
    not allow the action.
    """

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel a queued or running build (stopping it if it runs); return it."""
        ...

    async def retry(self, build_id: int) -> int:
        """Queue a new build of a finished build's request; return the new id."""
        ...

    async def publish(self, build_id: int) -> BuildRecord:
        """Publish a succeeded trusted tag build's files again, without rebuilding.

        For a release refused for good (after the token or the forge was fixed) or
        published and then deleted. Returns the build, its release queued again.
        """
        ...


SHA256_SUMS: Final = "sha256sums"
"""The file beside a build's ISOs listing their SHA-256 sums (`sha256sum -c` reads it)."""
B2_SUMS: Final = "b2sums"
"""The file beside a build's ISOs listing their BLAKE2b sums (`b2sum -c` reads it)."""
SUMS_FILES: Final = (SHA256_SUMS, B2_SUMS)
"""Every sums file a finished build has, in the order they are written and listed."""
TRUST_FILE: Final = ".trust.json"
"""The hidden file beside a build's ISOs saying who signed them and what the rebuild
check found (`runner.publish.sealer` writes it; pages and the API read it); as a hidden
name it is neither listed nor served as an artifact."""
RELEASE_NOTES_FILE: Final = ".release-notes.md"
"""The hidden file beside a tag build's ISOs holding its release body, written at build
time with its signatures (`runner.publish.sealer`): where it was built from, the rebuild
check's verdict and how to verify; the outbox's release step publishes it as the body."""


@dataclass(frozen=True, slots=True)
class Trust:
    """What a finished build's trust file says.

    Attributes:
        signed_by: The minisign key id its files are signed with, or None.
        reproducibility: "identical", "different" or "not-checked".
        differences: The differing paths inside the ISO (cleaned, bounded).
        difference_count: How many paths differ in all.
    """

    signed_by: str | None
    reproducibility: str
    differences: tuple[str, ...] = ()
    difference_count: int = 0


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The public key release files are signed with, as the pages show it.

    Attributes:
        key_id: minisign's key id (upper-case hex).
        text: The minisign public key file, served at `/signing-key.pub`.
    """

    key_id: str
    text: str


def artifacts_dir(root: Path, build_id: int) -> Path:
    """Return where a finished build's ISOs and sums files are kept: `<root>/<build id>/`.

    `root` is the runner's `sandbox.iso_output_root`: the pipeline writes there, the web
    app serves from there and retention removes it.
    """
    return root / str(int(build_id))


class ArtifactSource(Protocol):
    """Finds a finished build's files. Implemented over the pipeline's artifacts."""

    def directory(self, build_id: int) -> Path | None:
        """Return the directory holding the build's ISOs and checksum files, or None."""
        ...


@dataclass(frozen=True, slots=True)
class Artifact:
    """One downloadable file of a finished build.

    Attributes:
        name: The plain file name (no directory part).
        size: Its size in bytes.
        sha256: Its SHA-256 from the build's `sha256sums`, or "" if not listed there.
        b2: Its BLAKE2b from the build's `b2sums`, or "" if not listed there.
    """

    name: str
    size: int
    sha256: str = ""
    b2: str = ""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """One readiness check's result.

    Attributes:
        name: What was checked (`store`, `sandbox_base`, `disk:/var/lib/...`).
        ok: Whether it passed.
        detail: What was found, or what is wrong and what to do; never a secret.
    """

    name: str
    ok: bool
    detail: str


class ReadinessProbe(Protocol):
    """Says whether the service can take builds now. Implemented in `runner.web`."""

    async def check(self) -> list[ReadinessCheck]:
        """Run every check and return each result; must not raise for a failed check."""
        ...


BOOT_DIR: Final = "boot"
"""The sub-directory of a build's artifact directory holding its boot test screenshots."""


@dataclass(frozen=True, slots=True)
class BootTestRecord:
    """One boot test of a finished build's ISO, as stored with the build and shown.

    Attributes:
        name: Which boot it was, e.g. "bios", "uefi", "bios, usb, kernel"; unique
            within the build.
        firmware: "bios" or "uefi".
        medium: "cdrom" or "usb".
        mode: "firmware" (through the ISO's boot loader) or "kernel" (its kernel and
            initramfs booted directly).
        outcome: "passed", "failed", "timed_out", or "error" (the test could not run).
        required: Whether a failure fails the build.
        accelerator: "kvm" or "tcg" ("" when the test could not run).
        seconds: From the guest's start to the verdict.
        reason: One sentence on how it ended.
        serial_tail: The last lines of the serial console, oldest first.
        screenshot: The PNG's file name in the build's `BOOT_DIR`, or "" if none.
        command_line: The kernel command line booted, when known.
    """

    name: str
    firmware: str
    medium: str
    mode: str
    outcome: str
    required: bool
    accelerator: str
    seconds: float
    reason: str
    serial_tail: tuple[str, ...] = ()
    screenshot: str = ""
    command_line: str = ""

    @property
    def passed(self) -> bool:
        """True if the ISO booted to the expected pattern."""
        return self.outcome == "passed"


class BootTestSource(Protocol):
    """Reads a build's boot test results. Implemented by the job store."""

    async def boot_tests(self, build_id: int) -> list[BootTestRecord]:
        """Return the build's boot tests in the order they ran (empty if none)."""
        ...
