"""Tests for runner.publish.provenance against the in-toto Statement v1 and SLSA v1 specs.

`check_statement` and `check_slsa_provenance` below are the specs' required fields and
field types, written from in-toto attestation `spec/v1/statement.md`,
`resource_descriptor.md`, `digest_set.md`, `field_types.md` and SLSA
`spec/build-provenance.md` (schema `provenance.cue`); every statement we make must pass
them. `dir_hash` is checked against the shell pipeline the digest_set spec gives.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runner.publish.provenance import (
    BUILD_TYPE,
    Artifact,
    BuildFacts,
    Reproducibility,
    dir_hash,
    encode,
    parse_base_manifest,
    statement,
    timestamp,
)
from webhooks.build import PackageEntry

# --- the specs' rules ----------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]+")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
#: digest_set.md: standard algorithms are lowercase hex; their digest lengths in hex.
_HEX_LENGTHS = {"sha256": {64}, "sha512": {128}, "blake2b": {128}, "gitCommit": {40, 64}}
_RD_FIELDS = {"name", "uri", "digest", "content", "downloadLocation", "mediaType", "annotations"}


def check_uri(value: Any) -> None:
    """TypeURI/ResourceURI (field_types.md): an RFC 3986 URI whose scheme is lowercase."""
    assert isinstance(value, str)
    match = _SCHEME.match(value)
    assert match is not None, value
    assert match.group(1) == match.group(1).lower(), value


def check_timestamp(value: Any) -> None:
    """Timestamp (field_types.md): RFC 3339 in the UTC timezone ("Z")."""
    assert isinstance(value, str)
    assert _TIMESTAMP.fullmatch(value), value
    datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")


def check_digest_set(value: Any) -> None:
    """DigestSet (digest_set.md): algorithm → lowercase hex string, at least one."""
    assert isinstance(value, dict)
    assert value
    for algorithm, digest in value.items():
        assert isinstance(algorithm, str)
        assert isinstance(digest, str)
        if algorithm in _HEX_LENGTHS or algorithm == "dirHash":
            assert _HEX.fullmatch(digest), (algorithm, digest)
        if algorithm in _HEX_LENGTHS:
            assert len(digest) in _HEX_LENGTHS[algorithm], (algorithm, digest)


def check_resource_descriptor(value: Any) -> None:
    """ResourceDescriptor: only the spec's fields, typed, with one of uri/digest/content."""
    assert isinstance(value, dict)
    assert set(value) <= _RD_FIELDS, set(value) - _RD_FIELDS
    assert {"uri", "digest", "content"} & set(value), value
    for key in ("name", "mediaType", "content"):
        assert key not in value or isinstance(value[key], str)
    for key in ("uri", "downloadLocation"):
        if key in value:
            check_uri(value[key])
    if "digest" in value:
        check_digest_set(value["digest"])
    assert "annotations" not in value or isinstance(value["annotations"], dict)


def check_statement(document: Any) -> None:
    """Statement v1: `_type`, `subject` (each with `digest`), `predicateType` required."""
    assert isinstance(document, dict)
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    subjects = document["subject"]
    assert isinstance(subjects, list)
    assert subjects
    names = []
    for subject in subjects:
        check_resource_descriptor(subject)
        assert "digest" in subject  # "Each element MUST have digest set."
        names.append(subject.get("name"))
    assert len(names) == len(set(names))  # "name and uri SHOULD be unique within subject"
    check_uri(document["predicateType"])
    assert "predicate" not in document or isinstance(document["predicate"], dict)


def _check_extensions(value: dict[str, Any], known: set[str]) -> None:
    # "Non-extension field names never contain an underscore."
    for key in set(value) - known:
        assert "_" in key, f"unknown field {key!r} is not a <vendor>_<field> extension"


