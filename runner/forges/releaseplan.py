"""What the forge already has of a release, and what is left to do: the pure decisions.

Pure: no I/O. Both forge clients publish the same way, one attempt at a time, each
attempt starting from what the forge holds now (an earlier attempt, another process
or a person may have changed it):

1. `pick_release`: among the releases the forge has for the tag, which one to use
   and which are orphans to remove (GitHub lets drafts share a tag, and a draft made
   by a create whose answer was lost is one of them). None: create one.
2. `plan_assets`: among the files the forge holds (release assets, package files),
   which complete copies to keep, which to delete (partial uploads, stale copies
   whose digest differs, second copies of one name) and which local files to upload.

The rule behind every answer: never two releases for one tag, never two files of one
name, and a file the forge already holds whole, with our digest, is never sent again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LocalAsset:
    """A file to publish, as it is on disk.

    Attributes:
        path: The file; its name is the asset's name on the forge.
        size: Its size in bytes.
        sha256: Its SHA-256, lowercase hex.
    """

    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        """The file name, which is the asset's name on the forge."""
        return self.path.name


@dataclass(frozen=True, slots=True)
class RemoteAsset:
    """A file the forge holds under a name (a GitHub asset, a GitLab package file).

    Attributes:
        id: The forge's id for it (to delete it).
        name: Its name.
        size: Its size in bytes as the forge reports it.
        sha256: Its SHA-256 as the forge reports it, lowercase hex; None when the
            forge does not say (an older GitHub Enterprise, a partial asset).
        complete: False for an upload the forge itself calls unfinished (GitHub's
            asset `state` "open"); GitLab only lists finished files.
        parent: The id of what holds it where the forge needs both to delete it
            (GitLab's package); 0 when `id` alone names it (GitHub).
    """

    id: int
    name: str
    size: int
    sha256: str | None
    complete: bool = True
    parent: int = 0


@dataclass(frozen=True, slots=True)
class AssetPlan:
    """What one attempt does to the forge's files, in this order: delete, then upload.

    Attributes:
        keep: The complete copies of our files the forge already holds, one per name.
        delete: Copies to remove: partial, stale (another digest) or extra copies of
            a name, and copies of a name that is about to be uploaded again.
        upload: The local files the forge lacks, in publishing order.
    """

    keep: tuple[RemoteAsset, ...]
    delete: tuple[RemoteAsset, ...]
    upload: tuple[LocalAsset, ...]

    @property
    def done(self) -> bool:
        """Whether the forge holds every file whole and nothing is to be removed."""
        return not self.delete and not self.upload


def matches(remote: RemoteAsset, local: LocalAsset, *, trust_size: bool = False) -> bool:
    """Whether `remote` is a complete copy of `local`.

    Args:
        remote: What the forge holds.
        local: The file on disk.
        trust_size: Accept a copy without a digest when its size is right. Only for
            a copy this attempt has just uploaded itself, after an ambiguous answer:
            nobody else writes that name while the attempt runs, and any stale copy
            was deleted before the upload.
    """
    if not remote.complete or remote.name != local.name or remote.size != local.size:
        return False
    if remote.sha256 is None:
        return trust_size
    return remote.sha256.lower() == local.sha256.lower()


def plan_assets(
    local: Sequence[LocalAsset],
    remote: Sequence[RemoteAsset],
    *,
    trust_size: Collection[str] = (),
) -> AssetPlan:
    """Decide which of the forge's copies to keep or delete and which files to upload.

    Files of other names are left alone (notes or files a person added). For each of
    our names, the newest complete copy with our digest is kept (a download serves
    the newest copy of a name on GitLab) and every other copy of the name deleted; a
    name without such a copy has all its copies deleted and the file uploaded.

    Args:
        local: The files to publish, in publishing order, with distinct names.
        remote: What the forge holds now.
        trust_size: Names whose copies may match by size alone (see `matches`).

    Returns:
        The plan.

    Raises:
        ValueError: Two local files share a name.
    """
    names = [asset.name for asset in local]
    if len(set(names)) != len(names):
        raise ValueError(f"release files need distinct names, got {names}")
    keep: list[RemoteAsset] = []
    delete: list[RemoteAsset] = []
    upload: list[LocalAsset] = []
    for asset in local:
        copies = sorted((r for r in remote if r.name == asset.name), key=lambda r: r.id)
        trusted = asset.name in trust_size
        good = [r for r in copies if matches(r, asset, trust_size=trusted)]
        if good:
            kept = good[-1]
            keep.append(kept)
            delete.extend(r for r in copies if r is not kept)
        else:
            delete.extend(copies)
            upload.append(asset)
    return AssetPlan(tuple(keep), tuple(delete), tuple(upload))


@dataclass(frozen=True, slots=True)
class ReleaseCandidate:
    """A release the forge has for the tag.

    Attributes:
        id: The forge's id for it.
        draft: Whether it is a draft (GitHub); GitLab has no drafts.
    """

    id: int
    draft: bool


@dataclass(frozen=True, slots=True)
class ReleaseChoice:
    """Which release to publish into, and which orphans of the same tag to remove.

    Attributes:
        use: The release to use, or None: create one.
        orphans: Other releases of the tag (drafts left by an earlier attempt).
    """

    use: ReleaseCandidate | None
    orphans: tuple[ReleaseCandidate, ...]


def pick_release(candidates: Sequence[ReleaseCandidate]) -> ReleaseChoice:
    """Choose the one release of a tag to use: the published one, else the oldest draft.

    Every other release of the tag is an orphan: GitHub lets drafts share a tag (a
    create whose answer was lost leaves one), and publishing a second release of a tag
    is refused, so they can only ever be clutter beside the release.

    Args:
        candidates: Every release the forge has for the tag, drafts included.

    Returns:
        The choice; `use` is None when there is none.
    """
    unique = {candidate.id: candidate for candidate in candidates}
    ordered = sorted(unique.values(), key=lambda c: (c.draft, c.id))
    if not ordered:
        return ReleaseChoice(None, ())
    return ReleaseChoice(ordered[0], tuple(ordered[1:]))
