"""Build provenance: an in-toto Statement v1 carrying a SLSA Provenance v1 predicate.

`statement` and `read_base_manifest`'s parsing are pure; `dir_hash` and
`read_base_manifest` read files. Field names follow the specs (in-toto attestation
`spec/v1/statement.md`, `resource_descriptor.md`, `digest_set.md`; SLSA
`spec/build-provenance.md`, predicate type `https://slsa.dev/provenance/v1`):

- `subject`: each ISO by name, with `sha256` and `blake2b` (BLAKE2b-512) digests;
- `buildDefinition.buildType`: `BUILD_TYPE`, documented in docs/provenance.md;
  `externalParameters`: what the forge asked for (forge, repository, ref, commit);
  `internalParameters`: what isorunner chose (SOURCE_DATE_EPOCH, the mkarchiso command,
  the sandbox isolation); `resolvedDependencies`: the profile at its commit
  (`gitCommit`), the profile tree as built (`dirHash`, in-toto's directory hash), the
  sandbox base (the sha256 of its manifest; its source, date and own packages as
  annotations), mkarchiso (sha256, version), and the resolved packages with versions
  and digests;
- `runDetails.builder.id`: the isorunner instance (its public URL), with its version;
  `metadata`: the build page as `invocationId`, `startedOn`, `finishedOn`;
  `byproducts`: the rebuild's ISO when the rebuild check ran; and the extension field
  `isorunner_reproducibility` (SLSA's `<vendor>_<field>` form) with the result.

The resolved package list is the build's `BuildRecord.packages`, which host-side
package sync (runner/packages) recorded: name, version, repository and the file's
sha256. A build without a packages step lists none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from sandbox import MANIFEST
from webhooks.build import PackageEntry

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://slsa.dev/provenance/v1"
#: The build type; a TypeURI, which "MAY be unresolvable" (in-toto field_types.md).
BUILD_TYPE: Final = "urn:isorunner:buildtype:mkarchiso:v1"
PROVENANCE_FILE: Final = "provenance.json"
#: The most a sandbox base manifest may be (it lists the base's packages).
MAX_MANIFEST_BYTES: Final = 16 << 20
#: Differing paths kept in the provenance (the build page keeps the same list).
MAX_DIFFERENCES: Final = 200
#: Differing paths a rebuild check keeps at all (its log lists the first 200).
MAX_KEPT_DIFFERENCES: Final = 1000


@dataclass(frozen=True, slots=True)
class Artifact:
    """A built file as the subject of the statement.

    Attributes:
        name: The file name (as published).
        sha256: Lowercase hex SHA-256.
        blake2b: Lowercase hex BLAKE2b-512.
    """

    name: str
    sha256: str
    blake2b: str


def package_descriptor(package: PackageEntry) -> dict[str, Any]:
    """The ResourceDescriptor of one package the build installed, named by a package URL.

    `package` is one of the build's `BuildRecord.packages`, as package sync resolved it
    (name, version, repository, sha256 of the file).
    """
    return {
        "name": package.name,
        "uri": f"pkg:alpm/arch/{package.name}@{package.version}",
        "digest": {"sha256": package.sha256},
        "annotations": {"repository": package.repo},
    }


@dataclass(frozen=True, slots=True)
class SandboxBase:
    """The sandbox base a build ran on, from its manifest (tests/standin/CONTRACT.md).

    Attributes:
        manifest_sha256: SHA-256 of `manifest.json`: the base's identity.
        source: How it was made (`pacstrap`, `bootstrap`, `rootfs`).
        created: When it was made (ISO 8601).
        archive_date: The Arch Linux Archive day it is pinned to, if any.
        packages: The base's own packages (its build tools), name to version.
        mkarchiso: The manifest's `mkarchiso` entry (path, sha256, version), if any.
    """

    manifest_sha256: str
    source: str
    created: str
    archive_date: str | None
    packages: Mapping[str, str]
    mkarchiso: Mapping[str, str | None] | None


@dataclass(frozen=True, slots=True)
class Reproducibility:
    """What the rebuild check found.

    Attributes:
        status: "identical", "different", or "not-checked".
        rebuild: The second build's ISO, when it ran.
        differences: The differing paths inside the ISO (see `runner.publish.isocompare`),
            the first `MAX_KEPT_DIFFERENCES` of them.
        count: How many differ in all, when more than `differences` holds.
    """

    status: Literal["identical", "different", "not-checked"]
    rebuild: Artifact | None = None
    differences: tuple[str, ...] = ()
    count: int | None = None

    @property
    def total(self) -> int:
        """How many paths differ in all (`differences` may hold only the first ones)."""
        return len(self.differences) if self.count is None else self.count


@dataclass(frozen=True, slots=True)
class BuildFacts:
    """Everything the provenance states about one build.

    Attributes:
        forge: "github" or "gitlab".
        repository: `owner/name` (or a GitLab path).
        repository_url: The repository's web URL.
        ref: The full git ref that triggered the build (`refs/tags/v1.0`).
        commit: The commit SHA.
        profile_tree: `dir_hash` of the profile as extracted and built.
        source_date_epoch: The build's SOURCE_DATE_EPOCH.
        command: The command run in the sandbox.
        isolation: The sandbox isolation ("userns" or "root").
        base: The sandbox base.
        builder_id: The isorunner instance's URL.
        builder_version: isorunner's version.
        invocation_id: The build page's URL.
        started: When the build started.
        finished: When it finished.
        reproducibility: The rebuild check's result.
        packages: The resolved packages (`BuildRecord.packages`; empty when the build
            had no packages step).
    """

    forge: str
    repository: str
    repository_url: str
    ref: str
    commit: str
    profile_tree: str
    source_date_epoch: int
    command: Sequence[str]
    isolation: str
    base: SandboxBase
    builder_id: str
    builder_version: str
    invocation_id: str
    started: datetime
    finished: datetime
    reproducibility: Reproducibility
    packages: Sequence[PackageEntry] = field(default_factory=tuple)


def timestamp(moment: datetime) -> str:
    """An in-toto Timestamp: RFC 3339 in UTC with "Z", whole seconds."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _artifact(artifact: Artifact) -> dict[str, Any]:
    return {
        "name": artifact.name,
        "digest": {"sha256": artifact.sha256, "blake2b": artifact.blake2b},
    }


