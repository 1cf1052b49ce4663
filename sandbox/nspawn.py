"""Pure argv builders for sandbox containers: systemd-nspawn, and systemd-run around it.

Pure: no I/O. Every fact verified on the target hosts (DESIGN "Sandbox facts",
reference/mkarchiso-nspawn.md §4) is encoded here once and tested by comparing lists.
No secret is ever put in argv or in the container's environment: the sandbox receives none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox import base
from sandbox.base import UID_COUNT
from sandbox.config import SandboxConfig, format_size
from sandbox.host import HostInfo

#: Where the profile, mkarchiso's work dir and the output appear inside the container.
#: The base provides these as empty directories (the root is read-only; `sandbox.base`).
PROFILE_MOUNT = f"/{base.PROFILE_MOUNT}"
WORK_MOUNT = f"/{base.WORK_MOUNT}"
OUTPUT_MOUNT = f"/{base.OUTPUT_MOUNT}"
#: The offline pacman.conf inside the base (`sandbox.base`, tests/standin/CONTRACT.md).
OFFLINE_PACMAN_CONF = f"/{base.OFFLINE_PACMAN_CONF}"
#: The base's mirror path: the build's own repository is bound read-only over it.
PACKAGE_REPO_MOUNT = f"/{base.PACKAGE_REPO_MOUNT}"
#: The base's `mount`/`umount` wrappers in /usr/local/sbin must come first.
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Capabilities mkarchiso needs; everything else in nspawn's default set is dropped.
KEPT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",  # pacman extracts files with their owners; file_permissions; home dirs
    "CAP_DAC_OVERRIDE",  # root writes files it does not own (0444 files, other owners' dirs)
    "CAP_FOWNER",  # chmod/utime/setxattr on files owned by others (package extraction)
    "CAP_FSETID",  # keep setuid/setgid bits when extracting and copying (mksquashfs input)
    "CAP_SETFCAP",  # write security.capability xattrs (packages with file capabilities)
    "CAP_SETGID",  # pacman >= 7 drops to its DownloadUser; scriptlets switch groups
    "CAP_SETUID",  # same, for the user; also pacstrap -N (unshare --map-root-user)
    "CAP_SYS_ADMIN",  # pacstrap mounts proc/sys/dev/run in the target (via the base's wrapper)
    "CAP_SYS_CHROOT",  # pacman runs hooks and install scriptlets chrooted into the target
)

#: nspawn's default bounding set (systemd-nspawn(1)) minus the kept ones, plus
#: CAP_NET_ADMIN, which `--private-network` adds. DAC_READ_SEARCH goes so that
#: open_by_handle_at(2) cannot reach host files; MKNOD so no device nodes are made.
DROPPED_CAPABILITIES: tuple[str, ...] = (
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_WRITE",
    "CAP_DAC_READ_SEARCH",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_SETPCAP",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TTY_CONFIG",
)


#: The order capabilities are listed in `--drop-capability=` (nspawn's default set).
_CAPABILITY_ORDER = sorted((*KEPT_CAPABILITIES, *DROPPED_CAPABILITIES))


def mkarchiso_command() -> list[str]:
    """The build command run inside the container (a fresh `-w` sub-directory, so `-r` works).

    Returns:
        The argv of mkarchiso with the base's offline pacman.conf forced by `-C`.
    """
    return [
        "mkarchiso",
        "-v",
        "-r",
        "-w",
        f"{WORK_MOUNT}/w",
        "-o",
        OUTPUT_MOUNT,
        "-C",
        OFFLINE_PACMAN_CONF,
        PROFILE_MOUNT,
    ]


def _escape(path: Path) -> str:
    # nspawn splits bind specs on ':'; a literal colon is written '\:'.
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


@dataclass(frozen=True, slots=True)
class Bind:
    """One host path made visible in the container.

    Attributes:
        source: The host path (file, directory or device node).
        target: Where it appears inside the container.
        read_only: Bound with `--bind-ro=` rather than `--bind=`.
        idmap: Host ownership mapped into the user namespace (host-owned, read-only
            inputs such as the profile, so its files appear root-owned, not nobody's).
    """

    source: Path
    target: str
    read_only: bool = False
    idmap: bool = False

    def option(self, userns: bool) -> str:
        """The nspawn option (`--bind=` or `--bind-ro=`, never the invalid `:ro` form)."""
        flag = "--bind-ro" if self.read_only else "--bind"
        suffix = ":idmap" if self.idmap and userns else ""
        return f"{flag}={_escape(self.source)}:{self.target}{suffix}"


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What runs in one container besides the common hardening.

    Attributes:
        command: The argv run inside as PID 2.
        binds: Host paths bound in, in order (nspawn mounts parents before children).
        setenv: Environment of the command, in order (nothing of isorunner's own).
        network: Share the host's network namespace; False (the default) gives the
            container a private one with only a loopback device.
        user: Run the command as this user of the base instead of its root.
        capabilities: Capabilities kept (all others are dropped); `KEPT_CAPABILITIES`
            for mkarchiso, none for a command that needs no privilege.
    """

    command: tuple[str, ...]
    binds: tuple[Bind, ...] = ()
    setenv: tuple[tuple[str, str], ...] = ()
    network: bool = False
    user: str | None = None
    capabilities: tuple[str, ...] = KEPT_CAPABILITIES


def container_argv(
    config: SandboxConfig, *, machine: str, root: Path, spec: ContainerSpec, host: HostInfo
) -> list[str]:
    """Build the argv that starts one hardened container running `spec.command`.

    Args:
        config: The sandbox settings (limits, UID range, isolation).
        machine: A name unique to this run (`SandboxConfig.machine_name`).
        root: The container's root directory (the per-run overlay mount).
        spec: The command, binds, environment, network and user of this run.
        host: Host facts; where systemd is PID 1 the limits come from a transient scope.

    Returns:
        The argv list, starting with systemd-run or systemd-nspawn.

    Raises:
        ValueError: The command is empty or a capability to keep is not one nspawn drops.
    """
    if not spec.command:
        raise ValueError("command must not be empty")
    unknown = set(spec.capabilities) - set(KEPT_CAPABILITIES) - set(DROPPED_CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities to keep: {sorted(unknown)}")
    userns = config.isolation == "userns"
    tmpfs_opts = f"mode=1777,nosuid,nodev,size={config.tmpfs_size}"
    argv = [
        config.nspawn,
        "--quiet",
        # Only this command line counts: no .nspawn files next to the image.
        "--settings=false",
        # No machined registration and no scope of nspawn's own: without systemd as
        # PID 1 there is no bus to ask; with it, systemd-run's scope carries the limits.
        "--register=no",
        "--keep-unit",
        f"--machine={machine}",
        f"--directory={root}",
        "--read-only",
    ]
    if not spec.network:
        argv.append("--private-network")
    argv += [f"--tmpfs=/tmp:{tmpfs_opts}", f"--tmpfs=/var/tmp:{tmpfs_opts}"]
    if userns:
        argv += [
            # The base is chowned once to this range, so no recursive chown per build.
            f"--private-users={config.uid_base}:{UID_COUNT}",
            "--private-users-ownership=off",
        ]
    argv += [bind.option(userns) for bind in spec.binds]
    argv += [f"--setenv={name}={value}" for name, value in spec.setenv]
    if spec.user is not None:
        argv.append(f"--user={spec.user}")
    dropped = [c for c in (*KEPT_CAPABILITIES, *DROPPED_CAPABILITIES) if c not in spec.capabilities]
    argv += [
        # Plain pipes, no PTY: output is streamed line by line, no TIOCSTI.
        "--console=pipe",
        # A stub init as PID 1 reaps zombies and forwards signals.
        "--as-pid2",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--no-new-privileges=yes",
        # A throwaway root: fsync buys nothing.
        "--suppress-sync=yes",
        f"--drop-capability={','.join(sorted(dropped, key=_CAPABILITY_ORDER.index))}",
        "--",
        *spec.command,
    ]
    if host.systemd_pid1:
        return systemd_run_argv(config, machine=machine) + argv
    return argv


def nspawn_argv(
    config: SandboxConfig,
    *,
    machine: str,
    root: Path,
    profile_dir: Path,
    work_dir: Path,
    output_dir: Path,
    source_date_epoch: int,
    command: Sequence[str],
    host: HostInfo,
    package_repo: Path | None = None,
) -> list[str]:
    """Build the full argv that starts one build container.

    Args:
        config: The sandbox settings (limits, UID range, isolation).
        machine: A name unique to this build (`SandboxConfig.machine_name`).
        root: The container's root directory (the per-build overlay mount).
        profile_dir: Host directory bound read-only at /build/profile.
        work_dir: Host directory bound writable at /build/work (mkarchiso's work, on disk).
        output_dir: Host directory bound writable at /build/output.
        source_date_epoch: The SOURCE_DATE_EPOCH of the build (commit time).
        command: What to run inside as PID 2 (normally `mkarchiso_command()`).
        host: Host facts; where systemd is PID 1 the limits come from a transient scope.
        package_repo: The build's own package repository on the host, bound read-only
            at /srv/isorunner/repo in place of the base's mirror; None keeps the base's.

    Returns:
        The argv list, starting with systemd-run or systemd-nspawn.

    Raises:
        ValueError: `command` is empty or `source_date_epoch` negative.
    """
    if source_date_epoch < 0:
        raise ValueError("source_date_epoch must not be negative")
    spec = ContainerSpec(
        command=tuple(command),
        binds=(
            Bind(profile_dir, PROFILE_MOUNT, read_only=True, idmap=True),
            # Host-owned files, only read (pacman copies them from a file:// server).
            *(
                ()
                if package_repo is None
                else (Bind(package_repo, PACKAGE_REPO_MOUNT, read_only=True, idmap=True),)
            ),
            Bind(work_dir, WORK_MOUNT),
            Bind(output_dir, OUTPUT_MOUNT),
        ),
        setenv=(
            ("SOURCE_DATE_EPOCH", str(source_date_epoch)),
            ("LC_ALL", "C"),
            ("TZ", "UTC"),
            ("PATH", CONTAINER_PATH),
        ),
    )
    return container_argv(config, machine=machine, root=root, spec=spec, host=host)


def systemd_run_argv(config: SandboxConfig, *, machine: str) -> list[str]:
    """Build the `systemd-run --scope` prefix that puts the container in a limited scope.

    Used only where systemd is PID 1; elsewhere the cgroup file system carries the limits.

    Args:
        config: The sandbox settings (memory, CPU, pids).
        machine: The machine name; the scope is `<machine>.scope`, found again by
            `cleanup_stale` after a crash.

    Returns:
        The prefix argv, ending with "--".
    """
    return [
        config.systemd_run,
        "--scope",
        "--quiet",
        "--collect",
        f"--unit={machine}",
        f"--property=MemoryMax={format_size(config.memory_limit)}",
        # Without this the workload spills into swap instead of being stopped.
        "--property=MemorySwapMax=0",
        f"--property=CPUQuota={config.cpu_quota_percent}%",
        f"--property=TasksMax={config.pids_limit}",
        "--",
    ]
