"""The `isorunner` command: serve, build, check, init, setup-sandbox, keygen and verify.

I/O shell: parses arguments, loads the configuration once (`--config`, else
`$ISORUNNER_CONFIG`, else `./isorunner.toml`), and hands over to `runner.service`
(serve), `runner.check`, `runner.localbuild` (build) or `runner.publish.commands`
(keygen, verify). Errors a user can fix are printed as one message, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from runner import sandboxsetup, starter
from runner.check import run_checks
from runner.exceptions import RunnerError
from runner.localbuild import build_locally
from runner.publish import commands as publish_commands
from runner.service import serve
from runner.settings import DEFAULT_CONFIG_PATH, Settings, environment_settings, load_settings


def config_path(given: Path | None) -> Path:
    """The configuration file to read: `--config`, `$ISORUNNER_CONFIG`, or the default."""
    if given is not None:
        return given
    from_env = os.environ.get("ISORUNNER_CONFIG")
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    top = argparse.ArgumentParser(
        prog="isorunner",
        description="Self-hosted CI runner that builds archiso profiles into ISOs.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "receive webhooks, run builds and serve the build pages"),
        ("check", "validate the configuration, sandbox base, database and forge tokens"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", type=Path, help="the TOML file (see README)")
    build = commands.add_parser(
        "build",
        help="build a local profile directory in the sandbox, without a forge",
        description="Build PROFILE_DIR into an ISO in the sandbox; the log goes to the "
        "terminal, the ISO and its checksums to --out.",
    )
    build.add_argument("profile", type=Path, metavar="PROFILE_DIR")
    build.add_argument("--out", type=Path, required=True, metavar="DIR")
    build.add_argument(
        "--config", type=Path, help="the TOML file for [sandbox] (defaults apply if absent)"
    )
    build.add_argument(
        "--source-date-epoch",
        type=int,
        help="SOURCE_DATE_EPOCH for the build (default: the newest file time in the profile)",
    )
    build.add_argument(
        "--boot-test",
        choices=("required", "advisory", "off"),
        default="required",
        help="boot the ISO in QEMU as [boot_test] says: required (a failed boot fails the "
        "command; the default), advisory (reported only) or off",
    )
    starter.add_parser(commands)
    sandboxsetup.add_parser(commands)
    publish_commands.add_parsers(commands)
    return top


def optional_settings(given: Path | None) -> Settings:
    """The configuration if a file is given or found, else the defaults."""
    path = config_path(given)
    return load_settings(path) if given or path.exists() else environment_settings()


def run_command(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per command
    """Run the parsed command; return its exit code.

    Raises:
        RunnerError: Something a user can fix (printed by `main`).
    """
    if args.command == "init":
        return starter.run_init(args, config_path(args.config))
    if args.command == "keygen":
        return publish_commands.keygen(args)
    if args.command == "verify":
        return publish_commands.verify(args, lambda: optional_settings(args.config).signing)
    if args.command == "build":
        settings = optional_settings(args.config)
        return anyio.run(
            build_locally,
            settings,
            args.profile,
            args.out,
            args.source_date_epoch,
            args.boot_test,
        )
    settings = load_settings(config_path(args.config))
    if args.command == "check":
        return anyio.run(run_checks, settings)
    if args.command == "setup-sandbox":
        return sandboxsetup.run_setup(settings, sandboxsetup.script_args(args))
    anyio.run(serve, settings, backend_options={"use_uvloop": True})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = parser().parse_args(argv)
    try:
        return run_command(args)
    except RunnerError as exc:
        print(f"isorunner: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
