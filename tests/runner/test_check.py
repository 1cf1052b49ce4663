"""Tests for `isorunner check` (runner.check): base, disk, database and forge findings.

Forge calls go through the real `ForgeTransport` into a respx router over
`httpx.MockTransport`; the sandbox base is a directory made in `tmp_path`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import pytest
import respx
from pydantic import SecretStr

from runner.check import (
    DiskUsage,
    check_base,
    check_boot,
    check_disk,
    check_loop_devices,
    check_packages,
    run_checks,
)
from runner.hosttools import Which, host_system
from runner.packages.settings import PackagesSettings
from runner.settings import (
    GitHubSettings,
    GitLabSettings,
    RepoSettings,
    SandboxSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from sandbox import Accelerator
from sandbox.base import MANIFEST, MOUNT_POINTS
from sandbox.vm import UefiFirmware
from webhooks.build import Forge

GITHUB_API = "https://api.github.com"
GITLAB_API = "https://gitlab.example.com/api/v4"
GH_TOKEN = "ghp_check-cli-token-value"
GL_TOKEN = "glpat-check-cli-token-value"
UID_BASE = 2147352576


def make_settings(
    tmp_path: Path,
    *,
    repos: tuple[RepoSettings, ...] = (),
    github_token: str | None = GH_TOKEN,
    gitlab_token: str | None = GL_TOKEN,
    isolation: Literal["userns", "root"] = "root",
    uid_base: int = UID_BASE,
) -> Settings:
    """Settings with every section given, state under `tmp_path`."""
    return Settings(
        server=ServerSettings(),
        storage=StorageSettings(
            database=f"sqlite:///{tmp_path}/db/isorunner.db", logs_dir=tmp_path / "logs"
        ),
        sandbox=SandboxSettings(
            sandbox_root=tmp_path / "sandbox",
            iso_output_root=tmp_path / "artifacts",
            isolation=isolation,
            uid_base=uid_base,
            max_output_bytes="1G",
            max_disk_bytes="2G",
        ),
        github=GitHubSettings(
            webhook_secret=SecretStr("whsecret-github-check"),
            token=None if github_token is None else SecretStr(github_token),
        ),
        gitlab=GitLabSettings(
            url="https://gitlab.example.com",
            webhook_secret=SecretStr("whsecret-gitlab-check"),
            token=None if gitlab_token is None else SecretStr(gitlab_token),
        ),
        packages=PackagesSettings(keyring=tmp_path / "keyring", cache_dir=tmp_path / "packages"),
        repos=repos,
    )


def make_base(settings: Settings, *, uid_base: int = UID_BASE) -> Path:
    """A prepared base: mount points and a manifest naming `uid_base`."""
    base = settings.sandbox.base
    for point in MOUNT_POINTS:
        (base / point).mkdir(parents=True)
    manifest = base / MANIFEST
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"created": "2025-03-01T00:00:00Z", "uid_base": uid_base}))
    # The package keyring setup-sandbox.sh makes beside it.
    settings.packages.keyring.mkdir(parents=True)
    (settings.packages.keyring / "pubring.gpg").write_bytes(b"")
    return base


GITHUB_REPO = RepoSettings(forge=Forge.GITHUB, name="octo/archlive")
GITLAB_REPO = RepoSettings(forge=Forge.GITLAB, name="group/live")


@pytest.fixture
def router() -> Iterator[respx.Router]:
    """A respx router whose routes must all have been called by the end of the test."""
    router = respx.Router(assert_all_mocked=True)
    yield router
    router.assert_all_called()


@pytest.fixture
def network(router: respx.Router) -> httpx.MockTransport:
    """The forge network: `router` behind a mock transport."""
    return httpx.MockTransport(router.async_handler)


def on_path(name: str) -> str | None:
    """A PATH on which every program is found."""
    return f"/usr/bin/{name}"


async def checked(
    settings: Settings, network: httpx.MockTransport, which: Which = on_path
) -> tuple[int, list[str]]:
    """Run every check; return the exit code and the printed lines."""
    out = io.StringIO()
    loop_control = settings.sandbox.sandbox_root / "loop-control"  # as if the module is loaded
    loop_control.parent.mkdir(parents=True, exist_ok=True)
    loop_control.touch()
    code = await run_checks(
        settings,
        http_transport=network,
        out=out,
        forge_retry_seconds=0,
        boot=FakeBoot(),
        which=which,
        loop_control=loop_control,
    )
    return code, out.getvalue().splitlines()


class FakeBoot:
    """A boot tester for checks: QEMU runs (or not), KVM does not, OVMF is there."""

    def __init__(self, *, qemu: bool = True) -> None:
        self.qemu = qemu

    async def probe(self, accelerator: Accelerator) -> tuple[bool, str]:
        return self.qemu, "a probe guest ran" if self.qemu else "qemu-system-x86_64: not found"

    async def accelerator(self) -> tuple[Accelerator, str]:
        return "tcg", "because KVM does not work here: Permission denied"

    def uefi_firmware(self) -> UefiFirmware:
        return UefiFirmware("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")


# ---------------------------------------------------------------- base and disk


def test_check_base_accepts_a_prepared_base(tmp_path: Path) -> None:
    """A base with its mount points and a manifest matching uid_base passes."""
    settings = make_settings(tmp_path)
    make_base(settings)
    finding = check_base(settings)
    assert finding.ok, finding.message
    assert "made 2025-03-01T00:00:00Z" in finding.message


def test_check_base_names_the_uid_base_mismatch(tmp_path: Path) -> None:
    """A manifest for another UID range fails and says how to make them agree."""
    settings = make_settings(tmp_path)
    make_base(settings, uid_base=UID_BASE - 65536)
    finding = check_base(settings)
    assert not finding.ok
    assert f"--uid-base {UID_BASE}" in finding.message


def test_check_base_names_missing_mount_points(tmp_path: Path) -> None:
    """A base without /build/output cannot take the read-only binds: re-run setup."""
    settings = make_settings(tmp_path)
    base = make_base(settings)
    (base / "build/output").rmdir()
    finding = check_base(settings)
    assert not finding.ok
    assert "build/output" in finding.message


def test_check_base_userns_needs_the_base_owned_by_uid_base(tmp_path: Path) -> None:
    """Under user namespaces a base whose files belong to another uid fails."""
    settings = make_settings(tmp_path, isolation="userns")
    base = make_base(settings)
    if os.stat(base).st_uid == UID_BASE:  # pragma: no cover - a host that shifted tmp
        pytest.skip("tmp_path already belongs to uid_base")
    finding = check_base(settings)
    assert not finding.ok
    assert "not sandbox.uid_base" in finding.message


def test_check_base_refuses_an_invalid_uid_base(tmp_path: Path) -> None:
    """A uid_base that is not a multiple of 65536 is reported from the sandbox config."""
    settings = make_settings(tmp_path, uid_base=UID_BASE + 1)
    finding = check_base(settings)
    assert not finding.ok
    assert "multiple of 65536" in finding.message


def test_check_disk_fails_below_one_builds_disk_and_output(tmp_path: Path) -> None:
    """Less free space than a build's disk and output fails, naming the path and both keys."""
    settings = make_settings(tmp_path)
    findings = check_disk(settings, usage=lambda path: DiskUsage(10 << 30, 0, 2 << 30))
    assert findings  # every path lives on tmp_path's file system: one finding
    assert len(findings) == 1
    assert not findings[0].ok
    assert "2.0 GiB free" in findings[0].message
    assert "takes 3.0 GiB" in findings[0].message
    assert "sandbox.max_disk_bytes = 2G + sandbox.max_output_bytes = 1G" in findings[0].message