def _dependencies(facts: BuildFacts) -> list[dict[str, Any]]:
    base = facts.base
    dependencies: list[dict[str, Any]] = [
        {
            "name": "profile",
            "uri": f"git+{facts.repository_url}@{facts.ref}",
            "digest": {"gitCommit": facts.commit},
        },
        {
            "name": "profile-tree",
            "digest": {"dirHash": facts.profile_tree},
            "annotations": {"description": "the profile as fetched at the commit and built"},
        },
        {
            "name": "sandbox-base",
            "digest": {"sha256": base.manifest_sha256},
            "annotations": {
                "source": base.source,
                "created": base.created,
                "archiveDate": base.archive_date,
                "packages": dict(sorted(base.packages.items())),
            },
        },
    ]
    mkarchiso = base.mkarchiso
    if mkarchiso is not None and mkarchiso.get("sha256"):
        dependencies.append(
            {
                "name": "mkarchiso",
                "uri": f"file://{mkarchiso.get('path') or '/usr/bin/mkarchiso'}",
                "digest": {"sha256": str(mkarchiso["sha256"])},
                "annotations": {"version": mkarchiso.get("version")},
            }
        )
    dependencies.extend(package_descriptor(package) for package in facts.packages)
    return dependencies


def statement(subjects: Sequence[Artifact], facts: BuildFacts) -> dict[str, Any]:
    """The in-toto Statement v1 with a SLSA Provenance v1 predicate for one build.

    Args:
        subjects: The built ISOs.
        facts: What is known about the build.

    Returns:
        A JSON-ready dict.

    Raises:
        ValueError: No subject (a statement must name at least one artifact).
    """
    if not subjects:
        raise ValueError("a provenance statement needs at least one subject")
    result = facts.reproducibility
    byproducts: list[dict[str, Any]] = []
    if result.rebuild is not None:
        rebuild = _artifact(result.rebuild)
        rebuild["name"] = f"rebuild/{result.rebuild.name}"
        rebuild["annotations"] = {"identical": result.status == "identical"}
        byproducts.append(rebuild)
    run_details: dict[str, Any] = {
        "builder": {"id": facts.builder_id, "version": {"isorunner": facts.builder_version}},
        "metadata": {
            "invocationId": facts.invocation_id,
            "startedOn": timestamp(facts.started),
            "finishedOn": timestamp(facts.finished),
        },
        "isorunner_reproducibility": {
            "status": result.status,
            "differences": list(result.differences[:MAX_DIFFERENCES]),
            "differenceCount": result.total,
        },
    }
    if byproducts:
        run_details["byproducts"] = byproducts
    return {
        "_type": STATEMENT_TYPE,
        "subject": [_artifact(subject) for subject in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "forge": facts.forge,
                    "repository": facts.repository,
                    "ref": facts.ref,
                    "commit": facts.commit,
                },
                "internalParameters": {
                    "sourceDateEpoch": facts.source_date_epoch,
                    "command": list(facts.command),
                    "isolation": facts.isolation,
                },
                "resolvedDependencies": _dependencies(facts),
            },
            "runDetails": run_details,
        },
    }


