"""Tests for runner.publish.notes: trusted comment facts and release bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runner.publish.notes import MAX_LISTED, release_body, signing_fields
from runner.publish.provenance import Artifact, Reproducibility
from webhooks.build import BuildRequest, Forge, RefKind

SHA = "9" * 40


def request(kind: RefKind = RefKind.TAG, ref: str = "refs/tags/v1.0") -> BuildRequest:
    """A build request of the given kind."""
    return BuildRequest(
        forge=Forge.GITHUB,
        repo="octo/archlive",
        commit_sha=SHA,
        ref=ref,
        kind=kind,
        pr_number=7 if kind is RefKind.PULL_REQUEST else None,
        trusted=True,
        commit_time=datetime(2025, 1, 2, tzinfo=UTC),
        delivery_id="d",
        source_repo="octo/archlive",
    )


@pytest.mark.parametrize(
    ("kind", "ref", "last"),
    [
        (RefKind.TAG, "refs/tags/v1.0", ("tag", "v1.0")),
        (RefKind.BRANCH, "refs/heads/main", ("branch", "main")),
        (RefKind.PULL_REQUEST, "refs/heads/feature", ("pr", "7")),
    ],
)
def test_signing_fields_name_repo_commit_and_ref(
    kind: RefKind, ref: str, last: tuple[str, str]
) -> None:
    """The trusted comment's facts: forge:repo, commit, then tag, branch or PR number."""
    assert signing_fields(request(kind, ref)) == [
        ("repo", "github:octo/archlive"),
        ("commit", SHA),
        last,
    ]


def test_release_body_says_identical_and_how_to_verify() -> None:
    """An identical rebuild is stated with its digest; minisign and sha256sum lines follow."""
    result = Reproducibility("identical", Artifact("a.iso", "e" * 64, "f" * 128))
    body = release_body(
        request(), build_url="https://ci/builds/3", result=result, key_id="ABC",
        public_key_url="https://ci/signing-key.pub", isos=["a.iso"],
    )  # fmt: skip
    assert body.startswith(f"Built by isorunner from {SHA}: https://ci/builds/3\n")
    assert f"byte-identical (sha256 `{'e' * 64}`)" in body
    assert "Signed with minisign key `ABC` (https://ci/signing-key.pub)" in body
    assert "minisign -Vm a.iso -p signing-key.pub\nsha256sum -c sha256sums\n" in body


def test_release_body_marks_a_different_rebuild_with_its_paths() -> None:
    """A different rebuild is marked not reproducible; paths are listed, cleaned and cut."""
    paths = ["/arch/version (mtime)", "/evil`name\n(content)"]
    paths += [f"/p{i} (content)" for i in range(30)]
    body = release_body(
        request(), build_url="https://ci/builds/4",
        result=Reproducibility("different", None, tuple(paths)),
        key_id=None, public_key_url="https://ci/signing-key.pub", isos=["a.iso"],
    )  # fmt: skip
    assert "**Not reproducible**: a rebuild in a second fresh container gave a different" in body
    assert f"ISO; {len(paths)} path(s) differ:" in body
    assert "- `/arch/version (mtime)`" in body
    assert "- `/evil?name?(content)`" in body
    assert body.count("\n- `") == MAX_LISTED
    assert f"- … and {len(paths) - MAX_LISTED} more: https://ci/builds/4" in body
    assert "Not signed" in body


def test_release_body_counts_differences_beyond_those_kept() -> None:
    """When only the first paths were kept, the body counts all of them."""
    result = Reproducibility("different", None, ("/a (content)",), 5000)
    body = release_body(
        request(), build_url="https://ci/builds/5", result=result, key_id=None,
        public_key_url="https://ci/signing-key.pub", isos=["a.iso"],
    )  # fmt: skip
    assert "5000 path(s) differ" in body
    assert "- … and 4999 more: https://ci/builds/5" in body
