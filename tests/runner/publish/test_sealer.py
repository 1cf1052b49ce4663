"""Tests for runner.publish.sealer through `Pipeline.run` and the outbox's release step.

The forge and sandbox are the fakes of tests/runner/fakes.py (the sandbox writes the ISO
bytes the test chooses, build after build), the store is the real SQLite store with the
service's status hook, the key is real and every signature is checked with
`runner.publish.minisign`; the ISO comparison is injected. A build is sealed before it
succeeds; `Publisher` then publishes what the build left on disk, body included. The
real sandbox runs these steps in tests/e2e/test_release_trust_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runner.buildlogs import BuildLogs
from runner.jobs import Event
from runner.notifications import status_notifier
from runner.pipeline import Outcome, Pipeline, PipelineConfig
from runner.publish import Publisher
from runner.publish.isocompare import Difference
from runner.publish.minisign import SecretKey, generate_secret_key, parse_signature, verify_digest
from runner.publish.sealer import Sealer
from runner.publish.signing import Signer, blake2b_file
from runner.store import SQLiteStore
from sandbox import BuildFailed
from tests.runner.fakes import BASE_URL, FakeForge, FakeSandbox, profile_tarball
from tests.runner.publish.test_provenance import check_slsa_provenance
from tests.runner.store.samples import FakeClock, make_request
from tests.runner.test_pipeline import FakePackageStep
from webhooks.build import RELEASE_NOTES_FILE, TRUST_FILE, Forge, RefKind, Release, ReleaseState

STARTED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ISO = "t-1-x86_64.iso"
TAG = {"ref": "refs/tags/v1.0", "kind": RefKind.TAG}


@dataclass
class Rig:
    """A sealing pipeline and a publisher over a real store, fake forge and sandbox."""

    pipeline: Pipeline
    store: SQLiteStore
    publisher: Publisher
    forge: FakeForge
    sandbox: FakeSandbox
    key: SecretKey
    artifacts: Path
    comparisons: list[tuple[str, str]]

    async def run(self, **request: Any) -> Outcome:
        """Build `make_request(**request)` as the worker does (build 1); publish what is due."""
        build_id = (await self.store.submit(make_request(**request))).build_id
        assert build_id == 1
        record = await self.store.claim_next()
        assert record is not None
        outcome = await self.pipeline.run(record)
        await self.store.finish(build_id, outcome.event, outcome.detail)
        await self.publisher.publish_due()
        return outcome

    async def release(self) -> Release | None:
        """Build 1's release as the store has it."""
        record = await self.store.get(1)
        assert record is not None
        return record.release

    def trust(self) -> dict[str, Any]:
        """The trust file build 1 left."""
        data: dict[str, Any] = json.loads((self.artifacts / "1" / TRUST_FILE).read_text())
        return data


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """The real SQLite store, with the service's status and release hook."""
    async with SQLiteStore(
        tmp_path / "db.sqlite", clock=FakeClock(STARTED), notify=status_notifier(BASE_URL)
    ) as opened:
        yield opened


