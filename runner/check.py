"""`isorunner check`: is this installation ready to build? Says what to fix.

I/O shell: looks at the tools, the sandbox base and its manifest, package sync (pacman,
gpg, the keyring, the cache), free disk space, the database and the signing key
(decrypting it with its password); boots QEMU's probe guest in the sandbox (does the
boot test run, does KVM really work); and makes one read-only API call per configured
repository with that forge's token (through the real `ForgeTransport`). Each finding is
printed on its own line, `ok` or `FAIL`, with what to do; the exit code is 0 only when
nothing failed.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol, TextIO

import anyio
import httpx

from runner.exceptions import RunnerError
from runner.forges import github, gitlab
from runner.forges.client import ForgeTransport
from runner.forges.exceptions import ForgeError
from runner.forges.tokens import TokenProvider
from runner.hosttools import SERVICE_NEEDS, System, Which, host_system, missing_tools, read_tools
from runner.settings import Settings
from runner.store import open_store
from runner.wiring import USER_AGENT, boot_tester, github_tokens, load_signer, sandbox_config
from sandbox import Accelerator, BaseMissing, SandboxError, parse_size, validate_base
from sandbox.base import missing_mount_points
from sandbox.vm import UefiFirmware
from webhooks.build import Forge

#: A check must not hang on a dead forge for the transport's two-minute retry budget.
FORGE_RETRY_SECONDS = 10.0
GIB = 1024**3
#: The loop devices' control file: each build's disk is an ext4 image on a loop device.
LOOP_CONTROL = Path("/dev/loop-control")


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: what was checked, whether it is fine, and what to do."""

    name: str
    ok: bool
    message: str


class DiskUsage(NamedTuple):
    """What `shutil.disk_usage` returns (total, used, free bytes)."""

    total: int
    used: int
    free: int


def check_tools(which: Which = shutil.which, system: System | None = None) -> list[Finding]:
    """Every program the service and setup-sandbox.sh run is on PATH (runner/hosttools.txt).

    Args:
        which: Finds a program on PATH; tests inject a fake.
        system: Which package names to give; None looks at this host.
    """
    tools, host = read_tools(), system or host_system()
    missing = missing_tools(tools, needs=SERVICE_NEEDS, system=host, which=which)
    if missing:
        return [Finding("tools", False, tool.message()) for tool in missing]
    count = len(missing_tools(tools, needs=SERVICE_NEEDS, system=host, which=lambda _: None))
    return [Finding("tools", True, f"the {count} programs the service needs are on PATH")]


def check_packages(
    settings: Settings, *, which: Callable[[str], str | None] = shutil.which
) -> Finding:
    """Package sync can run: pacman and gpg, the keyring, a writable cache directory."""
    section = settings.packages
    missing = [tool for tool in ("pacman", "gpg") if which(tool) is None]
    if missing:
        return Finding(
            "packages",
            False,
            f"{' and '.join(missing)} missing: install pacman (Debian: pacman-package-manager) "
            "and gnupg",
        )
    keyring = section.keyring
    if not (keyring / "pubring.gpg").is_file() and not (keyring / "pubring.kbx").is_file():
        return Finding(
            "packages",
            False,
            f"no keyring at {keyring} (packages.keyring): run scripts/setup-sandbox.sh",
        )
    cache = _existing(section.cache_dir)
    if not os.access(cache, os.W_OK):
        return Finding(
            "packages", False, f"{section.cache_dir} (packages.cache_dir) is not writable"
        )
    source = (
        f"the archive of {section.archive_date}"
        if section.package_source == "archive"
        else f"{len(section.mirrors)} mirror(s)"
    )
    return Finding(
        "packages",
        True,
        f"keyring {keyring}, cache {section.cache_dir} (up to {section.max_cache_bytes}), {source}",
    )


