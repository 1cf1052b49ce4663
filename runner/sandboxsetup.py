"""`isorunner setup-sandbox`: prepare the sandbox base the configuration names.

Runs `scripts/setup-sandbox.sh` (from this source tree, or `isorunner-setup-sandbox` on
PATH, where the Containerfile installs it) with `--base` and `--uid-base` taken from
`[sandbox]` and `--keyring-dir`/`--cache-dir` from `[packages]`, so that the base and
keyring it makes are the ones `serve` and `check` look for. The
script is idempotent: a finished base (its manifest present) is left as it is.

`setup_argv` and `find_script` are pure (the PATH lookup is injected); `run_setup` is
the I/O shell: one child process whose output goes to the terminal.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from runner.exceptions import ConfigError
from runner.hosttools import Which
from runner.settings import Settings

#: The script in a source checkout, relative to the directory holding `runner/`.
SOURCE_SCRIPT = Path("scripts") / "setup-sandbox.sh"
#: The script's name where it is installed on PATH (the Containerfile does so).
INSTALLED_SCRIPT = "isorunner-setup-sandbox"
SOURCE_ROOT = Path(__file__).resolve().parents[1]

Run = Callable[[list[str]], int]


def find_script(source_root: Path = SOURCE_ROOT, which: Which = shutil.which) -> Path:
    """The setup script: the source tree's, else the installed one.

    Raises:
        ConfigError: Neither exists.
    """
    script = source_root / SOURCE_SCRIPT
    if script.is_file():
        return script
    installed = which(INSTALLED_SCRIPT)
    if installed is not None:
        return Path(installed)
    raise ConfigError(
        f"cannot find {SOURCE_SCRIPT} (not running from a source checkout) nor "
        f"{INSTALLED_SCRIPT} on PATH: install it from the source tree's {SOURCE_SCRIPT}"
    )


def setup_argv(settings: Settings, script: Path, extra: Sequence[str] = ()) -> list[str]:
    """The script's command line for the configured sandbox base and package keyring/cache."""
    section = settings.sandbox
    return [
        str(script),
        "--base",
        str(section.base),
        "--uid-base",
        str(section.uid_base),
        "--keyring-dir",
        str(settings.packages.keyring),
        "--cache-dir",
        str(settings.packages.cache_dir),
        *extra,
    ]


def _run(argv: list[str]) -> int:
    return subprocess.run(argv, check=False).returncode


def run_setup(
    settings: Settings,
    extra: Sequence[str] = (),
    *,
    script: Path | None = None,
    run: Run = _run,
) -> int:
    """Run the setup script for the configured base; return its exit code.

    Args:
        settings: The configuration (`[sandbox]` base and uid_base).
        extra: More arguments for the script (`--packages FILE`, `--dry-run`, …).
        script: The script to run; `find_script()` by default.
        run: Runs an argv and returns its exit code (tests inject a fake).
    """
    return run(setup_argv(settings, script or find_script(), extra))


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `isorunner setup-sandbox` on the CLI's subcommands."""
    text = (
        "prepare the sandbox base the configuration names, when it is missing "
        "(runs setup-sandbox.sh with its --base and --uid-base)"
    )
    setup = commands.add_parser("setup-sandbox", help=text, description=text)
    setup.add_argument("--config", type=Path, help="the TOML file (see README)")
    setup.add_argument(
        "script_args",
        nargs=argparse.REMAINDER,
        metavar="-- ARG",
        help="more arguments for setup-sandbox.sh, after --, e.g. -- --packages FILE",
    )


def script_args(args: argparse.Namespace) -> list[str]:
    """The arguments meant for the script, without the `--` that separates them."""
    extra: list[str] = list(args.script_args)
    return extra[1:] if extra[:1] == ["--"] else extra
