"""The `isorunner keygen` and `isorunner verify` commands.

I/O shell: argument definitions, password prompts (on the terminal, twice) and password
files, printing. Passwords never come from the command line. `runner.__main__` adds the
parsers and calls `keygen` or `verify`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from runner.publish.exceptions import KeyFileError, VerificationFailed
from runner.publish.keys import (
    load_public_key,
    load_secret_key,
    read_password_file,
    write_secret_key,
)
from runner.publish.minisign import PublicKey, generate_secret_key
from runner.publish.verify import report_lines, verify_release
from runner.settings import SigningSettings

Prompt = Callable[[str], str]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keygen` and `verify` to the `isorunner` command line."""
    keygen_text = "create a minisign signing key for releases; print its public key"
    keygen_parser = commands.add_parser("keygen", help=keygen_text, description=keygen_text)
    keygen_parser.add_argument(
        "--secret-key", type=Path, required=True, metavar="FILE",
        help="where to write the secret key (mode 0600); then set [signing] key_file to it",
    )  # fmt: skip
    keygen_parser.add_argument(
        "--public-key", type=Path, metavar="FILE", help="also write the public key there"
    )
    password = keygen_parser.add_mutually_exclusive_group()
    password.add_argument(
        "--password-file", type=Path, metavar="FILE",
        help="encrypt the key with the password in FILE (default: ask twice on the terminal)",
    )  # fmt: skip
    password.add_argument(
        "--no-password", action="store_true",
        help="leave the key unencrypted (protect the file itself instead)",
    )  # fmt: skip
    keygen_parser.add_argument(
        "--force", action="store_true", help="replace an existing secret key file"
    )
    verify_text = (
        "check a downloaded ISO: its .minisig, the sha256sums/b2sums and provenance.json "
        "beside it; print what it was built from"
    )
    verify_parser = commands.add_parser("verify", help=verify_text, description=verify_text)
    verify_parser.add_argument("iso", type=Path, metavar="ISO")
    verify_parser.add_argument(
        "--pubkey", metavar="KEY",
        help="the publisher's public key: a .pub file or its RW… line (an isorunner server "
        "serves it at /signing-key.pub); default: the key of [signing] key_file",
    )  # fmt: skip
    verify_parser.add_argument(
        "--provenance", type=Path, metavar="FILE",
        help="the provenance to check (default: provenance.json beside the ISO, if any)",
    )  # fmt: skip
    verify_parser.add_argument(
        "--config", type=Path, help="the TOML file whose [signing] key_file gives the key"
    )


def ask_password(prompt: Prompt = getpass.getpass) -> bytes:
    """Ask for a new password twice on the terminal.

    Raises:
        KeyFileError: The two differ, or it is empty.
    """
    first = prompt("Password for the new key: ")
    if not first:
        raise KeyFileError("an empty password; use --no-password for an unencrypted key")
    if prompt("Password (again): ") != first:
        raise KeyFileError("the passwords differ; nothing was written")
    return first.encode("utf-8")


def keygen(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    prompt: Prompt = getpass.getpass,
    interactive: bool | None = None,
) -> int:
    """Create the key, write it, print the public key (to `out`, default stdout).

    Raises:
        KeyFileError: No way to get a password, bad password file, or the file exists.
    """
    out = sys.stdout if out is None else out
    if args.no_password:
        password = None
    elif args.password_file is not None:
        password = read_password_file(args.password_file)
    else:
        if not (sys.stdin.isatty() if interactive is None else interactive):
            raise KeyFileError(
                "no terminal to ask for a password: give --password-file FILE or --no-password"
            )
        password = ask_password(prompt)
    key = generate_secret_key()
    write_secret_key(args.secret_key, key, password=password, force=args.force)
    public = key.public_key()
    if args.public_key is not None:
        args.public_key.write_text(public.file_text())
    out.write(public.file_text())
    print(
        f"isorunner: secret key {public.id_text} written to {args.secret_key} (mode 0600, "
        f"{'encrypted' if password else 'NOT encrypted'}); set [signing] key_file to it",
        file=sys.stderr,
    )
    return 0


def configured_public_key(signing: SigningSettings) -> PublicKey:
    """The public half of the configured signing key.

    Raises:
        KeyFileError: No key is configured, or it cannot be loaded.
    """
    if signing.key_file is None:
        raise KeyFileError(
            "give --pubkey KEY (the publisher's signing-key.pub); no [signing] key_file is set"
        )
    password = signing.key_password
    secret = None if password is None else password.get_secret_value().encode("utf-8")
    return load_secret_key(signing.key_file, secret).public_key()


def verify(
    args: argparse.Namespace,
    signing: Callable[[], SigningSettings],
    *,
    out: TextIO | None = None,
) -> int:
    """Verify the ISO; print the report, or the reason it failed (exit 1).

    Args:
        args: The parsed command line.
        signing: Gives the `[signing]` settings, read only when `--pubkey` is absent.
        out: Where the report goes (default stdout).

    Raises:
        KeyFileError: The key cannot be loaded.
    """
    out = sys.stdout if out is None else out
    key = load_public_key(args.pubkey) if args.pubkey else configured_public_key(signing())
    try:
        result = verify_release(args.iso, key, provenance=args.provenance)
    except VerificationFailed as exc:
        print(f"isorunner: verification FAILED for {args.iso.name}: {exc.reason}", file=out)
        return 1
    for line in report_lines(result):
        print(line, file=out)
    return 0