def check_loop_devices(loop_control: Path = LOOP_CONTROL) -> Finding:
    """Loop devices are there: each build's disk is an ext4 image on one."""
    if not loop_control.exists():
        return Finding(
            "loop",
            False,
            f"{loop_control} is missing: each build's disk is a loop device; load the loop "
            "module (modprobe loop) or, in a container, pass the loop devices in",
        )
    return Finding("loop", True, f"{loop_control} found (each build's disk is a loop device)")


def check_base(settings: Settings) -> Finding:
    """The sandbox base exists, is prepared, carries its manifest and matches the config.

    The contract itself is `sandbox.base.validate_base`'s; this turns its answer into a
    finding (also read by `GET /readyz`).
    """
    try:
        sandbox_config(settings)
    except ValueError as exc:
        return Finding("sandbox base", False, f"[sandbox]: {exc}")
    section = settings.sandbox
    try:
        info = validate_base(section.base, uid_base=section.uid_base, isolation=section.isolation)
    except BaseMissing as exc:
        return Finding("sandbox base", False, str(exc))
    return Finding(
        "sandbox base",
        True,
        f"{info.path} (made {info.created}, uid range {info.uid_base})",
    )


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent (the file system it will live on)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_disk(
    settings: Settings, *, usage: Callable[[Path], DiskUsage] | None = None
) -> list[Finding]:
    """Each file system holding state has room for one build.

    The sandbox root must hold a build's disk (`sandbox.max_disk_bytes`, taken when the
    build starts), the artifacts and logs directories its output
    (`sandbox.max_output_bytes`); on one file system, both.

    Args:
        settings: The configuration (paths and the two sizes).
        usage: Reads a path's disk usage; `shutil.disk_usage` by default.
    """
    measure = usage or (lambda path: DiskUsage(*shutil.disk_usage(path)))
    section = settings.sandbox
    disk, output = parse_size(section.max_disk_bytes), parse_size(section.max_output_bytes)
    needs: dict[int, tuple[Path, int, list[str]]] = {}
    for path, needed, key in (
        (section.sandbox_root, disk, f"sandbox.max_disk_bytes = {section.max_disk_bytes}"),
        (section.iso_output_root, output, f"sandbox.max_output_bytes = {section.max_output_bytes}"),
        (settings.storage.logs_dir, 0, ""),
    ):
        where = _existing(path)
        device = os.stat(where).st_dev
        first, total, keys = needs.get(device, (path, 0, []))
        needs[device] = (first, total + needed, [*keys, key] if key and key not in keys else keys)
    findings: list[Finding] = []
    for path, needed, keys in needs.values():
        free = measure(_existing(path)).free
        if free < needed:
            findings.append(
                Finding(
                    "disk",
                    False,
                    f"{path}: only {free / GIB:.1f} GiB free, and one build takes "
                    f"{needed / GIB:.1f} GiB there ({' + '.join(keys)}): free space (lower "
                    "storage.retention_days) or lower the limit",
                )
            )
        else:
            findings.append(Finding("disk", True, f"{path}: {free / GIB:.1f} GiB free"))
    return findings


async def check_database(settings: Settings) -> Finding:
    """The job database opens (and is created if new)."""
    try:
        async with open_store(settings.storage.database) as store:
            counts = await store.count_by_state()
    except RunnerError as exc:
        return Finding("database", False, str(exc))
    return Finding("database", True, f"{sum(counts.values())} builds stored")


async def check_github(settings: Settings, transport: ForgeTransport) -> list[Finding]:
    """Each GitHub repository is visible and writable with the configured credentials."""
    repos = [repo.name for repo in settings.repos if repo.forge is Forge.GITHUB]
    api_url = str(settings.github.api_url)
    try:
        tokens = github_tokens(settings, transport)
    except RunnerError as exc:
        return [Finding("github", False, str(exc))]
    if tokens is None:
        if not repos:
            return []
        return [
            Finding(
                "github",
                False,
                f"{len(repos)} GitHub repo(s) configured but no API credentials: set "
                "github.token_file (or github.app_id and github.private_key_file)",
            )
        ]
    if not repos:
        return [await _check_github_token(settings, transport, api_url)]
    return [await _check_github_repo(transport, tokens, api_url, name) for name in repos]


