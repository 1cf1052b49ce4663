"""Package sync benchmark (run by hand, as root): isorunner's sync vs plain `pacman -Sw`.

    sudo uv run python bench/packages_bench.py [--packages 300] [--total-mb 700]

Builds once (cached under /var/tmp/isorunner-bench-packages/<key>/, keyed by the
arguments) a repository of N valid pacman packages of random, incompressible content,
each signed by a bench key and indexed with repo-add, with dependencies between them,
and a pacman keyring trusting that key. Serves it from 127.0.0.1 (the tests' upstream
server, sendfile), then in one run, side by side:

  pacman -Syw into an empty cache (cold), then again (warm), with ParallelDownloads = 5
  (Debian's and Arch's default pacman.conf) and SigLevel = Required DatabaseOptional;
  isorunner's PackageSync.sync of a profile naming the N packages into an empty cache
  (cold), then again (warm), each in a child process.

Prints wall time, throughput and each child's peak RSS (wait4), and the ratios; for
isorunner also the time `sync()` itself took (a build's worker does not start a new
interpreter). A run over a tenth of the packages shows whether isorunner's memory grows
with the set.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.runner.packages.upstream import serve_upstream  # noqa: E402

CACHE_ROOT = Path("/var/tmp/isorunner-bench-packages")
FORMAT = 2  # bump when the generated set changes


def run(argv: list[str], **kwargs: object) -> None:
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def make_package(path: Path, name: str, deps: list[str], size: int, seed: int) -> None:
    pkginfo = (
        f"pkgname = {name}\npkgbase = {name}\npkgver = 1.0-1\npkgdesc = isorunner bench\n"
        f"url = https://example.invalid\nbuilddate = 1700000000\npackager = bench\n"
        f"size = {size}\narch = any\nlicense = MIT\n" + "".join(f"depend = {d}\n" for d in deps)
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in (
            (".PKGINFO", pkginfo.encode()),
            (f"usr/share/{name}/blob", os.urandom(size)),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = 1700000000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    # Random content does not compress; zstd -1 keeps the real packages' format.
    run(["zstd", "-1", "-q", "-f", "-o", str(path)], input=buf.getvalue())


def build_set(count: int, total_mb: int) -> Path:
    key = hashlib.sha256(f"{FORMAT} {count} {total_mb}".encode()).hexdigest()[:16]
    base = CACHE_ROOT / key
    if (base / "done").is_file():
        return base
    shutil.rmtree(base, ignore_errors=True)
    repo = base / "www" / "bench" / "os" / "x86_64"
    repo.mkdir(parents=True)
    signing = base / "signing"
    signing.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(signing)}
    run(
        ["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key",
         "isorunner bench <bench@isorunner.invalid>", "ed25519", "sign", "never"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    size = total_mb * (1 << 20) // count
    print(f"generating {count} packages of {size >> 10} KiB (once; cached in {base})")
    for i in range(count):
        name = f"bench-{i:03d}"
        deps = [f"bench-{(i - 1) // 2:03d}"] if i else []
        path = repo / f"{name}-1.0-1-any.pkg.tar.zst"
        make_package(path, name, deps, size, i)
        run(["gpg", "--batch", "--quiet", "--detach-sign", "--no-armor", str(path)], env=env)
    print("indexing with repo-add --sign")
    pkgs = sorted(str(p) for p in repo.glob("*.pkg.tar.zst"))
    run(["repo-add", "--quiet", "--sign", str(repo / "bench.db.tar.gz"), *pkgs], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    keyring = base / "keyring"
    run(["pacman-key", "--gpgdir", str(keyring), "--init"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)  # fmt: skip
    pub = base / "bench.asc"
    pub.write_bytes(subprocess.run(["gpg", "--batch", "--armor", "--export"], env=env,
                                   check=True, capture_output=True).stdout)  # fmt: skip
    run(["pacman-key", "--gpgdir", str(keyring), "--add", str(pub)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)  # fmt: skip
    fpr = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    key_fpr = next(line.split(":")[9] for line in fpr.splitlines() if line.startswith("fpr"))
    run(["pacman-key", "--gpgdir", str(keyring), "--lsign-key", key_fpr],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for home in (keyring, signing):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    (base / "done").write_text("ok\n")
    return base


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """Run argv; return (seconds, peak RSS in KiB of the child tree, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and proc.stderr is not None:
        print(proc.stderr.read().decode()[-2000:])
    return elapsed, usage.ru_maxrss, code


def pacman_conf(work: Path, keyring: Path, url: str) -> Path:
    conf = work / "pacman.conf"
    for sub in ("db", "cache", "root"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    conf.write_text(
        f"[options]\nRootDir = {work}/root\nDBPath = {work}/db/\nCacheDir = {work}/cache/\n"
        f"LogFile = {work}/pacman.log\nGPGDir = {keyring}/\nArchitecture = x86_64\n"
        "SigLevel = Required DatabaseOptional\nParallelDownloads = 5\n\n"
        f"[bench]\nServer = {url}/bench/os/$arch\n"
    )
    return conf


def child(args: argparse.Namespace) -> None:
    """One isorunner sync (run in a child process so its peak RSS is its own)."""
    import anyio  # noqa: PLC0415 - the parent process needs neither
    import httpx  # noqa: PLC0415

    from runner.packages import (  # noqa: PLC0415
        Downloader,
        DownloadPolicy,
        PackageCache,
        PackageSources,
        PackageSync,
        Repository,
        SyncConfig,
        SyncRequest,
    )

    async def main() -> None:
        cache = PackageCache(Path(args.cache), max_bytes=64 << 30)
        async with httpx.AsyncClient() as client:
            sync = PackageSync(
                SyncConfig(keyring=Path(args.keyring)),
                cache=cache,
                downloader=Downloader(client, DownloadPolicy(parallel=args.parallel)),
            )
            sources = PackageSources((Repository("bench", (f"{args.url}/$repo/os/$arch",)),))
            result = await sync.sync(
                SyncRequest(Path(args.profile), sources, trusted=True),
                repo_dir=Path(args.out) / "repo",
                work_dir=Path(args.out) / "work",
                log=lambda line: None,
            )
            Path(args.out, "result.json").write_text(  # noqa: ASYNC240 - after the timing
                json.dumps(
                    {
                        "packages": len(result.packages),
                        "downloaded_bytes": result.downloaded_bytes,
                        "total": result.total_bytes,
                        "seconds": result.seconds,
                    }
                )
            )

    anyio.run(main)


def isorunner_run(
    base: Path, url: str, names: list[str], cache: Path, tmp: Path, tag: str, parallel: int
) -> tuple[float, int, dict[str, int]]:
    out = tmp / tag
    out.mkdir()
    profile = out / "profile"
    profile.mkdir()
    (profile / "packages.x86_64").write_text("\n".join(names) + "\n")
    (profile / "pacman.conf").write_text("[bench]\n")
    argv = [
        sys.executable, __file__, "--child", "--cache", str(cache), "--keyring",
        str(base / "keyring"), "--url", url, "--profile", str(profile), "--out", str(out),
        "--parallel", str(parallel),
    ]  # fmt: skip
    seconds, rss, code = timed(argv)
    if code != 0:
        raise SystemExit(f"isorunner sync {tag} failed")
    return seconds, rss, json.loads((out / "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", type=int, default=300)
    parser.add_argument("--total-mb", type=int, default=700)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--child", action="store_true")
    for name in ("cache", "keyring", "url", "profile", "out"):
        parser.add_argument(f"--{name}")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    base = build_set(args.packages, args.total_mb)
    names = [f"bench-{i:03d}" for i in range(args.packages)]
    total = sum(p.stat().st_size for p in (base / "www").rglob("*.pkg.tar.zst"))
    keyring = base / "keyring"
    rows: list[tuple[str, float, int]] = []
    with (
        serve_upstream(base / "www") as server,
        tempfile.TemporaryDirectory(dir="/var/tmp", prefix="isorunner-bench-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        conf = pacman_conf(tmp / "pacman", keyring, server.url)
        pacman = ["pacman", "--config", str(conf), "--noconfirm", "--noprogressbar"]
        seconds, rss, code = timed([*pacman, "-Syw", *names])
        assert code == 0, "pacman -Syw (cold) failed"
        rows.append(("pacman -Syw, cold", seconds, rss))
        seconds, rss, code = timed([*pacman, "-Syw", *names])
        assert code == 0, "pacman -Syw (warm) failed"
        rows.append(("pacman -Syw, warm", seconds, rss))

        cache = tmp / "cache"
        seconds, rss, result = isorunner_run(
            base, server.url, names, cache, tmp, "cold", args.parallel
        )
        assert result["downloaded_bytes"] >= total, result
        rows.append(("isorunner sync, cold", seconds, rss))
        cold_sync = result["seconds"]
        seconds, rss, result = isorunner_run(
            base, server.url, names, cache, tmp, "warm", args.parallel
        )
        assert result["downloaded_bytes"] == 0, result
        rows.append(("isorunner sync, warm", seconds, rss))
        warm_sync = result["seconds"]
        small = names[: max(1, args.packages // 10)]
        small_cache = tmp / "cache-small"
        s_seconds, s_rss, s_result = isorunner_run(
            base, server.url, small, small_cache, tmp, "small", args.parallel
        )
    print(
        f"\n{args.packages} packages, {total / (1 << 20):.0f} MiB, served from 127.0.0.1 "
        f"(isorunner: {args.parallel} parallel downloads, pacman: ParallelDownloads = 5)"
    )
    print(f"{'run':<24}{'seconds':>9}{'MiB/s':>9}{'peak RSS':>11}")
    for label, seconds, rss in rows:
        rate = total / (1 << 20) / seconds
        print(f"{label:<24}{seconds:>9.2f}{rate:>9.0f}{rss / 1024:>8.1f} MiB")
    cold_ratio = rows[0][1] / rows[2][1]
    print(f"cold throughput ratio isorunner / pacman -Sw: {cold_ratio:.2f}x (target >= 1.0)")
    print(
        f"warm: isorunner sync {warm_sync:.2f} s (target < 1 s; {rows[3][1]:.2f} s with the "
        f"child's interpreter start and imports), pacman -Sw {rows[1][1]:.2f} s"
    )
    print(f"cold: isorunner sync {cold_sync:.2f} s inside the child process")
    print(
        f"memory: isorunner cold peak RSS {rows[2][2] / 1024:.1f} MiB for {args.packages} "
        f"packages, {s_rss / 1024:.1f} MiB for {len(small)} "
        f"({s_result['total'] / (1 << 20):.0f} MiB, {s_seconds:.2f} s)"
    )


if __name__ == "__main__":
    main()
