"""Tests of runner.packages.pacman: the config, argv and output of private pacman runs."""

from __future__ import annotations

from pathlib import Path

from runner.packages.exceptions import (
    DependencyUnresolvable,
    PackageNotFound,
    PackageSetupError,
    SignatureInvalid,
)
from runner.packages.pacman import (
    OFFLINE_SERVER,
    PacmanPaths,
    Resolved,
    pacman_conf,
    parse_resolved,
    resolve_argv,
    resolve_error,
)
from runner.packages.sources import Repository

PATHS = PacmanPaths.under(Path("/w"), gpgdir=Path("/w/gnupg"))


def test_pacman_conf_is_private_and_offline() -> None:
    """Every path is under the work dir, no server is reachable, SigLevels are written."""
    text = pacman_conf(
        PATHS,
        arch="x86_64",
        repositories=[
            Repository("core", ("https://m/$repo/os/$arch",)),
            Repository("custom", ("https://c/$arch",), "Optional TrustAll"),
        ],
    )
    assert "DBPath = /w/db/\nCacheDir = /w/cache/\n" in text
    assert "GPGDir = /w/gnupg/\nArchitecture = x86_64\nSigLevel = Required DatabaseOptional" in text
    assert f"[core]\nServer = {OFFLINE_SERVER}\n" in text
    assert f"[custom]\nSigLevel = Optional TrustAll\nServer = {OFFLINE_SERVER}\n" in text
    assert "https://" not in text


def test_argv_puts_targets_after_double_dash() -> None:
    """Targets follow `--`, so a name can never be read as an option."""
    assert resolve_argv("pacman", PATHS, ["base"]) == [
        "pacman", "--config", "/w/pacman.conf", "--noconfirm", "--noprogressbar",
        "-Sp", "--print-format", "%r %n %v", "--", "base",
    ]  # fmt: skip


def test_parse_resolved_keeps_only_answer_lines() -> None:
    """Lines that are not `<known repo> <name> <version>` (prompts, warnings) are skipped."""
    out = (
        ":: There are 2 providers available for sh:\n"
        "core bash 5.2-1\n"
        "extra foo 1:2.0-3\n"
        "other x 1-1\n"
        "core broken\n"
    )
    assert parse_resolved(out, ["core", "extra"]) == [
        Resolved("core", "bash", "5.2-1"),
        Resolved("extra", "foo", "1:2.0-3"),
    ]


def test_resolve_error_names_missing_packages_and_repositories() -> None:
    """`target not found` lines become PackageNotFound naming both targets and repos."""
    error = resolve_error(
        "error: target not found: nosuch\nerror: target not found: other\n", ["core", "extra"]
    )
    assert isinstance(error, PackageNotFound)
    assert error.names == ("nosuch", "other")
    assert error.message.startswith("packages not found: nosuch, other (searched core, extra)")
    assert error.profile_fault


def test_resolve_error_names_a_database_with_a_bad_signature() -> None:
    """A database that fails its signature check becomes SignatureInvalid for it."""
    output = (
        'error: baddb: signature from "stranger <s@x>" is unknown trust\n'
        "error: database 'baddb' is not valid (invalid or corrupted database (PGP signature))\n"
    )
    error = resolve_error(output, ["core", "baddb"])
    assert isinstance(error, SignatureInvalid)
    assert error.package == "baddb database"
    assert not error.profile_fault


def test_resolve_error_explains_dependencies() -> None:
    """An unsatisfiable dependency is the profile's failure, quoting pacman's reasons."""
    output = (
        "error: failed to prepare transaction (could not satisfy dependencies)\n"
        ":: unable to satisfy dependency 'libfoo' required by foo\n"
    )
    error = resolve_error(output, ["core"])
    assert isinstance(error, DependencyUnresolvable)
    assert "unable to satisfy dependency 'libfoo' required by foo" in error.message


def test_resolve_error_quotes_pacman_otherwise() -> None:
    """Anything else is a set-up error that quotes pacman's error lines."""
    error = resolve_error("error: failed to initialize alpm library\n", ["core"])
    assert isinstance(error, PackageSetupError)
    assert "failed to initialize alpm library" in error.message