async def _check_github_token(
    settings: Settings, transport: ForgeTransport, api_url: str
) -> Finding:
    """Without repositories, a static token is still proven valid (`GET /rate_limit`)."""
    if settings.github.token is None:
        return Finding("github", True, "no GitHub repos configured; App not checked")
    token = settings.github.token.get_secret_value()
    try:
        response = await transport.send(github.build_rate_limit(api_url, token))
        limit = github.decode_rate_limit(response)
    except ForgeError as exc:
        return Finding("github", False, str(exc))
    return Finding("github", True, f"token valid ({limit.remaining}/{limit.limit} left)")


async def _check_github_repo(
    transport: ForgeTransport, tokens: TokenProvider, api_url: str, name: str
) -> Finding:
    try:
        token = await tokens.token_for(name)
        response = await transport.send(github.build_get_repo(api_url, token, name))
        repo = github.decode_repo(response)
    except ForgeError as exc:
        return Finding(f"github {name}", False, str(exc))
    if repo.permissions is not None and not repo.permissions.push:
        return Finding(
            f"github {name}",
            False,
            "the token can read the repository but not write to it: give it "
            "Commit statuses: write and Contents: write (classic: the repo scope)",
        )
    note = "" if repo.permissions is not None else " (permissions not reported)"
    return Finding(f"github {name}", True, f"{repo.full_name} reachable{note}")


async def check_gitlab(settings: Settings, transport: ForgeTransport) -> list[Finding]:
    """Each GitLab project is visible with Developer access for the configured token."""
    repos = [repo.name for repo in settings.repos if repo.forge is Forge.GITLAB]
    if settings.gitlab.token is None:
        if not repos:
            return []
        return [
            Finding(
                "gitlab",
                False,
                f"{len(repos)} GitLab repo(s) configured but no API token: set "
                "gitlab.token_file (a project or personal access token with the api scope)",
            )
        ]
    token = settings.gitlab.token.get_secret_value()
    api_url = f"{str(settings.gitlab.url).rstrip('/')}/api/v4"
    if not repos:
        return [Finding("gitlab", True, "no GitLab repos configured; token not checked")]
    findings: list[Finding] = []
    for name in repos:
        try:
            response = await transport.send(gitlab.build_get_project(api_url, token, name))
            project = gitlab.decode_project(response)
        except ForgeError as exc:
            findings.append(Finding(f"gitlab {name}", False, str(exc)))
            continue
        level = project.access_level
        if level is not None and level < gitlab.DEVELOPER_ACCESS:
            findings.append(
                Finding(
                    f"gitlab {name}",
                    False,
                    f"the token's access level is {level}; commit statuses and releases "
                    f"need Developer ({gitlab.DEVELOPER_ACCESS}): raise the token's role",
                )
            )
        else:
            note = "" if level is not None else " (access level not reported)"
            findings.append(
                Finding(f"gitlab {name}", True, f"{project.path_with_namespace} reachable{note}")
            )
    return findings


async def check_forges(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    retry_seconds: float = FORGE_RETRY_SECONDS,
) -> list[Finding]:
    """One read-only API call per configured repository, through the real transport.

    Args:
        settings: The configuration.
        http_transport: Replaces the network (tests); None uses the real network.
        retry_seconds: How long one call may retry a forge that does not answer.
    """
    timeout = httpx.Timeout(15.0, connect=5.0)
    async with httpx.AsyncClient(
        transport=http_transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
    ) as http:
        transport = ForgeTransport(http, max_retry_seconds=retry_seconds)
        return [
            *await check_github(settings, transport),
            *await check_gitlab(settings, transport),
        ]


class BootProbe(Protocol):
    """What `check_boot` asks of `sandbox.BootTester` (tests give a fake)."""

    async def probe(self, accelerator: Accelerator) -> tuple[bool, str]:
        """Boot the probe guest; whether it ran, and what happened."""
        ...

    async def accelerator(self) -> tuple[Accelerator, str]:
        """KVM if it really works, else TCG, and why."""
        ...

    def uefi_firmware(self) -> UefiFirmware:
        """OVMF's files in the base (raises SetupError without)."""
        ...


