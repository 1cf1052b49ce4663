"""The outbox's release step: publish a trusted tag build's files, and keep at it.

I/O shell around the forge clients and the job store. A build is `succeeded` once its
files are on disk; the same transaction queued a `RELEASE` notification (see
`runner.notifications.status_notifier`). `Publisher` drains those, one attempt at a
time per release:

- an attempt reads the build's files (once: their names, sizes and digests are kept in
  the release record), marks the release `publishing`, and asks the forge client to
  publish; the client resumes from what the forge holds (`runner.forges.releaseplan`),
  so an attempt after a restart or an outage only sends what is missing, and the ISO
  on disk is published, never rebuilt; every file the build kept goes up, its
  signatures and provenance included, with the body the build wrote beside them
  (`webhooks.build.RELEASE_NOTES_FILE`: the rebuild check's verdict, the signing key,
  how to verify) and the boot tests' line;
- each file the forge holds whole is recorded as it happens (the build page and the
  API show the progress);
- success records `published` with the release's URL; a failure records `retrying`
  with the next attempt's time (2 s doubling to 10 minutes, forever for outages), or
  `refused` for good: at once when no attempt can ever succeed (`ForgeError.final`,
  or the build's files are gone), after `REFUSAL_ATTEMPTS` refusals in a row for
  other refusals (a token or permission a person may still fix; outages in between
  do not count, and reset the count);
- every outcome is recorded together with the commit status that says it ("ISO
  built; release published", "…; publishing the release (attempt 3, retrying in
  2 min)", "…; release refused: …"), and counted in the metrics.

A process killed mid-attempt leaves the notification due: the next start resumes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import anyio
import structlog

from runner.boottest.policy import verdict
from runner.exceptions import NotificationNotFound, ReleaseFilesGone, StoreError
from runner.forges.exceptions import ForgeError
from runner.forges.protocol import ForgeClient
from runner.forges.releaseplan import LocalAsset
from runner.jobs import RELEASE, STATUS, Notification, Outgoing, publishes_release
from runner.metrics import Metrics
from runner.notifications import release_payload, retry_delay
from runner.publish.files import release_files, release_notes
from runner.store import JobStore
from webhooks.build import (
    BuildRecord,
    BuildState,
    Forge,
    Release,
    ReleaseFile,
    ReleaseState,
    artifacts_dir,
)

_log = structlog.get_logger()

REFUSAL_ATTEMPTS: Final = 5
"""Refusals in a row before a release the forge refuses (401, 403, 404, 422) is given up.