def test_check_loop_devices_passes_when_loop_control_is_there(tmp_path: Path) -> None:
    """A present /dev/loop-control is an ok finding."""
    control = tmp_path / "loop-control"
    control.touch()
    assert check_loop_devices(control).ok


def test_check_loop_devices_fails_without_loop_control(tmp_path: Path) -> None:
    """Without /dev/loop-control no build can get its disk: a FAIL saying what to do."""
    finding = check_loop_devices(tmp_path / "no-loop-control")
    assert not finding.ok
    assert "modprobe loop" in finding.message


def test_check_disk_passes_with_room(tmp_path: Path) -> None:
    """Enough free space passes and says how much there is."""
    settings = make_settings(tmp_path)
    findings = check_disk(settings, usage=lambda path: DiskUsage(100 << 30, 0, 50 << 30))
    assert [f.ok for f in findings] == [True]
    assert "50.0 GiB free" in findings[0].message


# ---------------------------------------------------------------- forges, whole run


def test_check_packages_needs_tools_keyring_and_cache(tmp_path: Path) -> None:
    """Package sync needs pacman and gpg, the keyring, and a writable cache directory."""
    settings = make_settings(tmp_path)
    assert check_packages(settings, which=lambda tool: None).message.startswith(
        "pacman and gpg missing"
    )
    found = check_packages(settings, which=lambda tool: f"/usr/bin/{tool}")
    assert not found.ok
    assert "no keyring at" in found.message
    assert "run scripts/setup-sandbox.sh" in found.message
    make_base(settings)
    found = check_packages(settings, which=lambda tool: f"/usr/bin/{tool}")
    assert found.ok, found
    assert found.message.endswith("(up to 20G), 1 mirror(s)")


