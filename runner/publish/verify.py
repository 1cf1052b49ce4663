"""`isorunner verify ISO`: is this the ISO isorunner built, and from what?

I/O shell around pure checks: reads the ISO once (SHA-256 and BLAKE2b-512 together),
its `.minisig`, the `sha256sums`/`b2sums` and the `provenance.json` (with its own
`.minisig`) found beside it, all bounded in size since a download is not trusted. Any
failed check raises `VerificationFailed` naming the file and the check; what was not
there to check is reported as a note, not passed over in silence.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from runner.checksums import compute_checksums
from runner.publish.exceptions import SignatureInvalid, VerificationFailed
from runner.publish.minisign import PublicKey, parse_signature, verify_digest
from runner.publish.provenance import PREDICATE_TYPE, PROVENANCE_FILE, STATEMENT_TYPE
from runner.publish.signing import blake2b_file, parse_trusted_comment, signature_path

MAX_SIGNATURE_BYTES: Final = 16 << 10
MAX_SUMS_BYTES: Final = 1 << 20
MAX_PROVENANCE_BYTES: Final = 16 << 20
SUMS_FILES: Final = (("sha256sums", "sha256"), ("b2sums", "b2"))


@dataclass(frozen=True, slots=True)
class ProvenanceSummary:
    """What the provenance says about the build that made the ISO.

    Attributes:
        forge: The forge ("github", "gitlab").
        repository: The profile repository.
        ref: The git ref built.
        commit: The commit built.
        builder: The isorunner instance (`builder.id`).
        finished: When the build finished.
        reproducibility: "identical", "different" or "not-checked".
        differences: How many paths differed in the rebuild.
    """

    forge: str
    repository: str
    ref: str
    commit: str
    builder: str
    finished: str
    reproducibility: str
    differences: int


@dataclass(frozen=True, slots=True)
class Verified:
    """A successful verification.

    Attributes:
        iso: The ISO's file name.
        size: Its size in bytes.
        sha256: Its SHA-256.
        key_id: The key it is signed with.
        signed: The trusted comment's fields.
        sums: The sums files that list it correctly.
        provenance: The provenance summary, when a provenance was checked.
        notes: What could not be checked and why.
    """

    iso: str
    size: int
    sha256: str
    key_id: str
    signed: Mapping[str, str]
    sums: tuple[str, ...]
    provenance: ProvenanceSummary | None
    notes: tuple[str, ...]


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise VerificationFailed(f"{what} {path} is missing") from None
    except OSError as exc:
        raise VerificationFailed(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise VerificationFailed(f"{what} {path} is larger than {limit} bytes")
    return data


def _check_signature(path: Path, digest: bytes, key: PublicKey, what: str) -> Mapping[str, str]:
    sig_path = signature_path(path)
    text = _read(sig_path, MAX_SIGNATURE_BYTES, "signature").decode("utf-8", "replace")
    try:
        signature = parse_signature(text)
        verify_digest(key, digest, signature)
    except SignatureInvalid as exc:
        raise VerificationFailed(f"{what} {sig_path.name}: {exc.reason}") from None
    return parse_trusted_comment(signature.trusted_comment)


def check_sums(text: str, name: str, digest: str, file_name: str) -> bool:
    """Whether a sums file lists `name`; raise if it lists it with another digest.

    Args:
        text: The sums file (`<hex>  <name>` or `<hex> *<name>` lines).
        name: The ISO's file name.
        digest: Its digest as computed here.
        file_name: The sums file's name, for the message.

    Raises:
        VerificationFailed: An entry for `name` has another digest.
    """
    found = False
    for line in text.splitlines():
        listed_digest, _, rest = line.partition(" ")
        listed_name = rest[1:] if rest[:1] in (" ", "*") else rest
        if listed_name != name:
            continue
        found = True
        if not hmac.compare_digest(listed_digest.lower(), digest):
            raise VerificationFailed(f"{file_name} lists another digest for {name}: not this ISO")
    return found


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _field(document: Any, *path: str) -> Any:
    value: Any = document
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_provenance(document: Any, name: str, sha256: str, blake2b: str) -> ProvenanceSummary:
    """Check that a provenance statement names this ISO; summarise what it states.

    Raises:
        VerificationFailed: Not an in-toto Statement v1 with a SLSA v1 predicate, or no
            subject of this name with these digests.
    """
    if not isinstance(document, dict) or document.get("_type") != STATEMENT_TYPE:
        raise VerificationFailed(f"{PROVENANCE_FILE} is not an in-toto Statement v1")
    if document.get("predicateType") != PREDICATE_TYPE:
        raise VerificationFailed(f"{PROVENANCE_FILE} does not carry SLSA v1 provenance")
    subjects = document.get("subject")
    matching = [
        s
        for s in (subjects if isinstance(subjects, list) else [])
        if isinstance(s, dict) and s.get("name") == name
    ]
    if not matching:
        raise VerificationFailed(f"{PROVENANCE_FILE} does not name {name}")
    digests = matching[0].get("digest")
    digests = digests if isinstance(digests, dict) else {}
    listed = str(digests.get("sha256", ""))
    if not hmac.compare_digest(listed, sha256) or (
        "blake2b" in digests and not hmac.compare_digest(str(digests["blake2b"]), blake2b)
    ):
        raise VerificationFailed(f"{PROVENANCE_FILE} names {name} with other digests: not this ISO")
    predicate = document.get("predicate")
    external = _dict(_field(predicate, "buildDefinition", "externalParameters"))
    result = _dict(_field(predicate, "runDetails", "isorunner_reproducibility"))
    count = result.get("differenceCount", 0)
    return ProvenanceSummary(
        forge=str(external.get("forge", "?")),
        repository=str(external.get("repository", "?")),
        ref=str(external.get("ref", "?")),
        commit=str(external.get("commit", "?")),
        builder=str(_field(predicate, "runDetails", "builder", "id") or "?"),
        finished=str(_field(predicate, "runDetails", "metadata", "finishedOn") or "?"),
        reproducibility=str(result.get("status", "not-checked")),
        differences=count if isinstance(count, int) else 0,
    )


def verify_release(iso: Path, key: PublicKey, *, provenance: Path | None = None) -> Verified:
    """Verify a downloaded ISO: signature, sums beside it, and its provenance.

    Args:
        iso: The ISO; its `.minisig` must be beside it.
        key: The publisher's public key.
        provenance: The provenance file; default `provenance.json` beside the ISO, if
            there is one.

    Returns:
        What was verified, and notes on what was not there to verify.

    Raises:
        VerificationFailed: A check failed; the message names the file and the check.
    """
    try:
        sums = compute_checksums(iso)
    except OSError as exc:
        raise VerificationFailed(f"cannot read {iso}: {exc.strerror}") from None
    signed = _check_signature(iso, bytes.fromhex(sums.b2), key, "signature")
    notes: list[str] = []
    checked: list[str] = []
    for file_name, attribute in SUMS_FILES:
        path = iso.with_name(file_name)
        if not path.exists():
            notes.append(f"no {file_name} beside the ISO; not checked")
            continue
        text = _read(path, MAX_SUMS_BYTES, "sums file").decode("utf-8", "replace")
        if check_sums(text, iso.name, getattr(sums, attribute), file_name):
            checked.append(file_name)
        else:
            raise VerificationFailed(f"{file_name} does not list {iso.name}")
    summary = None
    path = provenance if provenance is not None else iso.with_name(PROVENANCE_FILE)
    if provenance is not None or path.exists():
        data = _read(path, MAX_PROVENANCE_BYTES, "provenance")
        _check_signature(path, blake2b_file(path), key, "provenance signature")
        try:
            document = json.loads(data)
        except ValueError:
            raise VerificationFailed(f"{path.name} is not JSON") from None
        summary = check_provenance(document, iso.name, sums.sha256, sums.b2)
    else:
        notes.append(f"no {PROVENANCE_FILE} beside the ISO; give --provenance FILE to check one")
    if signed.get("file") not in (None, iso.name):
        notes.append(f"signed under the name {signed['file']!r}")
    return Verified(
        iso=iso.name,
        size=sums.size,
        sha256=sums.sha256,
        key_id=key.id_text,
        signed=signed,
        sums=tuple(checked),
        provenance=summary,
        notes=tuple(notes),
    )


def report_lines(result: Verified) -> list[str]:
    """What `isorunner verify` prints for a verified ISO."""
    signed = result.signed
    lines = [
        f"OK {result.iso} ({result.size} bytes, sha256 {result.sha256})",
        f"  signature: good, key {result.key_id}, timestamp {signed.get('timestamp', '?')}",
    ]
    facts = [f"{key} {signed[key]}" for key in ("repo", "commit", "tag", "ref") if key in signed]
    if facts:
        lines.append(f"  signed facts: {', '.join(facts)}")
    if result.sums:
        lines.append(f"  sums: {' and '.join(result.sums)} list this ISO")
    if result.provenance is not None:
        p = result.provenance
        lines.append(
            f"  provenance: built from {p.forge}:{p.repository} {p.ref} at commit {p.commit}"
        )
        lines.append(f"  provenance: built by {p.builder}, finished {p.finished}")
        rebuilt = {
            "identical": "rebuilt twice, byte-identical",
            "different": f"NOT reproducible: the rebuild differed in {p.differences} path(s)",
        }.get(p.reproducibility, "rebuild check not run")
        lines.append(f"  reproducibility: {rebuilt}")
    lines.extend(f"  note: {note}" for note in result.notes)
    return lines
