"""The signed files of a build, beside its ISOs and sums: `.minisig`s, provenance, GPG `.sig`s.

I/O shell: writes files into the build's artifacts directory. Each ISO is signed with the
BLAKE2b-512 its `b2sums` pass already computed, so no ISO is read again; the provenance
statement is written as `provenance.json` and signed too. Returns the files to publish,
in order: ISOs, sums, signatures, provenance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from runner.artifacts import Artifacts
from runner.publish.gpg import GpgSigner
from runner.publish.provenance import PROVENANCE_FILE, encode
from runner.publish.signing import Signer, write_atomically


async def write_signed_files(
    artifacts: Artifacts,
    *,
    signer: Signer,
    fields: Sequence[tuple[str, str]],
    provenance: Mapping[str, Any] | None,
    gpg: GpgSigner | None = None,
) -> list[Path]:
    """Sign the ISOs, write and sign the provenance; return every file to publish.

    Args:
        artifacts: The collected ISOs and sums (`runner.artifacts.collect_build`).
        signer: The minisign key.
        fields: The build's facts for the trusted comments (repo, commit, tag…).
        provenance: The statement (`runner.publish.provenance.statement`), or None.
        gpg: Also make a detached GPG signature of each ISO.

    Returns:
        ISOs, sums, `.minisig`s, GPG `.sig`s, `provenance.json` and its `.minisig`.

    Raises:
        OSError: A file cannot be written.
        runner.publish.exceptions.SigningFailed: gpg refused.
    """
    files = list(artifacts.files)
    for iso, sums in artifacts.isos:
        files.append(await signer.sign_async(iso, fields=fields, digest=bytes.fromhex(sums.b2)))
    if gpg is not None:
        for iso, _ in artifacts.isos:
            files.append(await gpg.sign(iso))
    if provenance is not None and artifacts.isos:
        path = artifacts.isos[0][0].with_name(PROVENANCE_FILE)
        await anyio.to_thread.run_sync(
            lambda: write_atomically(path, encode(provenance).decode("utf-8"))
        )
        files += [path, await signer.sign_async(path, fields=fields)]
    return files
