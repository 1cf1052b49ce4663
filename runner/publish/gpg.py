"""An optional detached GPG signature (`<iso>.sig`), as Arch users check ISOs with `gpg --verify`.

`gpg_argv` is pure; `GpgSigner.sign` runs `gpg` (I/O). The passphrase goes to gpg on its
standard input (`--passphrase-fd 0` with loopback pinentry), never in argv or the
environment; gpg gets a minimal environment of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import anyio
from pydantic import SecretStr

from runner.publish.exceptions import SigningFailed

SIG_SUFFIX: Final = ".sig"
_ENV: Final = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}
_MAX_ERROR_CHARS: Final = 2000


def gpg_argv(gpg: str, *, key: str, homedir: Path, path: Path, with_passphrase: bool) -> list[str]:
    """The gpg command line that writes `<path>.sig`.

    Args:
        gpg: The gpg executable.
        key: The signing key's id or fingerprint.
        homedir: The keyring directory.
        path: The file to sign.
        with_passphrase: Read the passphrase from standard input.

    Returns:
        The argv.
    """
    argv = [gpg, "--batch", "--yes", "--no-tty", "--quiet", "--homedir", str(homedir)]
    if with_passphrase:
        argv += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    argv += [
        "--local-user",
        key,
        "--detach-sign",
        "--output",
        f"{path}{SIG_SUFFIX}",
        "--",
        str(path),
    ]
    return argv


class GpgSigner:
    """Makes detached GPG signatures with one key.

    Args:
        key: The key id or fingerprint (`[signing] gpg_key`).
        homedir: The keyring directory (`gpg_homedir`).
        passphrase: The key's passphrase, if it has one.
        gpg: The gpg executable.
    """

    def __init__(
        self,
        key: str,
        *,
        homedir: Path,
        passphrase: SecretStr | None = None,
        gpg: str = "gpg",
    ) -> None:
        self.key = key
        self._homedir = homedir
        self._passphrase = passphrase
        self._gpg = gpg

    async def sign(self, path: Path) -> Path:
        """Write `<path>.sig`.

        Returns:
            The signature file.

        Raises:
            SigningFailed: gpg is missing or refused (wrong passphrase, unknown key).
        """
        argv = gpg_argv(
            self._gpg,
            key=self.key,
            homedir=self._homedir,
            path=path,
            with_passphrase=self._passphrase is not None,
        )
        secret = b"" if self._passphrase is None else self._passphrase.get_secret_value().encode()
        try:
            result = await anyio.run_process(argv, input=secret + b"\n", env=_ENV, check=False)
        except OSError as exc:
            raise SigningFailed(f"cannot run {self._gpg}: {exc.strerror}") from None
        if result.returncode != 0:
            error = result.stderr.decode("utf-8", "replace").strip()[-_MAX_ERROR_CHARS:]
            raise SigningFailed(
                f"gpg could not sign {path.name} with key {self.key} (exit {result.returncode}): "
                f"{error or 'no message'}; check [signing] gpg_key, gpg_homedir, gpg_passphrase"
            )
        return Path(f"{path}{SIG_SUFFIX}")
