"""The `runner.publish` error tree: signing keys, signatures, provenance, ISO comparison.

Pure: exception classes only, no I/O. Messages say what failed and what to do; they never
carry a password, a secret key or a key file's contents.

```
RunnerError (runner.exceptions)
 └── PublishError             root of what runner.publish raises on purpose
      ├── KeyFileError        a signing key file is missing, malformed, or its password wrong
      ├── SignatureInvalid    a signature, public key or signature file does not check out
      ├── VerificationFailed  `isorunner verify` found a problem (signature, sums, provenance)
      ├── SigningFailed       a signature could not be made (gpg failed)
      └── CompareFailed       the two ISOs of a rebuild check could not be compared
```
"""

from __future__ import annotations

from runner.exceptions import RunnerError


class PublishError(RunnerError):
    """Root of the errors `runner.publish` raises on purpose."""


class KeyFileError(PublishError):
    """A signing key file cannot be used; the message says why and what to do."""


class SignatureInvalid(PublishError):
    """A minisign signature (or the key or file it needs) does not check out.

    Attributes:
        reason: What is wrong, in a few words (also the message).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class VerificationFailed(PublishError):
    """A downloaded ISO failed `isorunner verify`.

    Attributes:
        reason: What failed, naming the file and the check.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SigningFailed(PublishError):
    """A signature could not be made (e.g. gpg refused); the message quotes the tool."""


class CompareFailed(PublishError):
    """The rebuild check could not compare its two ISOs (a sandbox or listing problem)."""
