"""Commit status notifications: what to tell the forge about a build, and telling it.

`status_payload`, `release_payload` and `status_notifier` are pure: they turn a build
record (and its release's progress) into the outbox payloads that the job store
enqueues in the same transaction as the change, so a status can never be lost between
the change and the forge call. A trusted tag build that succeeds also gets its
`RELEASE` notification there, which `runner.publish` drains. `Notifier` is the thin
I/O shell that drains the statuses through the forge clients, retrying with backoff
while a forge is down, in order per build; a status the forge refuses for good (not
an outage) is dropped after `PERMANENT_ATTEMPTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import anyio
import structlog

from runner.forges.exceptions import Conflict, ForgeError, TransitionRefused
from runner.forges.protocol import CommitState, ForgeClient
from runner.jobs import RELEASE, STATUS, Notification, NotifyFn, Outgoing, publishes_release
from runner.metrics import Metrics
from runner.store import JobStore
from webhooks.build import BuildRecord, BuildState, Forge, Release, ReleaseState

__all__ = [
    "PERMANENT_ATTEMPTS",
    "STATUS",
    "Notifier",
    "is_transient",
    "release_note",
    "release_payload",
    "retry_delay",
    "status_notifier",
    "status_payload",
]
# Delivery results, the `result` label of the notification metric.
DELIVERED, FAILED, DROPPED = "delivered", "failed", "dropped"
_log = structlog.get_logger()


_STATE_TO_STATUS: Mapping[BuildState, CommitState] = {
    BuildState.QUEUED: CommitState.QUEUED,
    BuildState.RUNNING: CommitState.RUNNING,
    BuildState.SUCCEEDED: CommitState.SUCCESS,
    BuildState.FAILED: CommitState.FAILURE,
    BuildState.ERRORED: CommitState.ERROR,
    BuildState.CANCELLED: CommitState.CANCELLED,
}

_DEFAULT_TEXT: Mapping[BuildState, str] = {
    BuildState.QUEUED: "Queued",
    BuildState.RUNNING: "Building the ISO",
    BuildState.SUCCEEDED: "ISO built",
    BuildState.FAILED: "Build failed",
    BuildState.ERRORED: "Build errored",
    BuildState.CANCELLED: "Build cancelled",
}


def status_payload(record: BuildRecord, base_url: str, *, note: str = "") -> dict[str, object]:
    """The outbox payload for a commit status reflecting `record`.

    Args:
        record: The build, in its new state.
        base_url: The public base URL; the status links to the build's page.
        note: Replaces the description (e.g. the long-running warning).

    Returns:
        JSON-compatible data: `state` (a `CommitState` value), `description`,
        `target_url`.
    """
    # A build's stored detail may predate its start ("re-queued: …" after a restart);
    # once it runs, the status says that it is building (or the warning `note`).
    detail = "" if record.state is BuildState.RUNNING else record.detail
    description = note or detail or _DEFAULT_TEXT[record.state]
    if not note and record.state is BuildState.SUCCEEDED and publishes_release(record.request):
        description = f"{description}; publishing the release"
    return {
        "state": _STATE_TO_STATUS[record.state].value,
        "description": description,
        "target_url": f"{base_url}/builds/{record.id}",
    }


def _wait_text(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def release_note(release: Release, now: datetime) -> str:
    """What the commit status says about a release: its part after the build's detail.

    "publishing the release", "publishing the release (attempt 3, retrying in 2 min)"
    after three failed attempts, "release published", "release refused: <why>".
    """
    if release.state is ReleaseState.PUBLISHED:
        return "release published"
    if release.state is ReleaseState.REFUSED:
        return f"release refused: {release.last_error}"
    if release.state is ReleaseState.RETRYING and release.next_attempt_at is not None:
        wait = _wait_text((release.next_attempt_at - now).total_seconds())
        return f"publishing the release (attempt {release.attempts}, retrying in {wait})"
    return "publishing the release"


def release_payload(
    record: BuildRecord, release: Release, base_url: str, now: datetime
) -> dict[str, object]:
    """The outbox payload of the commit status telling how a build's release stands.

    The state stays the build's (success): the ISO was built whatever becomes of the
    release; the description says the rest.
    """
    detail = record.detail or _DEFAULT_TEXT[record.state]
    return {
        **status_payload(record, base_url),
        "description": f"{detail}; {release_note(release, now)}",
    }


def status_notifier(base_url: str) -> NotifyFn:
    """A `NotifyFn`: one commit status for every state change, and the release to publish.

    A trusted tag build that succeeds also enqueues its `RELEASE` notification, in the
    same transaction as the state change: the build is done once its files are on disk,
    and publishing them survives restarts and outages from there.
    """

    def notify(record: BuildRecord) -> Iterable[Outgoing]:
        outgoing: list[Outgoing] = [(STATUS, status_payload(record, base_url))]
        if record.state is BuildState.SUCCEEDED and publishes_release(record.request):
            outgoing.append((RELEASE, {"tag": record.request.ref_name}))
        return outgoing

    return notify


PERMANENT_ATTEMPTS = 5
"""Attempts before a status the forge refuses for good (401, 403, 404, 422) is dropped.

