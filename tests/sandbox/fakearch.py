"""A fake Arch Linux mirror on 127.0.0.1 for setup-sandbox.sh's bootstrap path.

I/O: runs gpg, makepkg, repo-add and tar, mounts an overlay, serves files over HTTP.
What it serves is laid out as Arch's mirrors lay it out and signed as Arch signs it:

    iso/latest/archlinux-bootstrap-x86_64.tar.zst(.sig)   root.x86_64/: the stand-in's
        Debian root (pacman, pacman-key, gpg) with an Arch-like /etc/pacman.conf, the
        host's makepkg shell library (pacman-key sources it), and, in
        /usr/share/keyrings (where Debian's pacman-key looks), an `archlinux` keyring
        holding the fake release key, marked trusted
    core/os/x86_64/   base, archiso (with the stand-in mkarchiso) and the stand-in's
        packages, each with a detached signature; core.db by repo-add
    extra/os/x86_64/  grub, qemu-system-x86 and edk2-ovmf (the boot test's), likewise

The release key is a fresh ed25519 key in a temporary GnuPG home; setup-sandbox.sh is
pointed at it with ISORUNNER_RELEASE_KEY_FILE/_FPR and at the mirror with
ISORUNNER_ARCH_MIRROR.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
PKGBUILDS = HERE / "fakearch"
STANDIN_MKARCHISO = REPO_ROOT / "tests" / "standin" / "mkarchiso"
NOBODY = 65534
MAKEPKG_LIBRARY = Path("/usr/share/makepkg")
BOOTSTRAP = "iso/latest/archlinux-bootstrap-x86_64.tar.zst"
PACMAN_CONF = """\
# Arch's pacman.conf, as far as setup-sandbox.sh's bootstrap step relies on it.
[options]
Architecture = auto
SigLevel = Required DatabaseOptional
LocalFileSigLevel = Optional

[core]
Include = /etc/pacman.d/mirrorlist

[extra]
Include = /etc/pacman.d/mirrorlist
"""


def run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    """Run a command, fail loudly with its output, return its standard output."""
    result = subprocess.run(
        [str(arg) for arg in argv],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, f"{argv[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass(frozen=True, slots=True)
class ReleaseKey:
    """A signing key in its own GnuPG home."""

    home: Path
    fingerprint: str

    def gpg(self, *args: str | Path) -> str:
        """Run gpg in this key's home."""
        return run("gpg", "--batch", "--quiet", "--homedir", self.home, *args)

    def sign(self, path: Path) -> Path:
        """Write `<path>.sig`, a binary detached signature, as Arch's mirrors carry."""
        signature = path.with_name(path.name + ".sig")
        self.gpg("--yes", "--detach-sign", "--output", signature, path)
        return signature

    def export(self, path: Path, *, armor: bool) -> Path:
        """Write the public key to `path`."""
        self.gpg("--yes", *(["--armor"] if armor else []), "--output", path, "--export")
        return path


