"""Tests for runner.forges.releaseplan: what the forge has, and what is left to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.forges.releaseplan import (
    AssetPlan,
    LocalAsset,
    ReleaseCandidate,
    RemoteAsset,
    matches,
    pick_release,
    plan_assets,
)

ISO = LocalAsset(Path("/a/image.iso"), 100, "aa" * 32)
SUMS = LocalAsset(Path("/a/sha256sums"), 80, "bb" * 32)
FILES = [ISO, SUMS]


def copy(asset_id: int, local: LocalAsset, **changes: object) -> RemoteAsset:
    """A remote copy of `local` (whole, same digest), with `changes`."""
    values: dict[str, object] = {
        "id": asset_id,
        "name": local.name,
        "size": local.size,
        "sha256": local.sha256,
        "complete": True,
    }
    values.update(changes)
    return RemoteAsset(**values)  # type: ignore[arg-type]


def test_plan_assets_on_an_empty_forge_uploads_everything_in_order() -> None:
    """Nothing on the forge: every file is uploaded, in the order given."""
    assert plan_assets(FILES, []) == AssetPlan((), (), (ISO, SUMS))


def test_plan_assets_keeps_whole_copies_and_is_done() -> None:
    """Whole copies with our digests: kept, nothing deleted, nothing sent: done."""
    plan = plan_assets(FILES, [copy(1, ISO), copy(2, SUMS)])
    assert plan.keep == (copy(1, ISO), copy(2, SUMS))
    assert plan.done


def test_plan_assets_resumes_after_the_first_file() -> None:
    """The ISO is there whole: only the sums file is left to send (a resumed attempt)."""
    plan = plan_assets(FILES, [copy(1, ISO)])
    assert (plan.keep, plan.delete, plan.upload) == ((copy(1, ISO),), (), (SUMS,))


@pytest.mark.parametrize(
    ("remote", "why"),
    [
        (copy(1, ISO, complete=False, size=50, sha256=None), "partial upload"),
        (copy(1, ISO, sha256="cc" * 32), "another build's copy"),
        (copy(1, ISO, size=99), "wrong size"),
        (copy(1, ISO, sha256=None), "no digest to compare"),
    ],
)
def test_plan_assets_replaces_a_copy_that_is_not_ours(remote: RemoteAsset, why: str) -> None:
    """A partial, stale, short or unverifiable copy is deleted and the file sent again."""
    plan = plan_assets([ISO], [remote])
    assert plan.delete == (remote,), why
    assert plan.upload == (ISO,), why


def test_plan_assets_keeps_the_newest_good_copy_and_deletes_the_others() -> None:
    """Two good copies and a partial one of a name: the newest good one stays, alone."""
    partial = copy(3, ISO, complete=False, size=10, sha256=None)
    plan = plan_assets([ISO], [copy(1, ISO), partial, copy(2, ISO)])
    assert plan.keep == (copy(2, ISO),)
    assert sorted(r.id for r in plan.delete) == [1, 3]
    assert plan.upload == ()


def test_plan_assets_trusts_size_only_for_named_files() -> None:
    """Without a digest, size decides only for a name this attempt has just uploaded."""
    remote = copy(1, ISO, sha256=None)
    assert plan_assets([ISO], [remote], trust_size={ISO.name}).keep == (remote,)
    assert plan_assets([ISO], [remote]).upload == (ISO,)


def test_plan_assets_leaves_other_names_alone() -> None:
    """A file a person added under another name is neither kept nor deleted."""
    notes = RemoteAsset(9, "NOTES.txt", 3, None)
    plan = plan_assets([ISO], [notes])
    assert (plan.keep, plan.delete, plan.upload) == ((), (), (ISO,))


def test_plan_assets_refuses_two_files_of_one_name() -> None:
    """Two local files of one name would make two assets of one name: refused."""
    twin = LocalAsset(Path("/b/image.iso"), 1, "dd" * 32)
    with pytest.raises(ValueError, match="distinct names"):
        plan_assets([ISO, twin], [])


def test_matches_compares_digests_case_insensitively() -> None:
    """A digest in upper case still matches ours."""
    assert matches(copy(1, ISO, sha256=ISO.sha256.upper()), ISO)


def test_pick_release_prefers_the_published_release_over_drafts() -> None:
    """A published release is used; every draft of the tag is an orphan."""
    choice = pick_release(
        [ReleaseCandidate(3, True), ReleaseCandidate(7, False), ReleaseCandidate(2, True)]
    )
    assert choice.use == ReleaseCandidate(7, False)
    assert [c.id for c in choice.orphans] == [2, 3]


def test_pick_release_uses_the_oldest_draft() -> None:
    """Drafts only: the oldest (lowest id) is used, the later ones are orphans."""
    choice = pick_release([ReleaseCandidate(9, True), ReleaseCandidate(4, True)])
    assert choice.use == ReleaseCandidate(4, True)
    assert choice.orphans == (ReleaseCandidate(9, True),)


def test_pick_release_with_none_creates_and_counts_a_release_once() -> None:
    """No release means "create one"; one seen twice (by tag and in the list) is one."""
    assert pick_release([]).use is None
    twice = pick_release([ReleaseCandidate(7, False), ReleaseCandidate(7, False)])
    assert (twice.use, twice.orphans) == (ReleaseCandidate(7, False), ())
