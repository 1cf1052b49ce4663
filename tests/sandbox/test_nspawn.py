"""Tests for sandbox.nspawn: the container command line, compared as lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.host import HostInfo
from sandbox.nspawn import (
    DROPPED_CAPABILITIES,
    KEPT_CAPABILITIES,
    Bind,
    ContainerSpec,
    container_argv,
    mkarchiso_command,
    nspawn_argv,
    systemd_run_argv,
)

NO_SYSTEMD = HostInfo(systemd_pid1=False, cgroup_mode="v1")
WITH_SYSTEMD = HostInfo(systemd_pid1=True, cgroup_mode="v2")
CONFIG = SandboxConfig(
    base_dir=Path("/base"),
    sandbox_root=Path("/srv/sbx"),
    memory_limit=8 << 30,
    cpus=4,
    pids_limit=2048,
)

DROPS = (
    "--drop-capability=CAP_AUDIT_CONTROL,CAP_AUDIT_WRITE,CAP_DAC_READ_SEARCH,CAP_IPC_OWNER,"
    "CAP_KILL,CAP_LEASE,CAP_LINUX_IMMUTABLE,CAP_MKNOD,CAP_NET_ADMIN,CAP_NET_BIND_SERVICE,"
    "CAP_NET_BROADCAST,CAP_NET_RAW,CAP_SETPCAP,CAP_SYS_BOOT,CAP_SYS_NICE,CAP_SYS_PTRACE,"
    "CAP_SYS_RESOURCE,CAP_SYS_TTY_CONFIG"
)
TMPFS = "mode=1777,nosuid,nodev,size=25%"


def _argv(
    config: SandboxConfig = CONFIG, host: HostInfo = NO_SYSTEMD, /, **kw: object
) -> list[str]:
    values: dict[str, object] = {
        "machine": "isorunner-b1",
        "root": Path("/srv/sbx/builds/b1/merged"),
        "profile_dir": Path("/srv/profiles/p"),
        "work_dir": Path("/srv/sbx/builds/b1/build-work"),
        "output_dir": Path("/srv/sbx/builds/b1/output"),
        "source_date_epoch": 1700000000,
        "command": mkarchiso_command(),
        "host": host,
    }
    values.update(kw)
    return nspawn_argv(config, **values)  # type: ignore[arg-type]


def test_nspawn_argv_without_systemd_is_the_hardened_userns_command() -> None:
    """Without systemd as PID 1 the argv is exactly the hardened nspawn command line."""
    assert _argv() == [
        "systemd-nspawn",
        "--quiet",
        "--settings=false",
        "--register=no",
        "--keep-unit",
        "--machine=isorunner-b1",
        "--directory=/srv/sbx/builds/b1/merged",
        "--read-only",
        "--private-network",
        f"--tmpfs=/tmp:{TMPFS}",
        f"--tmpfs=/var/tmp:{TMPFS}",
        "--private-users=2147352576:65536",
        "--private-users-ownership=off",
        "--bind-ro=/srv/profiles/p:/build/profile:idmap",
        "--bind=/srv/sbx/builds/b1/build-work:/build/work",
        "--bind=/srv/sbx/builds/b1/output:/build/output",
        "--setenv=SOURCE_DATE_EPOCH=1700000000",
        "--setenv=LC_ALL=C",
        "--setenv=TZ=UTC",
        "--setenv=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--console=pipe",
        "--as-pid2",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--no-new-privileges=yes",
        "--suppress-sync=yes",
        DROPS,
        "--",
        "mkarchiso",
        "-v",
        "-r",
        "-w",
        "/build/work/w",
        "-o",
        "/build/output",
        "-C",
        "/etc/isorunner/pacman.conf",
        "/build/profile",
    ]


def test_nspawn_argv_with_systemd_wraps_in_a_limited_scope() -> None:
    """Where systemd is PID 1 the same command runs in a transient scope carrying the limits."""
    argv = _argv(CONFIG, WITH_SYSTEMD)
    assert argv[:11] == [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=isorunner-b1",
        "--property=MemoryMax=8G",
        "--property=MemorySwapMax=0",
        "--property=CPUQuota=400%",
        "--property=TasksMax=2048",
        "--",
        "systemd-nspawn",
    ]
    assert argv[10:] == _argv()


def test_systemd_run_argv_renders_fractional_cpus_as_percent() -> None:
    """1.5 CPUs become CPUQuota=150%."""
    config = SandboxConfig(base_dir=Path("/b"), sandbox_root=Path("/s"), cpus=1.5)
    assert "--property=CPUQuota=150%" in systemd_run_argv(config, machine="m")


def test_nspawn_argv_root_isolation_has_no_user_namespace() -> None:
    """The documented root fallback drops --private-users and the idmap bind option."""
    config = SandboxConfig(base_dir=Path("/b"), sandbox_root=Path("/s"), isolation="root")
    argv = _argv(config)
    assert not [a for a in argv if a.startswith("--private-users")]
    assert "--bind-ro=/srv/profiles/p:/build/profile" in argv


def test_nspawn_argv_binds_the_build_repository_read_only() -> None:
    """A build's own repository is bound read-only over the base's mirror path."""
    argv = _argv(package_repo=Path("/var/lib/isorunner/work/7/repo"))
    assert "--bind-ro=/var/lib/isorunner/work/7/repo:/srv/isorunner/repo:idmap" in argv
    root = _argv(SandboxConfig(base_dir=Path("/b"), sandbox_root=Path("/s"), isolation="root"),
                 package_repo=Path("/r"))  # fmt: skip
    assert "--bind-ro=/r:/srv/isorunner/repo" in root
    assert not [a for a in _argv() if "/srv/isorunner/repo" in a]


def test_nspawn_argv_never_uses_the_invalid_ro_bind_option() -> None:
    """Read-only binds use --bind-ro, never the invalid --bind=SRC:DST:ro form."""
    assert not [a for a in _argv() if a.startswith("--bind=") and a.endswith(":ro")]


def test_nspawn_argv_escapes_colons_in_bind_sources() -> None:
    """A colon in a host path is escaped so nspawn does not split the bind spec on it."""
    argv = _argv(profile_dir=Path("/srv/a:b"))
    assert "--bind-ro=/srv/a\\:b:/build/profile:idmap" in argv


def test_nspawn_argv_keeps_only_the_capabilities_mkarchiso_needs() -> None:
    """Kept and dropped capability sets are disjoint and NET_ADMIN and DAC_READ_SEARCH go."""
    assert not set(KEPT_CAPABILITIES) & set(DROPPED_CAPABILITIES)
    assert {"CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_MODULE"} - set(
        DROPPED_CAPABILITIES
    ) == {"CAP_SYS_MODULE"}  # SYS_MODULE is never in nspawn's set to begin with
    assert set(KEPT_CAPABILITIES) == {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SYS_ADMIN",
        "CAP_SYS_CHROOT",
    }


def test_nspawn_argv_passes_the_command_after_a_double_dash() -> None:
    """Any command (e.g. `true` for benchmarks) follows `--` unchanged."""
    argv = _argv(command=["true"])
    assert argv[-2:] == ["--", "true"]


def test_nspawn_argv_contains_no_host_environment() -> None:
    """Only the four fixed variables are set in the container; nothing else is passed."""
    env = [a for a in _argv() if a.startswith("--setenv=")]
    assert [e.split("=", 2)[1] for e in env] == ["SOURCE_DATE_EPOCH", "LC_ALL", "TZ", "PATH"]


@pytest.mark.parametrize(
    ("kw", "message"), [({"command": []}, "command"), ({"source_date_epoch": -1}, "negative")]
)
def test_nspawn_argv_rejects_bad_input(kw: dict[str, object], message: str) -> None:
    """An empty command or a negative epoch is a programming error."""
    with pytest.raises(ValueError, match=message):
        _argv(CONFIG, NO_SYSTEMD, **kw)


def _container(spec: ContainerSpec, config: SandboxConfig = CONFIG) -> list[str]:
    return container_argv(
        config, machine="isorunner-v1", root=Path("/r"), spec=spec, host=NO_SYSTEMD
    )


def test_container_argv_for_an_unprivileged_command_drops_every_other_capability() -> None:
    """A container keeping only SETUID/SETGID (for setpriv) drops all the rest."""
    argv = _container(ContainerSpec(command=("qemu",), capabilities=("CAP_SETUID", "CAP_SETGID")))
    (drop,) = [a for a in argv if a.startswith("--drop-capability=")]
    dropped = set(drop.removeprefix("--drop-capability=").split(","))
    assert dropped == set(KEPT_CAPABILITIES + DROPPED_CAPABILITIES) - {"CAP_SETUID", "CAP_SETGID"}


def test_container_argv_network_shares_the_host_network_only_when_asked() -> None:
    """--private-network is there by default and absent only for network=True."""
    assert "--private-network" in _container(ContainerSpec(command=("x",)))
    assert "--private-network" not in _container(ContainerSpec(command=("x",), network=True))


def test_container_argv_binds_in_order_with_idmap_only_under_userns() -> None:
    """Binds keep their order; a read-only file bind below a writable dir bind works."""
    spec = ContainerSpec(
        command=("x",),
        binds=(
            Bind(Path("/run/w"), "/build/work"),
            Bind(Path("/srv/a.iso"), "/build/work/image.iso", read_only=True),
            Bind(Path("/srv/p"), "/build/profile", read_only=True, idmap=True),
        ),
    )
    binds = [a for a in _container(spec) if a.startswith("--bind")]
    assert binds == [
        "--bind=/run/w:/build/work",
        "--bind-ro=/srv/a.iso:/build/work/image.iso",
        "--bind-ro=/srv/p:/build/profile:idmap",
    ]
    root = SandboxConfig(base_dir=Path("/b"), sandbox_root=Path("/s"), isolation="root")
    assert "--bind-ro=/srv/p:/build/profile" in _container(spec, root)


def test_container_argv_rejects_an_unknown_capability() -> None:
    """Keeping a capability nspawn does not know is a programming error."""
    with pytest.raises(ValueError, match="unknown capabilities"):
        _container(ContainerSpec(command=("x",), capabilities=("CAP_SYS_MODULE",)))
