"""Tests for sandbox.base: the base's contract and `validate_base`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sandbox
from sandbox.base import (
    MANIFEST,
    MOUNT_POINTS,
    BaseInfo,
    missing_mount_points,
    read_manifest,
    validate_base,
)
from sandbox.exceptions import BaseMissing
from sandbox.nspawn import OUTPUT_MOUNT, PACKAGE_REPO_MOUNT, PROFILE_MOUNT, WORK_MOUNT

UID_BASE = 2147352576


def make_base(root: Path, manifest: object) -> Path:
    """A base under `root` with every mount point and `manifest` as its manifest."""
    base = root / "base"
    for point in MOUNT_POINTS:
        (base / point).mkdir(parents=True)
    (base / MANIFEST).parent.mkdir(parents=True)
    (base / MANIFEST).write_text(json.dumps(manifest))
    return base


def test_validate_base_returns_what_the_manifest_says(tmp_path: Path) -> None:
    """A prepared base for the configured range passes, described by its manifest."""
    manifest = {"created": "2025-03-01T00:00:00Z", "uid_base": UID_BASE, "archive_date": None}
    base = make_base(tmp_path, manifest)
    info = validate_base(base, uid_base=UID_BASE, isolation="root")
    assert info == BaseInfo(base, "2025-03-01T00:00:00Z", UID_BASE)


def test_validate_base_refuses_a_missing_directory(tmp_path: Path) -> None:
    """An absent base is refused with the script that makes one."""
    with pytest.raises(BaseMissing, match=r"base is missing: run scripts/setup-sandbox\.sh$"):
        validate_base(tmp_path / "base", uid_base=UID_BASE)


def test_read_manifest_refuses_invalid_json_and_non_objects(tmp_path: Path) -> None:
    """A manifest that is not JSON, or not a JSON object, is refused with what to run."""
    base = make_base(tmp_path, [1, 2])
    with pytest.raises(BaseMissing, match="is not a JSON object"):
        read_manifest(base)
    (base / MANIFEST).write_text("{not json")
    with pytest.raises(BaseMissing, match=r"is unreadable \(.*\): run scripts/setup-sandbox"):
        read_manifest(base)


def test_validate_base_refuses_another_uid_range(tmp_path: Path) -> None:
    """A base made for another UID range names both ranges and the fix."""
    base = make_base(tmp_path, {"uid_base": UID_BASE - 65536})
    with pytest.raises(BaseMissing, match=f"--uid-base {UID_BASE}") as caught:
        validate_base(base, uid_base=UID_BASE, isolation="root")
    assert str(UID_BASE - 65536) in str(caught.value)


def test_missing_mount_points_names_each_absent_directory(tmp_path: Path) -> None:
    """Each absent mount point is named; validation refuses such a base."""
    base = make_base(tmp_path, {"uid_base": UID_BASE})
    (base / "build/work").rmdir()
    (base / "build/output").rmdir()
    assert missing_mount_points(base) == ["build/work", "build/output"]
    with pytest.raises(BaseMissing, match="lacks build/work, build/output"):
        validate_base(base, uid_base=UID_BASE, isolation="root")


def test_mount_points_inside_the_container_are_the_bases_directories() -> None:
    """The argv builder binds exactly the directories the base contract provides."""
    assert tuple(f"/{p}" for p in MOUNT_POINTS) == (
        PROFILE_MOUNT,
        WORK_MOUNT,
        OUTPUT_MOUNT,
        PACKAGE_REPO_MOUNT,
    )


def test_sandbox_package_exports_its_public_api() -> None:
    """`from sandbox import ...` reaches the sandbox, its config, results, errors and base."""
    for name in sandbox.__all__:
        assert getattr(sandbox, name) is not None, name
    assert sandbox.BuildSandbox.__module__ == "sandbox.sandbox"
    assert sandbox.validate_base is validate_base