A few, not one: GitHub answers 422 for a commit it has not indexed yet, and a token
may be renewed between attempts. Until it is dropped, a refused status holds back
the later statuses of its build (they are delivered in order)."""


def is_transient(error: ForgeError) -> bool:
    """Whether the forge may accept the same status later: outages, rate limits, 409s."""
    return error.transient or isinstance(error, Conflict)


def retry_delay(attempts: int) -> timedelta:
    """Backoff after `attempts` failed deliveries: 2 s doubling, capped at 10 minutes."""
    return timedelta(seconds=min(600, 2 ** min(attempts + 1, 10)))


class Notifier:
    """Delivers due outbox notifications through the forge clients.

    Args:
        store: The job store holding the outbox.
        clients: The forge client for each configured forge.
        clock: Returns the current UTC time (injected in tests).
        poll_seconds: How often the outbox is checked without a wake-up.
        metrics: Counts deliveries by forge and result; None counts nothing.
    """

    def __init__(
        self,
        store: JobStore,
        clients: Mapping[Forge, ForgeClient],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_seconds: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._clients = clients
        self._clock = clock
        self._poll = poll_seconds
        self._metrics = metrics
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Ask for a delivery round now (something was just enqueued)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver notifications until cancelled."""
        while True:
            await self.deliver_due()
            with anyio.move_on_after(self._poll):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def deliver_due(self, limit: int = 50) -> int:
        """Deliver the statuses due now; return how many were delivered."""
        delivered = 0
        due = await self._store.due_notifications(self._clock(), limit, kinds=(STATUS,))
        for notification in due:
            if await self._deliver(notification):
                delivered += 1
        return delivered

    async def _deliver(self, notification: Notification) -> bool:
        record = await self._store.get(notification.build_id)
        forge = "unknown" if record is None else record.request.forge.value
        result = await self._attempt(notification, record)
        if self._metrics is not None:
            self._metrics.notification(forge, result)
        return result == DELIVERED

    async def _attempt(self, notification: Notification, record: BuildRecord | None) -> str:
        """Try one delivery; return `DELIVERED`, `FAILED` (retried later) or `DROPPED`."""
        if record is None:
            _log.error(
                "notification_dropped",
                notification_id=notification.id,
                build_id=notification.build_id,
                kind=notification.kind,
                reason="unknown build",
            )
            await self._store.notification_done(notification.id)
            return DROPPED
        client = self._clients.get(record.request.forge)
        if client is None:
            await self._store.notification_failed(
                notification.id,
                self._clock() + retry_delay(notification.attempts),
                f"{record.request.forge} is not configured: add its token to the config",
            )
            return FAILED
        payload = notification.payload
        try:
            await client.set_status(
                record.request.repo,
                record.request.commit_sha,
                CommitState(str(payload["state"])),
                description=str(payload["description"]),
                target_url=str(payload["target_url"]),
                ref=record.request.ref_name,
            )
        except TransitionRefused as exc:
            # GitLab refuses a transition it considers done (e.g. running → running):
            # the forge already shows this state, which is what we wanted.
            _log.info("status_already_set", build_id=record.id, reason=str(exc))
        except ForgeError as exc:
            attempts = notification.attempts + 1
            if not is_transient(exc) and attempts >= PERMANENT_ATTEMPTS:
                _log.error(
                    "status_dropped",
                    reason="the forge refused it every time",
                    build_id=record.id,
                    state=str(payload["state"]),
                    attempts=attempts,
                    error=str(exc),
                )
                await self._store.notification_done(notification.id)
                return DROPPED
            retry_at = self._clock() + retry_delay(notification.attempts)
            _log.warning(
                "status_not_delivered",
                build_id=record.id,
                attempts=attempts,
                retry_at=retry_at.isoformat(),
                error=str(exc),
            )
            await self._store.notification_failed(notification.id, retry_at, str(exc))
            return FAILED
        await self._store.notification_done(notification.id)
        return DELIVERED
