"""Publishing: what a finished build puts on its forge, and what makes it trustworthy.

From the store's outbox, after the build:

- `files.py`: a build's files to publish, their digests and their order (file I/O).
- `release.py`: `Publisher`, the outbox's release step: one attempt per due `RELEASE`
  notification, its progress and outcome recorded in the store, retried with backoff
  across restarts and outages until published or refused for good (I/O shell).

The decisions about what the forge already has and what is left to do are pure and
live with the forge clients (`runner.forges.releaseplan`), which both forges share.

At build time, beside the ISOs (signatures, provenance, the rebuild check):

- `minisign.py`: pure; the minisign key and signature formats (prehashed Ed25519).
- `keys.py`: key files on disk (`isorunner keygen`, loading a key with its password).
- `signing.py`: the trusted comment, the streamed BLAKE2b prehash, `Signer`.
- `gpg.py`: an optional detached GPG signature (`<iso>.sig`) made by `gpg`.
- `provenance.py`: pure; the in-toto Statement with a SLSA v1 provenance predicate.
- `notes.py`: pure; the trusted comment's facts and a release's body.
- `release.py`: writes a build's signed files (`.minisig`s, provenance) beside its ISOs.
- `isocompare.py`: comparing two ISOs of a rebuild check (listed inside the sandbox by
  `isodiff.sh`) down to the paths that differ.
- `verify.py`: `isorunner verify`: signature, sums and provenance of a downloaded ISO.
- `commands.py`: the `isorunner keygen` and `isorunner verify` command lines.
- `exceptions.py`: the `PublishError` tree.
"""

from runner.publish.files import release_files
from runner.publish.release import REFUSAL_ATTEMPTS, Publisher

__all__ = ["REFUSAL_ATTEMPTS", "Publisher", "release_files"]