@contextlib.contextmanager
def release_key(home: Path, name: str) -> Iterator[ReleaseKey]:
    """A new ed25519 signing key; its gpg-agent is stopped at the end."""
    home.mkdir(mode=0o700)
    run(
        "gpg", "--batch", "--quiet", "--homedir", home, "--passphrase", "",
        "--quick-generate-key", f"{name} <release@isorunner.invalid>", "ed25519", "sign", "never",
    )  # fmt: skip
    listing = run("gpg", "--batch", "--homedir", home, "--with-colons", "--list-keys")
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line[:4] == "fpr:")
    try:
        yield ReleaseKey(home, fingerprint)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def build_packages(dest: Path) -> list[Path]:
    """Build the fake Arch packages (base, archiso, grub, QEMU, OVMF) as nobody with makepkg.

    The build happens in a directory of its own under /var/tmp, which nobody can reach
    (pytest's temporary directories are root's alone); the packages land in `dest`.
    """
    with tempfile.TemporaryDirectory(prefix="isorunner-fakearch-", dir="/var/tmp") as name:
        work = Path(name)
        work.chmod(0o755)
        shutil.copytree(PKGBUILDS, work / "src")
        shutil.copy2(STANDIN_MKARCHISO, work / "src" / "archiso" / "mkarchiso")
        out = work / "out"
        out.mkdir()
        conf = work / "makepkg.conf"
        conf.write_text(
            "source /etc/makepkg.conf\nPKGEXT='.pkg.tar.zst'\n"
            "OPTIONS=(!strip !debug !docs emptydirs !zipman !purge)\n"
            f"PKGDEST='{out}'\n"
        )
        for path in (work, *work.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
        env = {"PATH": os.environ["PATH"], "HOME": str(work), "TMPDIR": str(work), "LC_ALL": "C"}
        for package in sorted((work / "src").iterdir()):
            run(
                "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                "sh", "-c", 'cd "$1" && shift && exec "$@"', "-", package,
                "makepkg", "--config", conf, "--force", "--nodeps", "--noconfirm",
                env=env | {"SOURCE_DATE_EPOCH": "1700000000"},
            )  # fmt: skip
        dest.mkdir(parents=True)
        for package in out.glob("*.pkg.tar.zst"):
            shutil.copy(package, dest / package.name)
    return sorted(dest.glob("*.pkg.tar.zst"))


def fill_repo(directory: Path, name: str, packages: list[Path], key: ReleaseKey) -> None:
    """Copy and sign `packages` into `directory`, indexed as repository `name`."""
    directory.mkdir(parents=True)
    copies = []
    for package in packages:
        copy = directory / package.name
        shutil.copy2(package, copy)
        key.sign(copy)
        copies.append(copy)
    run("repo-add", "--quiet", directory / f"{name}.db.tar.gz", *copies)


def make_bootstrap(rootfs: Path, work: Path, out: Path, key: ReleaseKey) -> None:
    """Tar the stand-in's Debian root as root.x86_64/, with Arch's conf and keyring."""
    upper, ovl, merged = work / "upper", work / "ovl", work / "tar" / "root.x86_64"
    for path in (upper, ovl, merged):
        path.mkdir(parents=True)
    run(
        "mount", "-t", "overlay", "overlay",
        "-o", f"lowerdir={rootfs},upperdir={upper},workdir={ovl}", merged,
    )  # fmt: skip
    try:
        (merged / "etc" / "pacman.conf").write_text(PACMAN_CONF)
        # Debian's pacman-key sources makepkg's shell library, which Debian ships in its
        # own package (makepkg) and the stand-in's root lacks; Arch's root has it.
        shutil.copytree(MAKEPKG_LIBRARY, merged / MAKEPKG_LIBRARY.relative_to("/"))
        (merged / "etc" / "pacman.d").mkdir(exist_ok=True)
        keyrings = merged / "usr" / "share" / "keyrings"
        keyrings.mkdir(parents=True, exist_ok=True)
        key.export(keyrings / "archlinux.gpg", armor=False)
        (keyrings / "archlinux-trusted").write_text(f"{key.fingerprint}:4:\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        run(
            "tar", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*",
            "-cf", out, "-C", merged.parent, merged.name,
        )  # fmt: skip
    finally:
        run("umount", merged)
    key.sign(out)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 (an ephemeral port); yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def make_mirror(
    www: Path, work: Path, *, rootfs: Path, standin_packages: Path, key: ReleaseKey
) -> None:
    """Lay out the whole fake mirror under `www` (module docstring)."""
    built = build_packages(work / "packages")
    # <name>-<pkgver>-<pkgrel>-<arch>.pkg.tar.zst, and names may hold dashes.
    by_name = {path.name.rsplit("-", 3)[0]: path for path in built}
    core = [by_name["base"], by_name["archiso"], *sorted(standin_packages.glob("*.pkg.tar.zst"))]
    fill_repo(www / "core" / "os" / "x86_64", "core", core, key)
    extra = [by_name[name] for name in ("grub", "qemu-system-x86", "edk2-ovmf")]
    fill_repo(www / "extra" / "os" / "x86_64", "extra", extra, key)
    make_bootstrap(rootfs, work / "bootstrap", www / BOOTSTRAP, key)
