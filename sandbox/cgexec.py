"""Entry point that joins cgroups, then execs a command: `cgexec.py PROCS... -- ARGV...`.

Does I/O (writes its own pid to each given `cgroup.procs`, then `execvp`). Run by
`BuildSandbox` as `python -I -S <this file> ...` so that systemd-nspawn starts already
inside the build's cgroups: every process it forks is counted and limited from the
first instruction, and none can slip out before the limits apply.

Why a separate tiny process rather than `subprocess`'s `preexec_fn`: `preexec_fn` is
not safe when the parent has threads (asyncio's default executor, structlog, the
server), as the Python documentation warns, and asyncio's `create_subprocess_exec`
cannot place a child in a cgroup atomically (no CLONE_INTO_CGROUP). Interpreter
start-up with `-I -S` costs ~15 ms per build. Stdlib only; imports nothing of isorunner.
"""

from __future__ import annotations

import os
import sys


def main(args: list[str]) -> int:
    """Join the cgroups named in `args`, then replace this process with the command.

    Args:
        args: `cgroup.procs` paths, then "--", then the argv to exec.

    Returns:
        Only on a usage or join error: 125 (the command never ran).
    """
    if "--" not in args:
        sys.stderr.write("usage: cgexec.py CGROUP_PROCS... -- ARGV...\n")
        return 125
    split = args.index("--")
    procs_files, argv = args[:split], args[split + 1 :]
    if not argv:
        sys.stderr.write("cgexec.py: no command given\n")
        return 125
    pid = str(os.getpid())
    for procs in procs_files:
        try:
            with open(procs, "w", encoding="ascii") as handle:
                handle.write(pid)
        except OSError as exc:
            sys.stderr.write(f"cgexec.py: cannot join cgroup {procs}: {exc.strerror}\n")
            return 125
    os.execvp(argv[0], argv)  # noqa: S606 - replacing this process is the whole point


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