A few, as for statuses: a token may be renewed or a permission granted meanwhile.
Outages and rate limits are retried until they end; final refusals (a file too large,
an immutable release lacking files) are given up at once."""

# Attempt results, the `result` label of the release attempt metric.
PUBLISHED, RETRYING, REFUSED = "published", "retrying", "refused"


def should_report(attempts: int) -> bool:
    """Whether a failed attempt gets its own commit status: the first three, then 2ⁿ.

    A week-long outage makes a thousand attempts; GitHub keeps at most 1000 statuses
    per commit and context, and GitLab adds a job to the pipeline for each.
    """
    return attempts <= 3 or attempts & (attempts - 1) == 0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Publisher:
    """Publishes due releases from the outbox through the forge clients.

    Args:
        store: The job store holding the outbox and the release records.
        clients: The forge client of each configured forge.
        artifacts_root: Where builds keep their files (`sandbox.iso_output_root`).
        base_url: The public base URL (the commit status links the build page).
        clock: The current UTC time (tests pass a fake one).
        poll_seconds: How often the outbox is checked without a wake-up.
        metrics: Counts attempts by forge and result; None counts nothing.
        refusal_attempts: Refusals in a row before a release is given up (unless final).
        statuses_enqueued: Called after a commit status was enqueued (the notifier's
            `wake`), so that it goes out at once.
    """

    def __init__(
        self,
        store: JobStore,
        clients: Mapping[Forge, ForgeClient],
        *,
        artifacts_root: Path,
        base_url: str,
        clock: Callable[[], datetime] = _utc_now,
        poll_seconds: float = 2.0,
        metrics: Metrics | None = None,
        refusal_attempts: int = REFUSAL_ATTEMPTS,
        statuses_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clients = clients
        self._root = artifacts_root
        self._base_url = base_url
        self._clock = clock
        self._poll = poll_seconds
        self._metrics = metrics
        self._refusal_attempts = refusal_attempts
        self._statuses_enqueued = statuses_enqueued
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Ask for a publishing round now (a release was just queued)."""
        self._wake.set()

    async def run(self) -> None:
        """Publish due releases until cancelled; a failing store is waited out."""
        while True:
            try:
                await self.publish_due()
            except StoreError:
                _log.exception("release_outbox_unreadable", retry_seconds=self._poll)
            with anyio.move_on_after(self._poll):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def publish_due(self, limit: int = 10) -> int:
        """Make one attempt for each release due now; return how many were published."""
        published = 0
        due = await self._store.due_notifications(self._clock(), limit, kinds=(RELEASE,))
        for notification in due:
            with structlog.contextvars.bound_contextvars(build_id=notification.build_id):
                if await self._attempt(notification) is ReleaseState.PUBLISHED:
                    published += 1
        return published

    async def _attempt(self, notification: Notification) -> ReleaseState | None:
        record = await self._store.get(notification.build_id)
        if (
            record is None
            or record.state is not BuildState.SUCCEEDED
            or not publishes_release(record.request)
        ):
            # Never publish what is not a succeeded trusted tag build, whatever queued it.
            _log.error("release_dropped", reason="not a succeeded trusted tag build")
            await self._store.notification_done(notification.id)
            return None
        tag = str(notification.payload.get("tag") or record.request.ref_name)
        release = record.release or Release(
            tag=tag, state=ReleaseState.QUEUED, updated_at=self._clock()
        )
        try:
            return await self._publish(notification, record, release)
        except NotificationNotFound:
            _log.warning("release_notification_gone")
            return None

    async def _publish(
        self, notification: Notification, record: BuildRecord, release: Release
    ) -> ReleaseState:
        client = self._clients.get(record.request.forge)
        try:
            if client is None:
                return await self._failed(
                    notification,
                    record,
                    release,
                    f"{record.request.forge} has no API token configured: add one, and the "
                    "release is published at the next attempt",
                    final=False,
                    transient=True,
                )
            files = await self._files(record.id, release)
            body = await self._notes(record)
        except ReleaseFilesGone as exc:
            return await self._failed(
                notification, record, release, str(exc), final=True, transient=False
            )
        release = dataclasses.replace(
            release,
            state=ReleaseState.PUBLISHING,
            files=release.files or tuple(ReleaseFile(f.name, f.size, f.sha256) for f in files),
            updated_at=self._clock(),
        )
        await self._store.update_release(notification.id, record.id, release)
        current = release

        async def progress(name: str) -> None:
            nonlocal current
            current = dataclasses.replace(
                current,
                files=tuple(
                    dataclasses.replace(f, uploaded=True) if f.name == name else f
                    for f in current.files
                ),
                updated_at=self._clock(),
            )
            await self._store.update_release(notification.id, record.id, current)

        _log.info("release_attempt", tag=release.tag, attempt=release.attempts + 1)
        try:
            url = await client.publish_release(
                record.request.repo,
                release.tag,
                files,
                name=release.tag,
                body=body,
                progress=progress,
            )
        except ForgeError as exc:
            return await self._failed(
                notification,
                record,
                current,
                str(exc),
                final=exc.final,
                transient=exc.transient,
            )
        except Exception as exc:  # noqa: BLE001 - one release's bug must not stop the others
            _log.exception("release_attempt_crashed", tag=release.tag)
            error = f"internal error in isorunner ({type(exc).__name__}); see the service log"
            return await self._failed(
                notification, record, current, error, final=False, transient=True
            )
        done = dataclasses.replace(
            current,
            state=ReleaseState.PUBLISHED,
            url=url,
            next_attempt_at=None,
            last_error="",
            refusals=0,
            files=tuple(dataclasses.replace(f, uploaded=True) for f in current.files),
            updated_at=self._clock(),
        )
        await self._finish(notification, record, done, PUBLISHED)
        _log.info("release_published", tag=release.tag, url=url, attempts=done.attempts + 1)
        return ReleaseState.PUBLISHED

    async def _notes(self, record: BuildRecord) -> str:
        """The release notes, and the boot tests' line when all passed.

        The notes are the body the build wrote beside its files (the rebuild check's
        verdict, the signing key, how to verify), else the commit it was built from.
        """
        directory = artifacts_dir(self._root, record.id)
        try:
            stored = await release_notes(directory)
        except OSError as exc:
            raise ReleaseFilesGone(
                f"the build's release notes in {directory} cannot be read ({exc.strerror}); "
                "retry the build to publish the tag"
            ) from exc
        notes = stored or f"Built by isorunner from {record.request.commit_sha}."
        booted = verdict(await self._store.boot_tests(record.id)).release_line
        return f"{notes}\n\n{booted}" if booted else notes

    async def _files(self, build_id: int, release: Release) -> Sequence[LocalAsset]:
        """The files to publish: as recorded by the first attempt, else read from disk.

        Raises:
            ReleaseFilesGone: The files are gone or changed since the build wrote them.
        """
        directory = artifacts_dir(self._root, build_id)
        if not release.files:
            try:
                files = await release_files(directory)
            except OSError as exc:
                raise ReleaseFilesGone(
                    f"the build's files in {directory} cannot be read ({exc.strerror}); "
                    "retry the build to publish the tag"
                ) from exc
            if not files:
                raise ReleaseFilesGone(
                    f"the build's files are gone from {directory}; retry the build"
                )
            return files
        found = []
        for recorded in release.files:
            path = directory / recorded.name
            try:
                size = (await anyio.Path(path).stat()).st_size
            except OSError:
                size = -1
            if size != recorded.size:
                raise ReleaseFilesGone(
                    f"{recorded.name} is gone from {directory} or changed since the build "
                    "wrote it; retry the build to publish the tag"
                )
            found.append(LocalAsset(path, recorded.size, recorded.sha256))
        return found

    async def _failed(
        self,
        notification: Notification,
        record: BuildRecord,
        release: Release,
        error: str,
        *,
        final: bool,
        transient: bool,
    ) -> ReleaseState:
        attempts = release.attempts + 1
        refusals = 0 if transient else release.refusals + 1
        now = self._clock()
        if final or refusals >= self._refusal_attempts:
            refused = dataclasses.replace(
                release,
                state=ReleaseState.REFUSED,
                attempts=attempts,
                refusals=refusals,
                next_attempt_at=None,
                last_error=error,
                updated_at=now,
            )
            _log.error("release_refused", tag=release.tag, attempts=attempts, error=error)
            await self._finish(notification, record, refused, REFUSED)
            return ReleaseState.REFUSED
        retry_at = now + retry_delay(attempts - 1)
        waiting = dataclasses.replace(
            release,
            state=ReleaseState.RETRYING,
            attempts=attempts,
            refusals=refusals,
            next_attempt_at=retry_at,
            last_error=error,
            updated_at=now,
        )
        _log.warning(
            "release_not_published",
            tag=release.tag,
            attempts=attempts,
            retry_at=retry_at.isoformat(),
            error=error,
        )
        follow_up: list[Outgoing] = []
        if should_report(attempts):
            follow_up.append((STATUS, release_payload(record, waiting, self._base_url, now)))
        await self._store.update_release(notification.id, record.id, waiting, follow_up=follow_up)
        self._count(record, RETRYING, statuses=bool(follow_up))
        return ReleaseState.RETRYING

    async def _finish(
        self, notification: Notification, record: BuildRecord, release: Release, result: str
    ) -> None:
        status = release_payload(record, release, self._base_url, self._clock())
        await self._store.update_release(
            notification.id, record.id, release, follow_up=[(STATUS, status)]
        )
        self._count(record, result, statuses=True)

    def _count(self, record: BuildRecord, result: str, *, statuses: bool) -> None:
        if statuses and self._statuses_enqueued is not None:
            self._statuses_enqueued()
        if self._metrics is not None:
            self._metrics.release_attempt(record.request.forge.value, result)
