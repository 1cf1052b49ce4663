"""The build lifecycle: its events, its transition table, and the job store's values.

Pure: no I/O. `transition` is the only function that decides whether a build may move
from one state to another; the job store (`runner.store`) applies it inside the
transaction that writes the new state, so no code path can bypass the table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from runner.exceptions import IllegalTransition
from webhooks.build import BuildRecord, BuildRequest, BuildState, RefKind

# ---------------------------------------------------------------------------------
# Theory of operation
# ---------------------------------------------------------------------------------
#
# A build is one stored row with one state (`webhooks.build.BuildState`). It moves only
# when an `Event` happens to it, and only along an edge of `TRANSITIONS` below:
#
#                 START                 SUCCEED / FAIL / ERROR / CANCEL
#     QUEUED ─────────────▶ RUNNING ──────────────────────────────────▶ final
#       │  ▲                  │   (SUCCEEDED / FAILED / ERRORED / CANCELLED)
#       │  └─RECOVER_REQUEUE──┤
#       │                     └─RECOVER_ERROR──▶ ERRORED
#       └──CANCEL──▶ CANCELLED
#
# Rule 1: the four final states have no outgoing edges. Once the forge has been told
# that a build succeeded, failed, errored or was cancelled, that stays true. To build
# the same commit again, `retry` creates a NEW build (a new id, a new queued row) that
# copies the request; the old build and its log stay as they were.
#
# Rule 2: a build that was RUNNING when the process died has nobody running it. At
# start-up the store finds every such build and sends it exactly one of the two
# recovery events: RECOVER_REQUEUE puts it back in the queue to be re-run from the
# start (started_at is cleared), RECOVER_ERROR ends it as ERRORED. Both are ordinary
# table edges, so recovery needs no special case and the forge is told either way.
#
# Rule 3: CANCEL is allowed from QUEUED (superseded or cancelled before it started)
# and from RUNNING (the worker must then stop the build's sandbox). ERROR is only
# allowed from RUNNING: a queued build that cannot run is cancelled, or started and
# then ended with an error, so that "errored" always means "a worker tried".
#
# Anything else raises `IllegalTransition`. In particular a worker that finishes a
# build that was cancelled under its feet (superseded while running) gets
# `IllegalTransition` from the store and must leave the build cancelled.


class Event(enum.StrEnum):
    """Something that happens to a build and may change its state."""

    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    ERROR = "error"
    CANCEL = "cancel"
    RECOVER_REQUEUE = "recover_requeue"
    RECOVER_ERROR = "recover_error"


TRANSITIONS: Final[Mapping[BuildState, Mapping[Event, BuildState]]] = {
    BuildState.QUEUED: {
        Event.START: BuildState.RUNNING,
        Event.CANCEL: BuildState.CANCELLED,
    },
    BuildState.RUNNING: {
        Event.SUCCEED: BuildState.SUCCEEDED,
        Event.FAIL: BuildState.FAILED,
        Event.ERROR: BuildState.ERRORED,
        Event.CANCEL: BuildState.CANCELLED,
        Event.RECOVER_REQUEUE: BuildState.QUEUED,
        Event.RECOVER_ERROR: BuildState.ERRORED,
    },
    BuildState.SUCCEEDED: {},
    BuildState.FAILED: {},
    BuildState.ERRORED: {},
    BuildState.CANCELLED: {},
}


def transition(state: BuildState, event: Event, *, build_id: int | None = None) -> BuildState:
    """Return the state a build in `state` reaches when `event` happens.

    Args:
        state: The build's current state.
        event: What happened.
        build_id: The build concerned, only used in the error message.

    Returns:
        The new state, from `TRANSITIONS`.

    Raises:
        IllegalTransition: `TRANSITIONS` has no edge for this state and event.
    """
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise IllegalTransition(state, event.value, build_id) from None


# ---------------------------------------------------------------------------------
# The outbox
# ---------------------------------------------------------------------------------
#
# A state change and what the forge must be told about it are stored in one
# transaction (see `NotifyFn`), as notifications in the store's outbox. Each kind has
# one drainer, which delivers a build's notifications of that kind in the order they
# were enqueued and retries with backoff until done or refused for good:
#
#   STATUS   a commit status; `runner.notifications.Notifier` posts it.
#   RELEASE  a trusted tag build's release, queued with its SUCCEED; the build is
#            `succeeded` once its files are on disk, and `runner.publish.Publisher`
#            publishes them from there, across restarts and outages. The store keeps
#            the release's progress and result (`webhooks.build.Release`) beside it.

STATUS: Final = "status"
"""The notification kind of a commit status."""
RELEASE: Final = "release"
"""The notification kind of a release to publish; its payload is `{"tag": <tag>}`."""


def publishes_release(request: BuildRequest) -> bool:
    """Whether a successful build of `request` publishes a release: trusted tags only.

    Fork code is built but never published, whatever ref it claims.
    """
    return request.kind is RefKind.TAG and request.trusted


@dataclass(frozen=True, slots=True)
class Notification:
    """A forge notification waiting in the store's outbox until it is delivered.

    Attributes:
        id: The notification's id in the outbox.
        build_id: The build it is about.
        kind: What to send: `STATUS` or `RELEASE`.
        payload: What to send, as JSON-compatible data filled by the forge code.
        attempts: How many delivery attempts have failed so far.
        next_attempt_at: When it is next due (UTC).
        last_error: Why the last attempt failed; empty before any failure.
    """

    id: int
    build_id: int
    kind: str
    payload: dict[str, object]
    attempts: int
    next_attempt_at: datetime
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Which queued build runs next: trusted first, untrusted ones capped.

    Trusted builds (branches and tags of the repository itself) always go before
    untrusted ones (pull and merge requests from forks), then each kind in arrival
    order. Of one author's untrusted builds, and of one repository's, only the first
    `max_untrusted_per_author` (`max_untrusted_per_repo`) that are queued or running
    can run; the others wait, and say so in their pending status, until those end.

    Attributes:
        max_untrusted_per_author: Queued or running untrusted builds one sender may
            have before the next waits (`sandbox.max_untrusted_per_author`).
        max_untrusted_per_repo: The same for one repository, whoever sent them
            (`sandbox.max_untrusted_per_repo`).
    """

    max_untrusted_per_author: int = 2
    max_untrusted_per_repo: int = 4

    def admissions(self, builds: Iterable[UntrustedBuild]) -> Iterator[tuple[int, str]]:
        """Each queued untrusted build, in id order, and why it waits ("" if it may run).

        Running builds count against their author's and repository's caps; then the
        queued ones are admitted in arrival order while both caps have room. A build
        that waits takes no room, so one author's excess never holds up another's.

        Args:
            builds: The untrusted builds that are queued or running, any order.
        """
        by_author: dict[tuple[str, str], int] = {}
        by_repo: dict[tuple[str, str], int] = {}

        def take(build: UntrustedBuild) -> None:
            by_author[build.author] = by_author.get(build.author, 0) + 1
            by_repo[build.repo] = by_repo.get(build.repo, 0) + 1

        ordered = sorted(builds, key=lambda build: build.id)
        for build in ordered:
            if build.running:
                take(build)
        for build in ordered:
            if build.running:
                continue
            ahead = by_author.get(build.author, 0)
            if ahead >= self.max_untrusted_per_author:
                yield (
                    build.id,
                    (
                        f"waiting: {ahead} untrusted builds of {build.author[1]} are queued or"
                        " running ahead of it"
                        f" (sandbox.max_untrusted_per_author = {self.max_untrusted_per_author})"
                    ),
                )
                continue
            ahead = by_repo.get(build.repo, 0)
            if ahead >= self.max_untrusted_per_repo:
                yield (
                    build.id,
                    (
                        f"waiting: {ahead} untrusted builds of this repository are queued or"
                        " running ahead of it"
                        f" (sandbox.max_untrusted_per_repo = {self.max_untrusted_per_repo})"
                    ),
                )
                continue
            take(build)
            yield build.id, ""


@dataclass(frozen=True, slots=True)
class UntrustedBuild:
    """What the queue policy needs of a queued or running untrusted build.

    Attributes:
        id: The build's id (its place in arrival order).
        author: (forge, sender).
        repo: (forge, repository).
        running: Whether it runs already.
    """

    id: int
    author: tuple[str, str]
    repo: tuple[str, str]
    running: bool


DEFAULT_QUEUE: Final = QueuePolicy()
"""The caps a store uses when none are given (the settings' defaults)."""


Outgoing = tuple[str, Mapping[str, object]]
"""A notification to enqueue: its kind and its JSON-compatible payload."""

NotifyFn = Callable[[BuildRecord], Iterable[Outgoing]]
"""Decides, from a build's new record, which notifications to enqueue with the change.

The store calls it inside the transaction that changes the build, so the change and
its notifications are durable together (nothing can be lost between the two). It must
be pure and quick: it runs inside the store's write group, on the event loop.
"""
