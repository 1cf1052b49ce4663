#!/usr/bin/env bash
# Runs inside the fresh Debian 12 container of tests/fresh/fresh-debian.sh, in /src (the
# committed checkout), as root, as a new user would:
#   1. scripts/install: the Debian packages of runner/hosttools.txt, uv, .venv;
#   2. every program the list gives a Debian package for is on PATH (checked here with
#      the Python reader of the list, so a slip in scripts/install's reading shows);
#   3. scripts/test -m "not integration": the stand-in base's build (debootstrap,
#      makepkg, setup-sandbox.sh) and the quick tests;
#   4. scripts/run's first run on a machine without ./isorunner.toml: it writes a
#      starter configuration with `isorunner init`, says what to do next, and exits 0.
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