@pytest.mark.anyio
async def test_run_checks_calls_each_forge_once_per_repo_and_passes(
    tmp_path: Path, router: respx.Router, network: httpx.MockTransport
) -> None:
    """One read-only call per repo with the right token; all findings ok, exit 0."""
    settings = make_settings(tmp_path, repos=(GITHUB_REPO, GITLAB_REPO))
    make_base(settings)
    github = router.get(f"{GITHUB_API}/repos/octo/archlive").respond(
        200, json={"full_name": "octo/archlive", "permissions": {"push": True, "pull": True}}
    )
    gitlab = router.get(f"{GITLAB_API}/projects/group%2Flive").respond(
        200,
        json={
            "id": 3,
            "path_with_namespace": "group/live",
            "permissions": {"project_access": {"access_level": 40}},
        },
    )
    code, lines = await checked(settings, network)
    assert [line for line in lines if line.startswith("FAIL")] == []
    assert "ok   github octo/archlive: octo/archlive reachable" in lines
    assert "ok   gitlab group/live: group/live reachable" in lines
    assert github.calls.last.request.headers["Authorization"] == f"Bearer {GH_TOKEN}"
    assert gitlab.calls.last.request.headers["PRIVATE-TOKEN"] == GL_TOKEN
    assert code == 0


@pytest.mark.anyio
async def test_run_checks_reports_bad_tokens_and_weak_access_without_secrets(
    tmp_path: Path, router: respx.Router, network: httpx.MockTransport
) -> None:
    """A refused token, a read-only token and a Reporter role each fail with a fix, exit 1."""
    other = RepoSettings(forge=Forge.GITHUB, name="octo/readonly")
    settings = make_settings(tmp_path, repos=(GITHUB_REPO, other, GITLAB_REPO))
    router.get(f"{GITHUB_API}/repos/octo/archlive").respond(
        401, json={"message": "Bad credentials"}
    )
    router.get(f"{GITHUB_API}/repos/octo/readonly").respond(
        200, json={"full_name": "octo/readonly", "permissions": {"push": False, "pull": True}}
    )
    router.get(f"{GITLAB_API}/projects/group%2Flive").respond(
        200,
        json={
            "id": 3,
            "path_with_namespace": "group/live",
            "permissions": {"project_access": {"access_level": 20}, "group_access": None},
        },
    )
    code, lines = await checked(settings, network)
    assert code == 1
    text = "\n".join(lines)
    assert GH_TOKEN not in text
    assert GL_TOKEN not in text
    failed = {line.split(":")[0] for line in lines if line.startswith("FAIL")}
    assert {
        "FAIL github octo/archlive",
        "FAIL github octo/readonly",
        "FAIL gitlab group/live",
    } <= failed
    assert any("Commit statuses: write" in line for line in lines)
    assert any("need Developer (30)" in line for line in lines)