def rig(
    tmp_path: Path,
    store: SQLiteStore,
    *,
    signer: bool = True,
    rebuild_check: bool = True,
    differing: int = 1,
    packages: FakePackageStep | None = None,
) -> Rig:
    """A sealing pipeline whose ISO comparison reports `differing` paths."""
    comparisons: list[tuple[str, str]] = []

    async def compare(
        sandbox: object, first: Path, second: Path, **kwargs: object
    ) -> list[Difference]:
        comparisons.append((first.name, str(kwargs["run_id"])))
        first_one = [Difference("/arch/version", ("mtime",))]
        return first_one + [Difference(f"/p{i}", ("content",)) for i in range(differing - 1)]

    base = tmp_path / "base"
    (base / "etc" / "isorunner").mkdir(parents=True)
    (base / "etc" / "isorunner" / "manifest.json").write_text(
        json.dumps({"source": "rootfs", "created": "2025-01-01T00:00:00Z", "packages": {"a": "1"}})
    )
    forge = FakeForge(profile_tarball(mtime=1_735_787_045))
    sandbox = FakeSandbox(tmp_path / "sandbox")
    key = generate_secret_key()
    sealer = Sealer(
        sandbox,
        signer=Signer(key) if signer else None,
        base_dir=base,
        builder_id=BASE_URL,
        builder_version="0.1.0",
        isolation="userns",
        rebuild_check=lambda request: rebuild_check,
        compare=compare,
    )
    pipeline = Pipeline(
        PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
        clients={Forge.GITHUB: forge},
        sandbox=sandbox,
        logs=BuildLogs(tmp_path / "logs"),
        sealer=sealer,
        packages=packages,
        record_packages=store.set_packages,
    )
    publisher = Publisher(
        store,
        {Forge.GITHUB: forge},
        artifacts_root=tmp_path / "artifacts",
        base_url=BASE_URL,
        clock=lambda: STARTED,
    )
    return Rig(pipeline, store, publisher, forge, sandbox, key, tmp_path / "artifacts", comparisons)


