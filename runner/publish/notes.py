"""What a release says about itself: the signed facts and the release body.

Pure: no I/O. `signing_fields` turns a build request into the trusted comment's facts;
`release_body` writes the Markdown body of a tag's release: where it was built from, how
to verify it, and the rebuild check's verdict, with the differing paths when the two
builds differed. Paths come from the builds themselves: backticks and control
characters are replaced, and the list is cut (the build page has it all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from runner.publish.provenance import Reproducibility
from webhooks.build import BuildRequest, RefKind

#: Differing paths listed in a release body; the rest are counted.
MAX_LISTED: Final = 20
NOT_REPRODUCIBLE: Final = "Not reproducible"


def signing_fields(request: BuildRequest) -> list[tuple[str, str]]:
    """The build's facts for the trusted comment: repo, commit, and tag/branch/pr."""
    fields = [("repo", f"{request.forge}:{request.repo}"), ("commit", request.commit_sha)]
    if request.kind is RefKind.TAG:
        fields.append(("tag", request.ref_name))
    elif request.kind is RefKind.BRANCH:
        fields.append(("branch", request.ref_name))
    else:
        fields.append(("pr", str(request.pr_number)))
    return fields


def _code(text: str) -> str:
    clean = "".join("?" if ord(c) < 0x20 or c == "`" else c for c in text)
    return f"`{clean}`"


def reproducibility_lines(result: Reproducibility, build_url: str) -> list[str]:
    """The rebuild check's verdict as Markdown lines."""
    if result.status == "identical":
        digest = result.rebuild.sha256 if result.rebuild is not None else "?"
        return [
            "**Reproducible**: rebuilt in a second fresh container; the two ISOs are "
            f"byte-identical (sha256 `{digest}`)."
        ]
    if result.status == "different":
        count = result.total
        lines = [
            f"**{NOT_REPRODUCIBLE}**: a rebuild in a second fresh container gave a different "
            f"ISO; {count} path(s) differ:",
            "",
        ]
        listed = result.differences[:MAX_LISTED]
        lines += [f"- {_code(path)}" for path in listed]
        if count > len(listed):
            lines.append(f"- … and {count - len(listed)} more: {build_url}")
        return lines
    return ["Rebuild check: not run for this build."]


def release_body(
    request: BuildRequest,
    *,
    build_url: str,
    result: Reproducibility,
    key_id: str | None,
    public_key_url: str,
    isos: Sequence[str],
) -> str:
    """The Markdown body of a tag's release.

    Args:
        request: The build's request.
        build_url: The build page.
        result: The rebuild check's result.
        key_id: The signing key's id, or None when nothing is signed.
        public_key_url: Where the public key is served (`<public_url>/signing-key.pub`).
        isos: The ISO file names.

    Returns:
        The body text.
    """
    lines = [f"Built by isorunner from {request.commit_sha}: {build_url}", ""]
    lines += reproducibility_lines(result, build_url)
    lines.append("")
    if key_id is not None and isos:
        lines += [
            f"Signed with minisign key `{key_id}` ({public_key_url}); "
            "`provenance.json` says what was built from what. To verify:",
            "",
            "```",
            f"minisign -Vm {isos[0]} -p signing-key.pub",
            "sha256sum -c sha256sums",
            "```",
        ]
    else:
        lines.append(
            "Not signed (no signing key configured); check with `sha256sum -c sha256sums`."
        )
    return "\n".join(lines) + "\n"
