"""Tests for `isorunner setup-sandbox` (runner.sandboxsetup).

The argv is checked as a list; the CLI test runs the real scripts/setup-sandbox.sh in
`--dry-run` mode, which plans without touching the disk or needing root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.__main__ import main
from runner.exceptions import ConfigError
from runner.packages.settings import PackagesSettings
from runner.sandboxsetup import (
    INSTALLED_SCRIPT,
    SOURCE_ROOT,
    SOURCE_SCRIPT,
    find_script,
    run_setup,
    setup_argv,
)
from runner.settings import SandboxSettings, Settings

UID_BASE = 2147352576 - 65536


def settings_for(tmp_path: Path) -> Settings:
    """Settings whose base and UID range differ from the script's defaults."""
    return Settings(
        sandbox=SandboxSettings(sandbox_root=tmp_path / "sandbox", uid_base=UID_BASE),
        packages=PackagesSettings(keyring=tmp_path / "keyring", cache_dir=tmp_path / "cache"),
    )


def test_setup_argv_passes_the_configured_base_uid_range_keyring_and_cache(tmp_path: Path) -> None:
    """--base and --uid-base come from `[sandbox]`, the keyring and cache from `[packages]`."""
    argv = setup_argv(settings_for(tmp_path), Path("/s/setup-sandbox.sh"), ["--dry-run"])
    assert argv == [
        "/s/setup-sandbox.sh",
        "--base",
        str(tmp_path / "sandbox" / "base"),
        "--uid-base",
        str(UID_BASE),
        "--keyring-dir",
        str(tmp_path / "keyring"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--dry-run",
    ]


def test_find_script_prefers_the_source_tree_then_path(tmp_path: Path) -> None:
    """A checkout's script wins; without one the installed name on PATH is used."""
    assert find_script() == SOURCE_ROOT / SOURCE_SCRIPT
    installed = f"/usr/local/bin/{INSTALLED_SCRIPT}"
    assert find_script(tmp_path, lambda name: installed if name == INSTALLED_SCRIPT else None) == (
        Path(installed)
    )
    with pytest.raises(ConfigError, match=f"nor {INSTALLED_SCRIPT} on PATH"):
        find_script(tmp_path, lambda name: None)


def test_run_setup_returns_the_scripts_exit_code(tmp_path: Path) -> None:
    """The script's failure is the command's failure."""
    ran: list[list[str]] = []

    def run(argv: list[str]) -> int:
        ran.append(argv)
        return 3

    assert run_setup(settings_for(tmp_path), ["--dry-run"], script=Path("/s"), run=run) == 3
    assert ran == [setup_argv(settings_for(tmp_path), Path("/s"), ["--dry-run"])]


def test_cli_runs_the_real_script_for_the_configured_base(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`isorunner setup-sandbox -- ARGS` plans the base the config names (dry run)."""
    config = tmp_path / "isorunner.toml"
    config.write_text(
        f'[sandbox]\nbase_dir = "{tmp_path}/base"\nuid_base = {UID_BASE}\n'
        f'[packages]\nkeyring = "{tmp_path}/keyring"\ncache_dir = "{tmp_path}/cache"\n'
    )
    code = main(["setup-sandbox", "--config", str(config), "--", "--dry-run"])
    out = capfd.readouterr().out
    assert code == 0, out
    assert f"  keyring: {tmp_path}/keyring" in out.splitlines()
    assert f"plan: step_wrappers {tmp_path}/base.new" in out.splitlines()
    assert f"plan: step_publish {tmp_path}/base.new" in out.splitlines()