@pytest.mark.anyio
async def test_tag_rebuilt_identical_publishes_signed_files_and_says_so(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """A tag is built twice; identical ISOs publish ISO, sums, .minisigs and provenance."""
    parts = rig(tmp_path, store)
    outcome = await parts.run(**TAG)
    assert outcome.event is Event.SUCCEED
    assert "; reproducible (rebuilt byte-identical)" in outcome.detail
    assert parts.sandbox.run_ids == ["build-1", "build-1-rebuild"]
    assert parts.sandbox.discarded == ["build-1-rebuild", "build-1"]
    ((_, files),) = parts.forge.releases
    assert files == [ISO, f"{ISO}.minisig", "provenance.json", "provenance.json.minisig",
                     "sha256sums", "b2sums"]  # fmt: skip
    release = await parts.release()
    assert release is not None
    assert release.state is ReleaseState.PUBLISHED
    body = parts.forge.release_bodies[0]
    assert body == (parts.artifacts / "1" / RELEASE_NOTES_FILE).read_text().strip()
    assert "**Reproducible**: rebuilt in a second fresh container" in body
    assert f"Signed with minisign key `{parts.key.public_key().id_text}`" in body
    directory = parts.artifacts / "1"
    for name in (ISO, "provenance.json"):
        signature = parse_signature((directory / f"{name}.minisig").read_text())
        verify_digest(parts.key.public_key(), blake2b_file(directory / name), signature)
        assert "tag:v1.0" in signature.trusted_comment
    provenance = json.loads((directory / "provenance.json").read_text())
    check_slsa_provenance(provenance)
    assert provenance["predicate"]["runDetails"]["isorunner_reproducibility"]["status"] == (
        "identical"
    )
    assert provenance["predicate"]["runDetails"]["metadata"]["invocationId"] == (
        f"{BASE_URL}/builds/1"
    )
    assert parts.trust()["reproducibility"] == "identical"
    assert parts.comparisons == []


@pytest.mark.anyio
async def test_provenance_lists_the_synced_packages_and_the_rebuild_uses_their_repo(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """The packages package sync recorded are the provenance's; the rebuild binds their repo."""
    parts = rig(tmp_path, store, packages=FakePackageStep())
    outcome = await parts.run(**TAG)
    assert outcome.event is Event.SUCCEED
    repo = tmp_path / "work" / "1" / "repo"
    assert parts.sandbox.seen_repos == [repo, repo]
    record = await store.get(1)
    assert record is not None
    assert record.packages is not None
    assert [p.name for p in record.packages] == ["base", "zsh"]
    provenance = json.loads((parts.artifacts / "1" / "provenance.json").read_text())
    check_slsa_provenance(provenance)
    dependencies = provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert [d for d in dependencies if str(d.get("uri", "")).startswith("pkg:")] == [
        {
            "name": p.name,
            "uri": f"pkg:alpm/arch/{p.name}@{p.version}",
            "digest": {"sha256": p.sha256},
            "annotations": {"repository": p.repo},
        }
        for p in record.packages
    ]


@pytest.mark.anyio
async def test_tag_rebuilt_different_is_published_marked_not_reproducible(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """A rebuild with other bytes is compared; the release says so and names the path."""
    parts = rig(tmp_path, store)
    parts.sandbox.iso_contents = [b"first build", b"second build"]
    outcome = await parts.run(**TAG)
    assert outcome.event is Event.SUCCEED
    assert outcome.detail.endswith("; NOT reproducible (1 path(s) differ)")
    release = await parts.release()
    assert release is not None
    assert release.state is ReleaseState.PUBLISHED
    assert parts.comparisons == [(ISO, "build-1-compare")]
    assert "**Not reproducible**" in parts.forge.release_bodies[0]
    assert "- `/arch/version (mtime)`" in parts.forge.release_bodies[0]
    assert parts.trust() == {
        "signed_by": parts.key.public_key().id_text,
        "reproducibility": "different",
        "differences": ["/arch/version (mtime)"],
        "difference_count": 1,
    }
    log = (tmp_path / "logs").rglob("*")
    text = "".join(p.read_text() for p in log if p.is_file())
    assert "[isorunner] rebuild check: differs: /arch/version (mtime)" in text


@pytest.mark.anyio
async def test_a_failed_rebuild_marks_the_release_not_reproducible(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """When the second build fails, the release still goes out, marked with the reason."""
    parts = rig(tmp_path, store)
    parts.sandbox.errors_for["build-1-rebuild"] = BuildFailed(
        "the build command exited with status 1", exit_code=1
    )
    await parts.run(**TAG)
    assert (
        "(the rebuild failed: the build command exited with status 1)"
        in parts.forge.release_bodies[0]
    )


@pytest.mark.anyio
async def test_branch_builds_are_signed_but_not_rebuilt(tmp_path: Path, store: SQLiteStore) -> None:
    """A branch build is signed with provenance, built once, and publishes nothing."""
    parts = rig(tmp_path, store)
    outcome = await parts.run()
    assert outcome == Outcome(Event.SUCCEED, "ISO built in 2s")
    assert parts.sandbox.run_ids == ["build-1"]
    names = sorted(p.name for p in (parts.artifacts / "1").iterdir())
    assert names == sorted(
        [ISO, "sha256sums", "b2sums", f"{ISO}.minisig", "provenance.json",
         "provenance.json.minisig", TRUST_FILE]
    )  # fmt: skip
    assert parts.trust()["reproducibility"] == "not-checked"
    assert parts.forge.releases == []
    assert await parts.release() is None


@pytest.mark.anyio
async def test_repos_without_rebuild_check_or_key_publish_plain_files(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """rebuild_check = false and no key: one build, ISO and sums, the body says neither."""
    parts = rig(tmp_path, store, signer=False, rebuild_check=False)
    await parts.run(**TAG)
    assert parts.sandbox.run_ids == ["build-1"]
    assert parts.forge.releases == [("v1.0", [ISO, "sha256sums", "b2sums"])]
    assert "Rebuild check: not run" in parts.forge.release_bodies[0]
    assert "Not signed" in parts.forge.release_bodies[0]
    assert parts.trust()["signed_by"] is None


@pytest.mark.anyio
async def test_a_huge_difference_is_kept_bounded_and_counted(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """Fifty thousand differing paths: 200 in the trust file, all of them counted."""
    parts = rig(tmp_path, store, differing=50_000)
    parts.sandbox.iso_contents = [b"first build", b"second build"]
    outcome = await parts.run(**TAG)
    assert "NOT reproducible (50000 path(s) differ)" in outcome.detail
    trust = parts.trust()
    assert len(trust["differences"]) == 200
    assert trust["difference_count"] == 50_000
    provenance = json.loads((parts.artifacts / "1" / "provenance.json").read_text())
    result = provenance["predicate"]["runDetails"]["isorunner_reproducibility"]
    assert (len(result["differences"]), result["differenceCount"]) == (200, 50_000)