def check_slsa_provenance(document: Any) -> None:
    """SLSA v1: buildDefinition (buildType, externalParameters) and runDetails.builder.id."""
    check_statement(document)
    assert document["predicateType"] == "https://slsa.dev/provenance/v1"
    predicate = document["predicate"]
    _check_extensions(predicate, {"buildDefinition", "runDetails"})
    definition = predicate["buildDefinition"]
    _check_extensions(
        definition,
        {"buildType", "externalParameters", "internalParameters", "resolvedDependencies"},
    )
    check_uri(definition["buildType"])
    assert isinstance(definition["externalParameters"], dict)
    assert isinstance(definition.get("internalParameters", {}), dict)
    for dependency in definition.get("resolvedDependencies", []):
        check_resource_descriptor(dependency)
    # The same field name SHOULD NOT be used for both kinds of parameters.
    assert not set(definition["externalParameters"]) & set(definition.get("internalParameters", {}))
    run = predicate["runDetails"]
    _check_extensions(run, {"builder", "metadata", "byproducts"})
    builder = run["builder"]
    _check_extensions(builder, {"id", "builderDependencies", "version"})
    check_uri(builder["id"])
    assert all(
        isinstance(k, str) and isinstance(v, str) for k, v in builder.get("version", {}).items()
    )
    for dependency in builder.get("builderDependencies", []):
        check_resource_descriptor(dependency)
    metadata = run.get("metadata", {})
    _check_extensions(metadata, {"invocationId", "startedOn", "finishedOn"})
    assert isinstance(metadata.get("invocationId", ""), str)
    for key in ("startedOn", "finishedOn"):
        if key in metadata:
            check_timestamp(metadata[key])
    for byproduct in run.get("byproducts", []):
        check_resource_descriptor(byproduct)


# --- the statements we make -----------------------------------------------------------------

MANIFEST = json.dumps(
    {
        "created": "2025-01-01T00:00:00Z",
        "source": "rootfs",
        "uid_base": 2147352576,
        "uid_count": 65536,
        "archive_date": None,
        "package_list_sha256": "0" * 64,
        "packages": {"isorunner-base": "1.0-1", "mkinitcpio": "1.0-1"},
        "repo_db_sha256": "1" * 64,
        "mkarchiso": {"path": "/usr/local/bin/mkarchiso", "sha256": "2" * 64, "version": None},
    }
).encode()
ISO = Artifact("archlive-1.0-x86_64.iso", "a" * 64, "b" * 128)


def facts(**overrides: Any) -> BuildFacts:
    """Facts of a tag build, with any field replaced."""
    values: dict[str, Any] = {
        "forge": "github",
        "repository": "octo/archlive",
        "repository_url": "https://github.com/octo/archlive",
        "ref": "refs/tags/v1.0",
        "commit": "c" * 40,
        "profile_tree": "d" * 64,
        "source_date_epoch": 1735787045,
        "command": ["mkarchiso", "-v", "-r", "/build/profile"],
        "isolation": "userns",
        "base": parse_base_manifest(MANIFEST),
        "builder_id": "https://ci.example.org",
        "builder_version": "0.1.0",
        "invocation_id": "https://ci.example.org/builds/7",
        "started": datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        "finished": datetime(2025, 1, 2, 3, 9, 0, tzinfo=UTC),
        "reproducibility": Reproducibility("not-checked"),
    }
    values.update(overrides)
    return BuildFacts(**values)


def test_statement_meets_in_toto_and_slsa_required_fields() -> None:
    """A tag build's statement passes both specs' checks, through its JSON encoding."""
    document = json.loads(encode(statement([ISO], facts())))
    check_slsa_provenance(document)
    assert document["subject"] == [
        {"name": ISO.name, "digest": {"sha256": "a" * 64, "blake2b": "b" * 128}}
    ]
    assert document["predicate"]["buildDefinition"]["buildType"] == BUILD_TYPE


def test_statement_names_source_base_and_run() -> None:
    """The forge, repo, ref, commit, tree hash, base, mkarchiso and times are all there."""
    document = statement([ISO], facts())
    definition = document["predicate"]["buildDefinition"]
    assert definition["externalParameters"] == {
        "forge": "github",
        "repository": "octo/archlive",
        "ref": "refs/tags/v1.0",
        "commit": "c" * 40,
    }
    assert definition["internalParameters"]["sourceDateEpoch"] == 1735787045
    dependencies = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert dependencies["profile"] == {
        "name": "profile",
        "uri": "git+https://github.com/octo/archlive@refs/tags/v1.0",
        "digest": {"gitCommit": "c" * 40},
    }
    assert dependencies["profile-tree"]["digest"] == {"dirHash": "d" * 64}
    base = dependencies["sandbox-base"]
    assert base["annotations"]["packages"] == {"isorunner-base": "1.0-1", "mkinitcpio": "1.0-1"}
    assert base["annotations"]["source"] == "rootfs"
    assert dependencies["mkarchiso"]["digest"] == {"sha256": "2" * 64}
    run = document["predicate"]["runDetails"]
    assert run["builder"] == {"id": "https://ci.example.org", "version": {"isorunner": "0.1.0"}}
    assert run["metadata"] == {
        "invocationId": "https://ci.example.org/builds/7",
        "startedOn": "2025-01-02T03:04:05Z",
        "finishedOn": "2025-01-02T03:09:00Z",
    }
    assert run["isorunner_reproducibility"]["status"] == "not-checked"
    assert "byproducts" not in run