def encode(document: Mapping[str, Any]) -> bytes:
    """The statement as published: indented JSON, sorted keys, one final newline."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _sums_line(digest: str, name: bytes) -> bytes:
    # coreutils' sha256sum escapes a name holding a backslash or a line end, and marks
    # such a line with a leading backslash (as `find | xargs sha256sum` would print it).
    if any(c in name for c in (b"\\", b"\n", b"\r")):
        escaped = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + digest.encode() + b"  " + escaped + b"\n"
    return digest.encode() + b"  " + name + b"\n"


def dir_hash(root: Path) -> str:
    """in-toto's `dirHash` of a tree: SHA-256 over `sha256sum` lines of its files.

    Equivalent to `find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum |
    sha256sum` in `root` (digest_set.md): regular files only (links and directories are
    not listed), paths relative, sorted bytewise.

    Raises:
        OSError: A file cannot be read.
    """
    paths: list[bytes] = []
    for directory, _dirs, files in os.walk(os.fsencode(root)):
        for name in files:
            full = os.path.join(directory, name)
            if os.path.isfile(full) and not os.path.islink(full):
                paths.append(os.path.relpath(full, os.fsencode(root)))
    outer = hashlib.sha256()
    for relative in sorted(paths):
        inner = hashlib.sha256()
        with open(os.path.join(os.fsencode(root), relative), "rb") as handle:
            while chunk := handle.read(1 << 20):
                inner.update(chunk)
        outer.update(_sums_line(inner.hexdigest(), relative))
    return outer.hexdigest()


def parse_base_manifest(data: bytes) -> SandboxBase:
    """The sandbox base described by its `manifest.json` bytes.

    Raises:
        ValueError: Not a JSON object with the manifest's fields.
    """
    document = json.loads(data)
    if not isinstance(document, dict):
        raise ValueError("the base manifest is not a JSON object")  # noqa: TRY004 - bad data, not a bad call
    packages = document.get("packages") or {}
    mkarchiso = document.get("mkarchiso")
    if not isinstance(packages, dict) or not (mkarchiso is None or isinstance(mkarchiso, dict)):
        raise ValueError("the base manifest's packages or mkarchiso entry is malformed")
    archive_date = document.get("archive_date")
    return SandboxBase(
        manifest_sha256=hashlib.sha256(data).hexdigest(),
        source=str(document.get("source", "")),
        created=str(document.get("created", "")),
        archive_date=None if archive_date is None else str(archive_date),
        packages={str(k): str(v) for k, v in packages.items()},
        mkarchiso=None
        if mkarchiso is None
        else {str(k): None if v is None else str(v) for k, v in mkarchiso.items()},
    )


def read_base_manifest(base_dir: Path) -> SandboxBase:
    """Read `<base>/etc/isorunner/manifest.json` (bounded).

    Raises:
        OSError: It cannot be read.
        ValueError: It is too large or malformed.
    """
    with (base_dir / MANIFEST).open("rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"the base manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    return parse_base_manifest(data)
