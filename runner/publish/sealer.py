"""After a successful build: the rebuild check, the signatures and the provenance.

I/O shell: `Sealer.seal` runs the second build of a release tag in a fresh container,
compares the two ISOs (in the sandbox, `runner.publish.isocompare`), writes the trust
file the pages read, signs the ISOs and writes the signed provenance, and, for a build
that publishes a release, its body (`webhooks.build.RELEASE_NOTES_FILE`). All of it is
on disk before the build succeeds: the outbox's release step (`runner.publish.release`)
publishes the build's files and that body from there, without reading an ISO again.
`Sealer.release_body` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import anyio.to_thread
import structlog

from runner.artifacts import Artifacts
from runner.checksums import compute_checksums_async
from runner.jobs import publishes_release
from runner.publish.exceptions import CompareFailed
from runner.publish.gpg import GpgSigner
from runner.publish.isocompare import ContainerSandbox, Difference, compare_isos
from runner.publish.notes import release_body, signing_fields
from runner.publish.provenance import (
    MAX_DIFFERENCES,
    MAX_KEPT_DIFFERENCES,
    Artifact,
    BuildFacts,
    Reproducibility,
    SandboxBase,
    dir_hash,
    read_base_manifest,
    statement,
)
from runner.publish.signedfiles import write_signed_files
from runner.publish.signing import Signer, write_atomically
from sandbox import BuildResult, LogSink, SandboxError, mkarchiso_command
from webhooks.build import RELEASE_NOTES_FILE, TRUST_FILE, BuildRecord, BuildRequest

_log = structlog.get_logger()

Compare = Callable[..., Awaitable[list[Difference]]]


class SealSandbox(ContainerSandbox, Protocol):
    """What the sealer needs of `sandbox.BuildSandbox`: builds and containers."""

    async def run(
        self,
        build_id: str,
        profile_dir: Path,
        *,
        source_date_epoch: int,
        log_sink: LogSink,
        package_repo: Path | None = None,
    ) -> BuildResult:
        """Build the profile (see `BuildSandbox.run`)."""
        ...

    async def discard(self, build_id: str) -> None:
        """Remove everything left of a build."""
        ...


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a sealed build publishes.

    Attributes:
        files: ISOs, sums, signatures and provenance: the files the build keeps (a
            release publishes every one, in `runner.publish.files.publish_order`).
        reproducibility: The rebuild check's result.
        key_id: The signing key's id, or None when nothing was signed.
    """

    files: list[Path]
    reproducibility: Reproducibility
    key_id: str | None


def wants_rebuild_check(request: BuildRequest, enabled: bool) -> bool:
    """Whether a build gets the rebuild check: a trusted release tag of a repo that wants it."""
    return enabled and publishes_release(request)


def trust_json(key_id: str | None, result: Reproducibility) -> str:
    """The trust file's text (`webhooks.build.TRUST_FILE`)."""
    return json.dumps(
        {
            "signed_by": key_id,
            "reproducibility": result.status,
            "differences": list(result.differences[:MAX_DIFFERENCES]),
            "difference_count": result.total,
        },
        indent=2,
    )


