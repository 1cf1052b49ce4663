"""End to end: a release tag is rebuilt, compared, signed and published with provenance.

A real `isorunner serve` with a `[signing]` key, the real sandbox over the stand-in base,
and the fake forge. A tag's release carries the ISO, both sums, the `.minisig`s and the
signed provenance; the real `minisign -Vm` and `isorunner verify` accept the downloaded
assets with the key the server serves at `/signing-key.pub`. A profile whose build writes
the time into the image is still released, marked "not reproducible" with the path that
differs, on the release, the build page and the API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.publish.keys import write_secret_key
from runner.publish.minisign import SecretKey, generate_secret_key
from tests.conftest import require_tool
from tests.e2e.conftest import (
    GITHUB_TOKEN,
    Isorunner,
    Repos,
    final_status,
    github_push,
    make_profile,
    make_server,
    new_sha,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer
from tests.runner.publish.test_provenance import check_slsa_provenance

pytestmark = pytest.mark.integration

SIGNED = "acme/signed"
CLOCK = "acme/clock"
REPOS = Repos(github=[SIGNED, CLOCK])
DONE = final_status("success", "failure", "error")
#: Two builds, their comparison in a third container, and the uploads.
RELEASE_SECONDS = 240.0
#: A pacman hook in the profile: the build's time ends up in the image.
CLOCK_HOOK = """[Trigger]
Operation = Install
Type = Package
Target = isorunner-base

[Action]
Description = Writing the build time into the image (not reproducible on purpose)
When = PostTransaction
Exec = /usr/bin/busybox sh -c "/usr/bin/busybox date +%s > /etc/build-date"
"""


@pytest.fixture(scope="module")
def key() -> SecretKey:
    """The server's signing key."""
    return generate_secret_key()


@pytest.fixture(scope="module")
def server(
    state_root: Path, forge: FakeForge, upstream: UpstreamServer, key: SecretKey
) -> Iterator[Isorunner]:
    """A real `isorunner serve` that signs with `key`, stopped at the module's end."""
    running = make_server(state_root, forge, REPOS, upstream)
    secret = state_root / "signing.key"
    write_secret_key(secret, key, password=None)
    with running.config.open("a") as config:
        config.write(f'\n[signing]\nkey_file = "{secret}"\n')
    running.start()
    yield running
    running.close()


def publish_tag(server: Isorunner, forge: FakeForge, repo: str, profile: Path) -> int:
    """Push tag v1.0 of `profile` to `repo`; wait until its release is out; return its id.

    The build is sealed (rebuilt, compared, signed) before it succeeds; the outbox then
    publishes what it left on disk, and the last status says so.
    """
    sha = new_sha()
    forge.seed_github(repo, token=GITHUB_TOKEN, commits={sha: profile}, refs={"v1.0": sha})
    build_id = server.github("push", github_push(repo, sha, "refs/tags/v1.0"))
    statuses = server.wait_statuses(forge, "github", repo, sha, DONE, timeout=RELEASE_SECONDS)
    assert statuses[-1].state == "success", statuses[-1]
    release = server.wait_release(build_id)
    assert release["state"] == "published", release
    return build_id


def test_tag_release_is_rebuilt_identical_signed_and_verifiable(
    server: Isorunner, forge: FakeForge, profiles: Path, key: SecretKey, tmp_path: Path
) -> None:
    """The release has ISO, sums, .minisigs, provenance; minisign and isorunner verify it."""
    build_id = publish_tag(server, forge, SIGNED, make_profile(profiles, "signed"))
    record = server.wait_finished(build_id)
    assert "reproducible (rebuilt byte-identical)" in str(record["detail"])

    (release,) = forge.releases("github", SIGNED)
    assets = {asset.name: asset for asset in release.assets}
    (iso,) = [name for name in assets if name.endswith(".iso")]
    assert [asset.name for asset in release.assets] == [
        iso, f"{iso}.minisig", "provenance.json", "provenance.json.minisig", "sha256sums",
        "b2sums",
    ]  # fmt: skip
    assert "**Reproducible**: rebuilt in a second fresh container" in str(release.body)
    assert f"Signed with minisign key `{key.public_key().id_text}`" in str(release.body)

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for name, asset in assets.items():
        shutil.copyfile(asset.path, downloads / name)
    served = httpx.get(f"{server.url}/signing-key.pub", timeout=10)
    assert served.text == key.public_key().file_text()
    (downloads / "signing-key.pub").write_text(served.text)
    for signed in (iso, "provenance.json"):
        result = subprocess.run(
            [require_tool("minisign"), "-Vm", signed, "-p", "signing-key.pub"],
            cwd=downloads, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"\tfile:{signed}\thashed\trepo:github:{SIGNED}\t" in result.stdout
        assert result.stdout.rstrip().endswith("\ttag:v1.0")
    verify = subprocess.run(
        [sys.executable, "-m", "runner", "verify", str(downloads / iso),
         "--pubkey", str(downloads / "signing-key.pub")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"built from github:{SIGNED} refs/tags/v1.0" in verify.stdout
    assert "reproducibility: rebuilt twice, byte-identical" in verify.stdout
    provenance = json.loads((downloads / "provenance.json").read_text())
    check_slsa_provenance(provenance)
    dependencies = provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
    listed = [d for d in dependencies if str(d.get("uri", "")).startswith("pkg:alpm/")]
    recorded = record["packages"]
    assert isinstance(recorded, list)
    assert recorded
    assert listed == [
        {
            "name": p["name"],
            "uri": f"pkg:alpm/arch/{p['name']}@{p['version']}",
            "digest": {"sha256": p["sha256"]},
            "annotations": {"repository": p["repo"]},
        }
        for p in recorded
    ]
    assert server.build(build_id)["trust"] == {
        "signed_by": key.public_key().id_text,
        "public_key_url": "/signing-key.pub",
        "reproducibility": "identical",
        "differences": [],
        "difference_count": 0,
    }
    assert forge.violations() == []


def test_tag_whose_build_writes_the_time_is_published_not_reproducible(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A build that writes `date` into the image: released, marked, the path named."""
    profile = make_profile(profiles, "clock")
    hooks = profile / "airootfs" / "etc" / "pacman.d" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "zz-build-date.hook").write_text(CLOCK_HOOK)
    build_id = publish_tag(server, forge, CLOCK, profile)
    record = server.wait_finished(build_id)
    assert "NOT reproducible" in str(record["detail"])

    path = "/arch/x86_64/airootfs.sfs:/etc/build-date (content)"
    (release,) = forge.releases("github", CLOCK)
    assert "**Not reproducible**" in str(release.body)
    assert f"- `{path}`" in str(release.body)
    trust = server.build(build_id)["trust"]
    assert isinstance(trust, dict)
    assert trust["reproducibility"] == "different"
    assert path in trust["differences"]
    page = httpx.get(f"{server.url}/builds/{build_id}", timeout=10).text
    assert "not reproducible</span>" in page
    assert f"<li><code>{path}</code></li>" in page
    provenance = json.loads(
        next(a for a in release.assets if a.name == "provenance.json").path.read_text()
    )
    result = provenance["predicate"]["runDetails"]["isorunner_reproducibility"]
    assert result["status"] == "different"
    assert path in result["differences"]
