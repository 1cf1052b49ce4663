"""Release upload of a 2 GiB file to the fake forge: isorunner's path against `curl -T`.

Run by hand (no root needed):

    uv run python bench/upload_bench.py [--rounds N] [--dir DIR] [--forge-dir DIR] [--no-pin]

Makes one 2 GiB file of real bytes under DIR (default /var/tmp: a 64 MiB `os.urandom`
block written 32 times; not sparse, so curl reads real pages too), starts the fake
forge (tests/e2e/fakeforge.py) in a process of its own, seeds a GitHub repository with a
draft release, then, round after round and alternating which goes first, uploads the
file to the forge's `POST /github/uploads/repos/{o}/{r}/releases/{id}/assets?name=`:

- ours: a child process that only runs `ForgeTransport.upload_file` with the request
  `github.build_upload_asset` builds (exactly what `GitHubClient` sends per attempt),
  over an `httpx.AsyncClient` configured as the service's, on uvloop as the service
  runs; it times the call and reports its own peak RSS (`ru_maxrss`, with `VmHWM` and
  `/usr/bin/time -f %M` as cross-checks; it is started by `/usr/bin/time`, see `launch`);
- curl: `curl -X POST -T FILE -H 'Content-Type: application/octet-stream'
  -H 'Authorization: Bearer …' URL`, timed with `-w %{time_total}` (`-X POST`: the
  upload endpoint takes POST, and `-T` alone sends PUT).

`GitHubClient.publish_release` itself refuses a file of exactly 2 GiB before sending
anything (GitHub assets must be *under* 2 GiB), so the bench drives the transport that
`publish_release` uses; the fake forge's `max_asset_size` is raised to 2 GiB.

By default the fake forge runs on CPU 1 and the uploader (ours or curl) on CPU 0
(`taskset`); `--no-pin` leaves both to the scheduler. Client CPU = user + system
seconds of the uploader process (ours: interpreter start included). The forge writes
each upload under --forge-dir (default /dev/shm, to keep the disk out) and hashes it;
the bench deletes each stored upload after its round. Prints each round, the medians,
MB/s, the ratio, client CPU and the peak RSS; removes what it made.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from runner.forges import github
from runner.forges.client import ForgeTransport

GIB = 1 << 30
BLOCK = 64 << 20
REPO = "bench/upload"
TOKEN = "ghp_upload_bench_token"
TAG = "v-upload-bench"
SERVER_CPU = "1"
CLIENT_CPU = "0"


# -- child: the fake forge -----------------------------------------------------------------


def serve(workdir: Path, max_size: int) -> None:
    """Run the fake forge until stdin closes; print its URLs as one JSON line first."""
    # Imported here so that the uploader child does not load uvicorn and Starlette too,
    # which would add ~10 MiB to the RSS it measures.
    from tests.e2e.fakeforge import run_fake_forge  # noqa: PLC0415

    with run_fake_forge(workdir) as forge:
        forge.seed_github(REPO, token=TOKEN, commits={})
        forge.max_asset_size = max_size
        info = {"api": forge.github_api_url, "uploads": forge.github_uploads_url}
        print(json.dumps(info), flush=True)
        sys.stdin.read()


# -- child: our uploader ---------------------------------------------------------------------


def maxrss_mib() -> float:
    """This process's peak RSS so far, in MiB (`ru_maxrss`; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vmhwm_mib() -> float:
    """This process image's peak RSS since exec (`VmHWM`), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def _upload(
    uploads: str, release_id: int, path: Path, size: int, name: str
) -> dict[str, Any]:
    timeout = httpx.Timeout(30.0, connect=10.0)  # as runner.wiring builds its client
    async with httpx.AsyncClient(timeout=timeout, headers={"User-Agent": "isorunner/0.1"}) as http:
        transport = ForgeTransport(http)
        request = github.build_upload_asset(uploads, TOKEN, REPO, release_id, name=name, size=size)
        before = maxrss_mib()
        started = time.perf_counter()
        response = await transport.upload_file(request, path)
        seconds = time.perf_counter() - started
    asset = github.decode_asset(response)
    return {
        "seconds": seconds,
        "status": response.status,
        "size": asset.size,
        "state": asset.state,
        "rss_before_mib": before,
        "maxrss_mib": maxrss_mib(),
        "vmhwm_mib": vmhwm_mib(),
    }


def client(uploads: str, release_id: int, path: Path, name: str) -> None:
    """Upload `path` once through `ForgeTransport.upload_file`; print the result as JSON."""
    result = anyio.run(
        _upload,
        uploads,
        release_id,
        path,
        path.stat().st_size,
        name,
        backend_options={"use_uvloop": True},
    )
    print(json.dumps(result), flush=True)


# -- parent ------------------------------------------------------------------------------


def pin(cpu: str, enabled: bool) -> list[str]:
    """A `taskset` prefix for `cpu`, or nothing."""
    return ["taskset", "-c", cpu] if enabled else []


def make_file(path: Path, size: int) -> None:
    """Write `size` bytes of real (non-sparse) data to `path`: one random block repeated."""
    block = os.urandom(BLOCK)
    with path.open("wb") as out:
        left = size
        while left:
            piece = block[: min(left, BLOCK)]
            out.write(piece)
            left -= len(piece)


def create_release(api: str) -> int:
    """Create the draft release the uploads go to; return its id."""
    request = github.build_create_release(api, TOKEN, REPO, TAG, name=TAG, body="bench")
    response = httpx.post(request.url, headers=request.headers, json=request.json, timeout=10)
    response.raise_for_status()
    return int(response.json()["id"])


def launch(argv: list[str], pinned: bool, rss_file: Path) -> tuple[str, float, float]:
    """Run `argv` (pinned to the client CPU); return its stdout, peak RSS (MiB), CPU (s).

    `/usr/bin/time` forks it: a child's `ru_maxrss` starts from the size of the process
    that forked it (the kernel keeps the old image's high-water mark across exec), so
    forking it from this ~100 MiB interpreter would count this interpreter's pages.
    """
    timed = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(rss_file), *argv]
    out = subprocess.run(pin(CLIENT_CPU, pinned) + timed, check=True, capture_output=True)
    rss, user, system = rss_file.read_text().split()[-3:]
    return out.stdout.decode(), int(rss) / 1024, float(user) + float(system)


def run_ours(uploads: str, release_id: int, path: Path, name: str, pinned: bool) -> dict[str, Any]:
    """One upload by our child process; its JSON result."""
    argv = [sys.executable, __file__, "client", uploads, str(release_id), str(path), name]
    output, rss, cpu = launch(argv, pinned, path.with_name("rss"))
    result: dict[str, Any] = json.loads(output)
    result["time_maxrss_mib"] = rss
    result["cpu_seconds"] = cpu
    if result["status"] != 201 or result["size"] != path.stat().st_size:
        raise RuntimeError(f"our upload failed: {result}")
    return result


def run_curl(uploads: str, release_id: int, path: Path, name: str, pinned: bool) -> dict[str, Any]:
    """One upload by curl; its time and peak RSS."""
    url = f"{uploads}/repos/{REPO}/releases/{release_id}/assets?name={name}"
    argv = [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_total} %{size_upload}",
        "-X",
        "POST",
        "-T",
        str(path),
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        url,
    ]
    output, rss, cpu = launch(argv, pinned, path.with_name("rss"))
    status, seconds, sent = output.split()
    if status != "201" or int(float(sent)) != path.stat().st_size:
        raise RuntimeError(f"curl upload failed: {output}")
    return {"seconds": float(seconds), "maxrss_mib": rss, "cpu_seconds": cpu}


def clear_uploads(forge_dir: Path) -> None:
    """Delete the files the forge stored (its records of them stay)."""
    stored = forge_dir / "github"
    if stored.is_dir():
        for path in stored.iterdir():
            path.unlink()


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    """Parse the arguments, then serve, upload once, or run the whole benchmark."""
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=2 * GIB, help="file size in bytes")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--forge-dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    args = parser.parse_args()
    pinned = not args.no_pin

    work = Path(tempfile.mkdtemp(prefix="isorunner-bench-upload-", dir=args.dir))
    forge_dir = Path(tempfile.mkdtemp(prefix="isorunner-bench-forge-", dir=args.forge_dir))
    server: subprocess.Popen[str] | None = None
    try:
        path = work / "upload.iso"
        started = time.perf_counter()
        make_file(path, args.size)
        print(f"made {args.size} bytes in {time.perf_counter() - started:.1f} s: {path}")
        subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)  # warm cache
        argv = [sys.executable, __file__, "serve", str(forge_dir), str(args.size)]
        server = subprocess.Popen(
            pin(SERVER_CPU, pinned) + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        threading.Thread(target=server.stdout.read, daemon=True).start()
        release_id = create_release(info["api"])
        print(f"fake forge pid {server.pid}, draft release {release_id}; pinned: {pinned}")

        ours: list[dict[str, Any]] = []
        curls: list[dict[str, Any]] = []
        for number in range(args.rounds + 1):
            order = ("ours", "curl") if number % 2 == 0 else ("curl", "ours")
            line = [f"round {number}" if number else "warm-up", f"load {loadavg()}"]
            for who in order:
                name = f"{who}-{number}.iso"
                if who == "ours":
                    result = run_ours(info["uploads"], release_id, path, name, pinned)
                    line.append(f"ours {result['seconds']:.2f} s ({result['maxrss_mib']:.1f} MiB)")
                    if number:
                        ours.append(result)
                else:
                    result = run_curl(info["uploads"], release_id, path, name, pinned)
                    line.append(f"curl {result['seconds']:.2f} s")
                    if number:
                        curls.append(result)
                clear_uploads(forge_dir)
            print("  ".join(line), flush=True)

        mb = args.size / 1e6
        ours_s = statistics.median(r["seconds"] for r in ours)
        curl_s = statistics.median(r["seconds"] for r in curls)
        peak = max(r["maxrss_mib"] for r in ours)
        base = statistics.median(r["rss_before_mib"] for r in ours)
        print(f"\nmedians of {args.rounds} rounds, {args.size} bytes:")
        ours_cpu = statistics.median(r["cpu_seconds"] for r in ours)
        curl_cpu = statistics.median(r["cpu_seconds"] for r in curls)
        print(f"{'way':<36}{'median':>9}{'MB/s':>8}{'client CPU':>13}")
        print(
            f"{'ours (ForgeTransport.upload_file)':<36}{ours_s:>7.2f} s{mb / ours_s:>8.0f}"
            f"{ours_cpu:>11.2f} s"
        )
        print(f"{'curl -X POST -T':<36}{curl_s:>7.2f} s{mb / curl_s:>8.0f}{curl_cpu:>11.2f} s")
        print(f"throughput ratio ours / curl: {curl_s / ours_s:.2f} (target >= 0.9)")
        print(
            f"our uploader's peak RSS (ru_maxrss): {peak:.1f} MiB = {peak * 1.048576:.1f} MB "
            f"(target < 80 MB); {base:.1f} MiB before the upload started; "
            f"VmHWM {max(r['vmhwm_mib'] for r in ours):.1f} MiB, "
            f"/usr/bin/time {max(r['time_maxrss_mib'] for r in ours):.1f} MiB"
        )
        print(f"curl's peak RSS: {max(r['maxrss_mib'] for r in curls):.1f} MiB")
        print(f"load average at the end: {loadavg()}")
    finally:
        if server is not None and server.stdin is not None:
            server.stdin.close()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(forge_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