class Sealer:
    """Makes a finished build trustworthy: rebuild check, signatures, provenance.

    Args:
        sandbox: The build sandbox (the rebuild and the ISO listing run there).
        signer: The minisign key; None signs nothing and writes no provenance.
        gpg: Also a detached GPG signature of each ISO; None for none.
        base_dir: The sandbox base (its manifest goes into the provenance).
        builder_id: This instance's identity and the base of its build pages
            (`server.public_url`, without a trailing slash).
        builder_version: isorunner's version.
        isolation: The sandbox isolation, for the provenance.
        rebuild_check: Whether a request's repository wants the rebuild check.
        compare: Compares two ISOs (default `compare_isos`; tests give another).
        clock: The current time, timezone-aware.
    """

    def __init__(
        self,
        sandbox: SealSandbox,
        *,
        signer: Signer | None,
        gpg: GpgSigner | None = None,
        base_dir: Path,
        builder_id: str,
        builder_version: str,
        isolation: str,
        rebuild_check: Callable[[BuildRequest], bool],
        compare: Compare = compare_isos,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sandbox = sandbox
        self._signer = signer
        self._gpg = gpg
        self._base_dir = base_dir
        self._builder_id = builder_id
        self._builder_version = builder_version
        self._isolation = isolation
        self._rebuild_check = rebuild_check
        self._compare = compare
        self._clock = clock

    def build_url(self, build_id: int) -> str:
        """The build's page."""
        return f"{self._builder_id}/builds/{build_id}"

    @property
    def key_id(self) -> str | None:
        """The signing key's id, or None."""
        return self._signer.public_key.id_text if self._signer is not None else None

    async def seal(
        self,
        record: BuildRecord,
        *,
        profile: Path,
        epoch: int,
        artifacts: Artifacts,
        log: LogSink,
        package_repo: Path | None = None,
    ) -> Sealed:
        """Rebuild-check, sign and describe a finished build; return what to publish.

        Args:
            record: The build.
            profile: The extracted profile it was built from (still on disk).
            epoch: Its SOURCE_DATE_EPOCH.
            artifacts: Its collected ISOs and sums.
            log: The build log.
            package_repo: The build's package repository (package sync), which the
                rebuild binds as the build did; None when the build had none.

        Raises:
            OSError: A file could not be written.
            runner.publish.exceptions.SigningFailed: gpg refused.
        """
        request = record.request
        result = Reproducibility("not-checked")
        if wants_rebuild_check(request, self._rebuild_check(request)):
            result = await self.rebuild(
                record,
                profile=profile,
                epoch=epoch,
                artifacts=artifacts,
                log=log,
                package_repo=package_repo,
            )
        directory = artifacts.sums[0].parent
        trust = trust_json(self.key_id, result)
        await anyio.to_thread.run_sync(lambda: write_atomically(directory / TRUST_FILE, trust))
        if self._signer is None:
            sealed = Sealed(artifacts.files, result, None)
        else:
            facts = await self._facts(record, profile=profile, epoch=epoch, result=result)
            subjects = [Artifact(path.name, s.sha256, s.b2) for path, s in artifacts.isos]
            files = await write_signed_files(
                artifacts,
                signer=self._signer,
                fields=signing_fields(request),
                provenance=statement(subjects, facts),
                gpg=self._gpg,
            )
            await log(
                f"[isorunner] signed with minisign key {self.key_id}; provenance.json written"
            )
            sealed = Sealed(files, result, self.key_id)
        if publishes_release(request):
            body = self.release_body(record, sealed)
            notes = directory / RELEASE_NOTES_FILE
            await anyio.to_thread.run_sync(lambda: write_atomically(notes, body))
        return sealed

    async def _facts(
        self,
        record: BuildRecord,
        *,
        profile: Path,
        epoch: int,
        result: Reproducibility,
    ) -> BuildFacts:
        request = record.request
        tree = await anyio.to_thread.run_sync(dir_hash, profile)
        base = await anyio.to_thread.run_sync(self._base)
        return BuildFacts(
            forge=request.forge.value,
            repository=request.repo,
            repository_url=request.web_url
            or f"https://{request.forge.value}.invalid/{request.repo}",
            ref=request.ref,
            commit=request.commit_sha,
            profile_tree=tree,
            source_date_epoch=epoch,
            command=mkarchiso_command(),
            isolation=self._isolation,
            base=base,
            builder_id=self._builder_id,
            builder_version=self._builder_version,
            invocation_id=self.build_url(record.id),
            started=record.started_at or record.created_at,
            finished=self._clock(),
            reproducibility=result,
            packages=record.packages or (),
        )

    def _base(self) -> SandboxBase:
        try:
            return read_base_manifest(self._base_dir)
        except (OSError, ValueError) as exc:
            _log.warning("base_manifest_unreadable", base=str(self._base_dir), error=str(exc))
            return SandboxBase("0" * 64, "unknown", "", None, {}, None)

    async def rebuild(
        self,
        record: BuildRecord,
        *,
        profile: Path,
        epoch: int,
        artifacts: Artifacts,
        log: LogSink,
        package_repo: Path | None = None,
    ) -> Reproducibility:
        """Build the profile again in a fresh container and compare the ISOs.

        Returns:
            "identical" when every ISO matches byte for byte; "different" with the
            differing paths otherwise, or with the reason when the rebuild failed.
        """
        rebuild_id = f"build-{record.id}-rebuild"
        await log("[isorunner] rebuild check: building the same commit again in a fresh container")
        try:
            second = await self._sandbox.run(
                rebuild_id,
                profile,
                source_date_epoch=epoch,
                log_sink=log,
                package_repo=package_repo,
            )
        except SandboxError as exc:
            await log(f"[isorunner] rebuild check: the rebuild failed: {exc}")
            return Reproducibility("different", None, (f"(the rebuild failed: {exc})",))
        try:
            return await self._compare_results(record, artifacts, second.isos, log=log)
        finally:
            with anyio.CancelScope(shield=True):
                await self._sandbox.discard(rebuild_id)

    async def _compare_results(
        self,
        record: BuildRecord,
        artifacts: Artifacts,
        rebuilt: Sequence[Path],
        *,
        log: LogSink,
    ) -> Reproducibility:
        firsts = {path.name: (path, sums) for path, sums in artifacts.isos}
        differences: list[str] = []
        rebuild_artifact = None
        for iso in sorted(rebuilt):
            sums = await compute_checksums_async(iso)
            rebuild_artifact = rebuild_artifact or Artifact(iso.name, sums.sha256, sums.b2)
            first = firsts.pop(iso.name, None)
            if first is None:
                differences.append(f"/{iso.name} (only in the rebuild)")
            elif first[1].sha256 != sums.sha256:
                await log(f"[isorunner] rebuild check: {iso.name} differs; listing both ISOs")
                differences += await self._differences(record, first[0], iso, log=log)
        differences += [f"/{name} (only in the first build)" for name in sorted(firsts)]
        if not differences:
            digest = rebuild_artifact.sha256 if rebuild_artifact is not None else "?"
            await log(f"[isorunner] rebuild check: identical (sha256 {digest})")
            return Reproducibility("identical", rebuild_artifact)
        await log(f"[isorunner] rebuild check: NOT reproducible, {len(differences)} path(s) differ")
        for line in differences[:MAX_DIFFERENCES]:
            await log(f"[isorunner] rebuild check: differs: {line}")
        kept = tuple(differences[:MAX_KEPT_DIFFERENCES])
        return Reproducibility("different", rebuild_artifact, kept, len(differences))

    async def _differences(
        self,
        record: BuildRecord,
        first: Path,
        second: Path,
        *,
        log: LogSink,
    ) -> list[str]:
        try:
            found = await self._compare(
                self._sandbox, first, second, run_id=f"build-{record.id}-compare", log_sink=log
            )
        except CompareFailed as exc:
            await log(f"[isorunner] rebuild check: {exc}")
            return [f"/{second.name} (content; listing the two ISOs failed: {exc})"]
        return [str(d) for d in found] or [f"/{second.name} (bytes outside every listed area)"]

    def release_body(self, record: BuildRecord, sealed: Sealed) -> str:
        """The release's Markdown body (see `runner.publish.notes.release_body`)."""
        return release_body(
            record.request,
            build_url=self.build_url(record.id),
            result=sealed.reproducibility,
            key_id=sealed.key_id,
            public_key_url=f"{self._builder_id}/signing-key.pub",
            isos=[path.name for path in sealed.files if path.suffix == ".iso"],
        )
