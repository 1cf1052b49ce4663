#!/usr/bin/env bash
# Runs inside the fresh Debian 12 container of tests/fresh/fresh-debian.sh, in /src (the
# committed checkout), as root, as a new user would:
#   1. scripts/install: the Debian packages of runner/hosttools.txt, uv, .venv;
#   2. every program the list gives a Debian package for is on PATH (checked here with
#      the Python reader of the list, so a slip in scripts/install's reading shows);
#   3. scripts/test -m "not integration": the stand-in base's build (debootstrap,
#      makepkg, setup-sandbox.sh) and the quick tests;
#   4. scripts/run's first run on a machine without ./isorunner.toml: it writes a
#      starter configuration with `isorunner init`, says what to do next, and exits 0;
#   5. with ISORUNNER_FRESH_INTEGRATION=1 only: the integration tests, nspawn inside
#      nspawn. Not in CI: 33 of 45 pass; the profile-attack tests read the root cgroup's
#      release_agent, which the container's cgroup namespace hides, and the
#      poisoned-output and timeout tests find a pids cgroup left behind.
set -euo pipefail
cd /src

step() {
    printf '\nfresh-debian: == [%d s] %s\n' "${SECONDS}" "$*"
}

step "scripts/install"
scripts/install

step "every listed program is on PATH"
.venv/bin/python - <<'EOF'
import shutil
import sys

from runner.hosttools import read_tools

missing = [
    f"{program} (Debian package {tool.debian})"
    for tool in read_tools()
    if tool.debian is not None
    for program in tool.programs
    if shutil.which(program) is None
]
if missing:
    sys.exit("not on PATH after scripts/install: " + ", ".join(missing))
print(f"fresh-debian: all {sum(len(t.programs) for t in read_tools() if t.debian)} programs found")
EOF

step 'scripts/test -m "not integration"'
scripts/test -m "not integration" -q -p no:cacheprovider

step "scripts/run without ./isorunner.toml"
scripts/run --repo github:example/archlive --public-url https://ci.example.org
test -f isorunner.toml

if [[ "${ISORUNNER_FRESH_INTEGRATION:-0}" == 1 ]]; then
    step "integration tests (nested nspawn)"
    # nspawn mounts the cgroup controllers read-only in its container; the sandbox
    # writes its limits there. Real root in here may make its own view writable.
    for mount_point in $(findmnt -rn -o TARGET -t cgroup,tmpfs -R /sys/fs/cgroup); do
        mount -o remount,bind,rw "${mount_point}"
    done
    scripts/uv run --locked pytest -m integration -q -p no:cacheprovider
fi