async def check_boot(settings: Settings, *, tester: BootProbe | None = None) -> list[Finding]:
    """Whether the boot test can run: QEMU in the sandbox, OVMF for UEFI, and KVM.

    KVM counts as working only when a probe guest really runs under it; without it the
    boot test emulates the CPU (TCG), which is slower but passes the same.

    Args:
        settings: The configuration.
        tester: The boot tester to ask (tests inject one); built from `settings` if None.
    """
    base = settings.sandbox.base
    if await anyio.to_thread.run_sync(missing_mount_points, base):
        return [Finding("boot test", False, "not checked: the sandbox base is not ready")]
    if tester is None:
        tester = boot_tester(settings)
    findings: list[Finding] = []
    try:
        works, what = await tester.probe("tcg")
        if not works:
            return [
                Finding(
                    "boot test",
                    False,
                    f"QEMU cannot run a guest in the sandbox ({what}); the base needs "
                    "qemu-system-x86 (run scripts/setup-sandbox.sh)",
                )
            ]
        findings.append(Finding("boot test", True, f"QEMU runs in the sandbox: {what}"))
        if "uefi" in settings.boot_test.firmware:
            firmware = await anyio.to_thread.run_sync(tester.uefi_firmware)
            findings.append(Finding("uefi firmware", True, f"OVMF at {firmware.code}"))
        accelerator, why = await tester.accelerator()
    except SandboxError as exc:
        findings.append(Finding("boot test", False, str(exc)))
        return findings
    if accelerator == "kvm":
        findings.append(Finding("kvm", True, f"works ({why}): boot tests run under KVM"))
    else:
        findings.append(
            Finding("kvm", True, f"not used, {why}; boot tests emulate the CPU (TCG, slower)")
        )
    return findings


async def check_signing(settings: Settings) -> Finding:
    """The `[signing]` key loads with its password (or nothing is signed, said so)."""
    try:
        signer = await load_signer(settings.signing)
    except RunnerError as exc:
        return Finding("signing key", False, f"{exc}; fix [signing] key_file or key_password")
    if signer is None:
        return Finding("signing key", True, "none configured: builds are not signed")
    extra = f"; GPG key {settings.signing.gpg_key} too" if settings.signing.gpg_key else ""
    return Finding(
        "signing key",
        True,
        f"{settings.signing.key_file} loads: minisign key {signer.public_key.id_text}{extra}",
    )


async def run_checks(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    out: TextIO | None = None,
    forge_retry_seconds: float = FORGE_RETRY_SECONDS,
    boot: BootProbe | None = None,
    which: Which = shutil.which,
    loop_control: Path = LOOP_CONTROL,
) -> int:
    """Run every check, print one line each; return 0 when all passed.

    Args:
        settings: The configuration.
        http_transport: Replaces the network for the forge checks (tests).
        out: Where the lines go; standard output by default.
        forge_retry_seconds: How long one forge call may retry (tests pass 0).
        boot: Runs the boot test's probes; None builds the real `sandbox.BootTester`.
        which: Finds a program on PATH (tests inject a fake).
        loop_control: The loop devices' control file (tests pass their own).
    """
    findings = [
        *check_tools(which),
        check_loop_devices(loop_control),
        check_base(settings),
        check_packages(settings),
        *check_disk(settings),
        await check_database(settings),
        *await check_boot(settings, tester=boot),
        await check_signing(settings),
        *await check_forges(
            settings, http_transport=http_transport, retry_seconds=forge_retry_seconds
        ),
    ]
    stream = out if out is not None else sys.stdout
    for finding in findings:
        mark = "ok  " if finding.ok else "FAIL"
        print(f"{mark} {finding.name}: {finding.message}", file=stream)
    return 0 if all(f.ok for f in findings) else 1
