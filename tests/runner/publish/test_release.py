"""Tests for runner.publish.release: the outbox's release step over a real store.

The forge client is the in-memory fake of tests/runner/fakes.py; the store is the real
SQLite store with the service's status hook; time is a fake clock moved by the test.
Publishing against forges over HTTP is tested end to end in tests/e2e.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from runner.forges.exceptions import AssetTooLarge, Forbidden, ForgeUnavailable
from runner.jobs import RELEASE, STATUS, Event
from runner.metrics import Metrics
from runner.notifications import status_notifier
from runner.publish import REFUSAL_ATTEMPTS, Publisher
from runner.publish.release import should_report
from runner.store import SQLiteStore
from tests.runner.fakes import BASE_URL, FakeForge
from tests.runner.store.samples import START, FakeClock, make_request
from webhooks.build import (
    BootTestRecord,
    BuildRecord,
    Forge,
    RefKind,
    ReleaseState,
    artifacts_dir,
)

pytestmark = pytest.mark.anyio

NAMES = ["t-1-x86_64.iso", "t-1-x86_64.iso.minisig", "provenance.json", "sha256sums", "b2sums"]


@dataclasses.dataclass
class Rig:
    store: SQLiteStore
    forge: FakeForge
    clock: FakeClock
    root: Path
    registry: CollectorRegistry
    publisher: Publisher

    async def tag_build(self, *, files: bool = True) -> int:
        """A trusted tag build that succeeded, its files on disk; return its id."""
        request = make_request(ref="refs/tags/v1", kind=RefKind.TAG)
        build_id = (await self.store.submit(request)).build_id
        await self.store.claim_next()
        if files:
            directory = artifacts_dir(self.root, build_id)
            directory.mkdir(parents=True)
            for name in NAMES:
                (directory / name).write_bytes(name.encode() * 10)
        await self.store.finish(build_id, Event.SUCCEED, "ISO built in 3s")
        return build_id

    async def record(self, build_id: int) -> BuildRecord:
        """The build as the store has it now."""
        record = await self.store.get(build_id)
        assert record is not None
        return record

    async def statuses(self, build_id: int) -> list[str]:
        """The descriptions of the build's statuses still in the outbox, in order."""
        texts = []
        while due := await self.store.due_notifications(
            self.clock() + timedelta(days=9), 10, kinds=(STATUS,)
        ):
            for notification in due:
                if notification.build_id == build_id:
                    texts.append(str(notification.payload["description"]))
                await self.store.notification_done(notification.id)
        return texts

    def attempts(self, result: str) -> float | None:
        """The attempt counter's value for the fake forge and `result`."""
        labels = {"forge": "github", "result": result}
        return self.registry.get_sample_value("isorunner_release_attempts_total", labels)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A publisher over a real store, an in-memory forge and a fake clock."""
    clock = FakeClock()
    notify = status_notifier(BASE_URL)
    async with SQLiteStore(tmp_path / "db.sqlite", clock=clock, notify=notify) as store:
        forge = FakeForge(b"")
        registry = CollectorRegistry()
        publisher = Publisher(
            store,
            {Forge.GITHUB: forge},
            artifacts_root=tmp_path / "artifacts",
            base_url=BASE_URL,
            clock=clock,
            metrics=Metrics(registry),
        )
        yield Rig(store, forge, clock, tmp_path / "artifacts", registry, publisher)


async def test_publisher_publishes_every_file_on_disk_in_order(rig: Rig) -> None:
    """ISO, signature, provenance, then sums go up; the record and the status say published."""
    build_id = await rig.tag_build()
    assert await rig.publisher.publish_due() == 1
    assert rig.forge.releases == [
        (
            "v1",
            [
                "t-1-x86_64.iso",
                "t-1-x86_64.iso.minisig",
                "provenance.json",
                "sha256sums",
                "b2sums",
            ],
        )
    ]
    release = (await rig.record(build_id)).release
    assert release is not None
    assert (release.state, release.url, release.attempts) == (
        ReleaseState.PUBLISHED,
        "https://forge/owner/profile/releases/v1",
        0,
    )
    assert all(f.uploaded for f in release.files)
    assert await rig.store.due_notifications(START + timedelta(days=1), 9, kinds=(RELEASE,)) == []
    assert (await rig.statuses(build_id))[-2:] == [
        "ISO built in 3s; publishing the release",
        "ISO built in 3s; release published",
    ]
    assert rig.attempts("published") == 1


async def test_publisher_notes_name_the_commit_and_where_the_iso_boots(rig: Rig) -> None:
    """The release notes carry the commit and, when every boot test passed, where it boots."""
    build_id = await rig.tag_build()
    booted = [
        BootTestRecord(firmware, firmware, "cdrom", "firmware", "passed", True, "tcg", 21.0, "ok")
        for firmware in ("bios", "uefi")
    ]
    await rig.store.save_boot_tests(build_id, booted)
    await rig.publisher.publish_due()
    record = await rig.record(build_id)
    assert rig.forge.release_bodies == [
        f"Built by isorunner from {record.request.commit_sha}.\n\n"
        "Boots on BIOS and UEFI (QEMU), 21 s."
    ]


async def test_publisher_retries_an_outage_with_backoff_and_keeps_the_progress(
    rig: Rig,
) -> None:
    """A failed attempt records the files already up, waits 2 s, then 4 s, then publishes."""
    build_id = await rig.tag_build()
    outage = ForgeUnavailable("the forge answered 503", status_code=503)
    rig.forge.release_errors = [outage, outage]
    rig.forge.release_progress = 1
    await rig.publisher.publish_due()
    release = (await rig.record(build_id)).release
    assert release is not None
    assert (release.state, release.attempts, release.last_error) == (
        ReleaseState.RETRYING,
        1,
        "the forge answered 503",
    )
    assert release.next_attempt_at == START + timedelta(seconds=2)
    assert [f.uploaded for f in release.files] == [True, False, False, False, False]
    assert await rig.publisher.publish_due() == 0  # not due yet
    rig.clock.advance(2)
    await rig.publisher.publish_due()
    release = (await rig.record(build_id)).release
    assert release is not None
    assert release.next_attempt_at == START + timedelta(seconds=2 + 4)
    rig.clock.advance(4)
    assert await rig.publisher.publish_due() == 1
    statuses = await rig.statuses(build_id)
    assert statuses[-3:] == [
        "ISO built in 3s; publishing the release (attempt 1, retrying in 2 s)",
        "ISO built in 3s; publishing the release (attempt 2, retrying in 4 s)",
        "ISO built in 3s; release published",
    ]
    assert (rig.attempts("retrying"), rig.attempts("published")) == (2, 1)


async def test_publisher_waits_out_a_long_outage_with_few_statuses(rig: Rig) -> None:
    """Twenty failed attempts over hours end in one release; only 7 of them post a status."""
    build_id = await rig.tag_build()
    rig.forge.release_errors = [ForgeUnavailable("down")] * 20
    for _ in range(21):
        await rig.publisher.publish_due()
        rig.clock.advance(600)
    assert len(rig.forge.releases) == 1
    statuses = await rig.statuses(build_id)
    retrying = [s for s in statuses if "retrying in" in s]
    assert [s.split("attempt ")[1].split(",")[0] for s in retrying] == [
        "1",
        "2",
        "3",
        "4",
        "8",
        "16",
    ]
    assert statuses[-1] == "ISO built in 3s; release published"


async def test_publisher_gives_up_a_refusal_after_the_attempts(rig: Rig) -> None:
    """A 403 on every attempt: refused after REFUSAL_ATTEMPTS, and the status says why."""
    build_id = await rig.tag_build()
    refusal = Forbidden("could not upload: the forge answered 403; give the token contents")
    rig.forge.release_errors = [refusal] * REFUSAL_ATTEMPTS
    for _ in range(REFUSAL_ATTEMPTS + 2):
        await rig.publisher.publish_due()
        rig.clock.advance(600)
    release = (await rig.record(build_id)).release
    assert release is not None
    assert (release.state, release.attempts) == (ReleaseState.REFUSED, REFUSAL_ATTEMPTS)
    assert rig.forge.releases == []
    assert (await rig.statuses(build_id))[-1] == (
        "ISO built in 3s; release refused: could not upload: the forge answered 403; "
        "give the token contents"
    )


async def test_publisher_counts_only_refusals_in_a_row(rig: Rig) -> None:
    """Refusals broken by an outage start counting again: a long outage refuses nothing."""
    build_id = await rig.tag_build()
    refusal = Forbidden("the forge answered 403")
    almost = [refusal] * (REFUSAL_ATTEMPTS - 1)
    rig.forge.release_errors = [*almost, ForgeUnavailable("down"), *almost]
    for _ in range(2 * REFUSAL_ATTEMPTS):
        await rig.publisher.publish_due()
        rig.clock.advance(600)
    release = (await rig.record(build_id)).release
    assert release is not None
    assert (release.state, release.attempts, release.refusals) == (
        ReleaseState.PUBLISHED,
        2 * REFUSAL_ATTEMPTS - 1,
        0,
    )


async def test_publisher_refuses_at_once_what_no_attempt_can_fix(rig: Rig) -> None:
    """A final error (an ISO over the forge's limit) is refused at the first attempt."""
    build_id = await rig.tag_build()
    too_large = AssetTooLarge("t-1-x86_64.iso is over 2 GiB", path="x", size=3, limit=2)
    rig.forge.release_errors = [too_large]
    await rig.publisher.publish_due()
    release = (await rig.record(build_id)).release
    assert release is not None
    assert (release.state, release.attempts, release.last_error) == (
        ReleaseState.REFUSED,
        1,
        "t-1-x86_64.iso is over 2 GiB",
    )
    assert rig.attempts("refused") == 1


async def test_publisher_refuses_a_build_whose_files_are_gone(rig: Rig) -> None:
    """No files on disk: nothing to publish ever, refused, nothing sent."""
    build_id = await rig.tag_build(files=False)
    await rig.publisher.publish_due()
    release = (await rig.record(build_id)).release
    assert release is not None
    assert release.state is ReleaseState.REFUSED
    assert "gone" in release.last_error
    assert rig.forge.releases == []


async def test_publisher_refuses_files_changed_since_the_first_attempt(rig: Rig) -> None:
    """A file that changed size after the first attempt recorded it is never published."""
    build_id = await rig.tag_build()
    rig.forge.release_errors = [ForgeUnavailable("down")]
    await rig.publisher.publish_due()
    (artifacts_dir(rig.root, build_id) / "sha256sums").write_text("tampered")
    rig.clock.advance(2)
    await rig.publisher.publish_due()
    release = (await rig.record(build_id)).release
    assert release is not None
    assert release.state is ReleaseState.REFUSED
    assert "sha256sums is gone" in release.last_error


async def test_publisher_waits_for_a_forge_without_a_token(rig: Rig) -> None:
    """A release of a forge with no client waits (retrying) and says what to configure."""
    build_id = await rig.tag_build()
    lonely = Publisher(rig.store, {}, artifacts_root=rig.root, base_url=BASE_URL, clock=rig.clock)
    await lonely.publish_due()
    release = (await rig.record(build_id)).release
    assert release is not None
    assert release.state is ReleaseState.RETRYING
    assert "github has no API token configured" in release.last_error


async def test_publisher_drops_a_release_of_an_untrusted_build(rig: Rig) -> None:
    """A release queued for a fork's build is never published, whatever queued it."""
    fork = make_request(ref="refs/tags/v1", kind=RefKind.TAG, trusted=False)
    build_id = (await rig.store.submit(fork)).build_id
    await rig.store.enqueue_notification(build_id, RELEASE, {"tag": "v1"})
    await rig.publisher.publish_due()
    assert rig.forge.releases == []
    assert await rig.store.due_notifications(START, 9, kinds=(RELEASE,)) == []


def test_should_report_the_first_attempts_then_powers_of_two() -> None:
    """Statuses for attempts 1, 2, 3, 4, 8, 16, …: a long outage stays under forge limits."""
    assert [n for n in range(1, 70) if should_report(n)] == [1, 2, 3, 4, 8, 16, 32, 64]