def test_statement_records_a_rebuild_that_differs() -> None:
    """A failed rebuild check leaves the second ISO as a byproduct and the differing paths."""
    rebuild = Artifact(ISO.name, "e" * 64, "f" * 128)
    result = Reproducibility("different", rebuild, ("/arch/version (mtime)",))
    document = json.loads(encode(statement([ISO], facts(reproducibility=result))))
    check_slsa_provenance(document)
    run = document["predicate"]["runDetails"]
    assert run["byproducts"] == [
        {
            "name": f"rebuild/{ISO.name}",
            "digest": {"sha256": "e" * 64, "blake2b": "f" * 128},
            "annotations": {"identical": False},
        }
    ]
    assert run["isorunner_reproducibility"] == {
        "status": "different",
        "differences": ["/arch/version (mtime)"],
        "differenceCount": 1,
    }


def test_statement_lists_resolved_packages_when_known() -> None:
    """Each resolved package becomes a descriptor with a package URL and its digest."""
    package = PackageEntry("linux", "6.12.1.arch1-1", "core", "9" * 64)
    document = statement([ISO], facts(packages=(package,)))
    check_slsa_provenance(document)
    dependencies = document["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dependencies[-1] == {
        "name": "linux",
        "uri": "pkg:alpm/arch/linux@6.12.1.arch1-1",
        "digest": {"sha256": "9" * 64},
        "annotations": {"repository": "core"},
    }


def test_statement_needs_a_subject() -> None:
    """A statement about nothing is refused (the spec requires a subject)."""
    with pytest.raises(ValueError, match="at least one subject"):
        statement([], facts())


def test_checks_reject_what_the_specs_forbid() -> None:
    """The spec checks themselves refuse a subject without digest and an unprefixed field."""
    document = statement([ISO], facts())
    broken = json.loads(encode(document))
    del broken["subject"][0]["digest"]
    with pytest.raises(AssertionError):
        check_statement(broken)
    extended = json.loads(encode(document))
    extended["predicate"]["runDetails"]["reproducible"] = True
    with pytest.raises(AssertionError, match="not a <vendor>_<field> extension"):
        check_slsa_provenance(extended)


def test_encode_is_stable() -> None:
    """Encoding twice gives the same bytes, sorted keys, ending in one newline."""
    first = encode(statement([ISO], facts()))
    assert first == encode(statement([ISO], facts()))
    assert first.endswith(b"}\n")
    assert first.index(b'"_type"') < first.index(b'"predicate"')


def test_timestamp_is_utc_with_z() -> None:
    """A time in another zone is written in UTC, without fractions."""
    moment = datetime(2025, 1, 2, 5, 4, 5, 999, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(moment) == "2025-01-02T03:04:05Z"


def test_dir_hash_matches_the_spec_pipeline(tmp_path: Path) -> None:
    """dir_hash equals `find . -type f | cut -c3- | LC_ALL=C sort | xargs sha256sum | sha256sum`."""
    (tmp_path / "airootfs" / "etc").mkdir(parents=True)
    (tmp_path / "airootfs" / "etc" / "motd").write_text("hello\n")
    (tmp_path / "profiledef.sh").write_text("iso_name=x\n")
    (tmp_path / "a b-c").write_text("space\n")
    (tmp_path / "back\\slash").write_text("odd\n")
    (tmp_path / "link").symlink_to("profiledef.sh")
    (tmp_path / "empty-dir").mkdir()
    pipeline = (
        "find . -type f | cut -c3- | LC_ALL=C sort | xargs -r -d '\\n' sha256sum "
        "| sha256sum | cut -f1 -d' '"
    )
    shell = subprocess.run(
        ["bash", "-c", pipeline], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert dir_hash(tmp_path) == shell


def test_parse_base_manifest_refuses_malformed_manifests() -> None:
    """A manifest that is not an object, or with odd packages, is refused."""
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_base_manifest(b"[]")
    with pytest.raises(ValueError, match="malformed"):
        parse_base_manifest(b'{"packages": [1]}')