@pytest.mark.anyio
async def test_run_checks_requires_a_token_for_each_configured_forge(
    tmp_path: Path, network: httpx.MockTransport
) -> None:
    """A forge with repos but no API credentials fails without any network call."""
    settings = make_settings(
        tmp_path, repos=(GITHUB_REPO, GITLAB_REPO), github_token=None, gitlab_token=None
    )
    code, lines = await checked(settings, network)
    assert code == 1
    assert any(line.startswith("FAIL github: 1 GitHub repo(s)") for line in lines)
    assert any(line.startswith("FAIL gitlab: 1 GitLab repo(s)") for line in lines)


@pytest.mark.anyio
async def test_run_checks_proves_a_github_token_without_repos_by_rate_limit(
    tmp_path: Path, router: respx.Router, network: httpx.MockTransport
) -> None:
    """With a token but no GitHub repo, `GET /rate_limit` proves the token."""
    settings = make_settings(tmp_path, gitlab_token=None)
    core = {"limit": 5000, "remaining": 4999, "reset": 1_700_000_000}
    router.get(f"{GITHUB_API}/rate_limit").respond(200, json={"resources": {"core": core}})
    _, lines = await checked(settings, network)
    assert "ok   github: token valid (4999/5000 left)" in lines


@pytest.mark.anyio
async def test_run_checks_reports_an_unreachable_forge(
    tmp_path: Path, router: respx.Router, network: httpx.MockTransport
) -> None:
    """A forge that does not answer fails the check (bounded retries), naming the host."""
    settings = make_settings(tmp_path, repos=(GITHUB_REPO,), gitlab_token=None)
    router.get(f"{GITHUB_API}/repos/octo/archlive").mock(side_effect=httpx.ConnectError("refused"))
    code, lines = await checked(settings, network)
    assert code == 1
    assert any(
        line.startswith("FAIL github octo/archlive") and "api.github.com" in line for line in lines
    )


@pytest.mark.anyio
async def test_check_boot_says_qemu_runs_and_kvm_is_not_used(tmp_path: Path) -> None:
    """With QEMU working and KVM not, the boot test checks pass and say TCG is used, and why."""
    settings = make_settings(tmp_path)
    make_base(settings)
    findings = await check_boot(settings, tester=FakeBoot())
    assert [(f.name, f.ok) for f in findings] == [
        ("boot test", True),
        ("uefi firmware", True),
        ("kvm", True),
    ]
    assert "TCG" in findings[2].message
    assert "Permission denied" in findings[2].message


@pytest.mark.anyio
async def test_check_boot_fails_when_qemu_cannot_run(tmp_path: Path) -> None:
    """A base without QEMU fails the boot test check, saying what to install."""
    settings = make_settings(tmp_path)
    make_base(settings)
    (finding,) = await check_boot(settings, tester=FakeBoot(qemu=False))
    assert not finding.ok
    assert "qemu-system-x86" in finding.message


@pytest.mark.anyio
async def test_check_boot_skips_without_a_base(tmp_path: Path) -> None:
    """No prepared base: the boot test is not checked, and the finding says why."""
    settings = make_settings(tmp_path)
    (finding,) = await check_boot(settings, tester=FakeBoot())
    assert (finding.ok, finding.message) == (False, "not checked: the sandbox base is not ready")


@pytest.mark.anyio
async def test_run_checks_names_a_missing_host_program_and_its_package(
    tmp_path: Path, network: httpx.MockTransport
) -> None:
    """A program missing from PATH fails the run with its name and this host's package."""
    settings = make_settings(tmp_path, github_token=None, gitlab_token=None)
    make_base(settings)
    code, lines = await checked(
        settings, network, which=lambda name: None if name == "pacman" else on_path(name)
    )
    package = "pacman-package-manager" if host_system() == "debian" else "pacman"
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL tools: pacman is missing: install the {host_system().capitalize()} package "
        f"{package} (it resolves each build's packages on the host (private database, no "
        "installs); pacman-key makes the host keyring; installs the ISO's packages (mkarchiso "
        "in the base); the base's pacman wrapper test runs Debian's)"
    ]
