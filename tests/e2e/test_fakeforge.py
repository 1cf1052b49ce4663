"""The fake forge itself, driven with plain httpx: each endpoint, refusal and fault."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.e2e.fakeforge import FakeForge, arun_fake_forge, run_fake_forge
from tests.e2e.fakeforge_gitlab import IllegalTransition, transition

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"
GH_TOKEN = "ghp_test_token"
GL_TOKEN = "glpat-test-token"


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A tiny archiso-like profile directory."""
    root = tmp_path / "profile"
    (root / "airootfs" / "etc").mkdir(parents=True)
    (root / "profiledef.sh").write_text("iso_name=test\n")
    (root / "packages.x86_64").write_text("base\n")
    return root


@pytest.fixture
def forge(tmp_path: Path, profile: Path) -> Iterator[FakeForge]:
    """A running fake forge with one GitHub repository and one GitLab project."""
    with run_fake_forge(tmp_path / "forge") as running:
        commits = {SHA: profile, OTHER_SHA: profile}
        running.seed_github("acme/profile", token=GH_TOKEN, commits=commits, refs={"main": SHA})
        running.seed_gitlab(
            "group/profile", token=GL_TOKEN, commits=commits, refs={"main": SHA}, project_id=42
        )
        yield running


@pytest.fixture
def github(forge: FakeForge) -> Iterator[httpx.Client]:
    """A client for the fake GitHub API, authenticated as the seeded token."""
    headers = {"Authorization": f"Bearer {GH_TOKEN}", "X-GitHub-Api-Version": "2022-11-28"}
    with httpx.Client(base_url=forge.github_api_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def gitlab(forge: FakeForge) -> Iterator[httpx.Client]:
    """A client for the fake GitLab API, authenticated as the seeded token."""
    headers = {"PRIVATE-TOKEN": GL_TOKEN}
    with httpx.Client(base_url=forge.gitlab_api_url, headers=headers, timeout=10) as client:
        yield client


def _draft(github: httpx.Client, tag: str = "v1.0") -> dict[str, object]:
    response = github.post("/repos/acme/profile/releases", json={"tag_name": tag, "draft": True})
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


def _upload_url(release: dict[str, object]) -> str:
    return str(release["upload_url"]).removesuffix("{?name,label}")


# -- GitHub statuses -----------------------------------------------------------------------


def test_github_status_accepted_and_kept_in_order(forge: FakeForge, github: httpx.Client) -> None:
    """Statuses posted to a commit are answered 201 and kept in the order posted."""
    for state in ("pending", "success"):
        body = {"state": state, "context": "isorunner", "description": f"build {state}",
                "target_url": "http://runner.example/builds/1"}  # fmt: skip
        response = github.post(f"/repos/acme/profile/statuses/{SHA}", json=body)
        assert response.status_code == 201
        assert response.json()["state"] == state
    recorded = forge.statuses("github", "acme/profile", SHA)
    assert [s.state for s in recorded] == ["pending", "success"]
    assert recorded[0].target_url == "http://runner.example/builds/1"
    assert forge.violations() == []


def test_github_status_description_over_140_characters_is_refused(
    forge: FakeForge, github: httpx.Client
) -> None:
    """A description longer than 140 characters gets GitHub's 422 and is not stored."""
    body = {"state": "pending", "description": "x" * 141}
    response = github.post(f"/repos/acme/profile/statuses/{SHA}", json=body)
    assert response.status_code == 422
    assert "maximum is 140 characters" in response.json()["errors"][0]["message"]
    assert forge.statuses("github", "acme/profile", SHA) == []


def test_github_status_invalid_state_is_refused_and_recorded_as_violation(
    forge: FakeForge, github: httpx.Client
) -> None:
    """A state outside the enum is refused with 422 and recorded as an OpenAPI violation."""
    response = github.post(f"/repos/acme/profile/statuses/{SHA}", json={"state": "failed"})
    assert response.status_code == 422
    assert len(forge.violations()) == 1
    assert "'state' = 'failed' is not one of" in forge.violations()[0]


def test_github_unknown_commit_is_refused(github: httpx.Client) -> None:
    """A status for a commit the repository lacks gets 422 "No commit found"."""
    response = github.post(f"/repos/acme/profile/statuses/{'9' * 40}", json={"state": "pending"})
    assert response.status_code == 422
    assert response.json()["message"].startswith("No commit found for SHA")


def test_github_wrong_token_is_401_and_recorded_redacted(forge: FakeForge) -> None:
    """A wrong token gets 401, and the recorded request keeps the scheme but not the token."""
    headers = {"Authorization": "Bearer not-the-token"}
    url = f"{forge.github_api_url}/repos/acme/profile/statuses/{SHA}"
    response = httpx.post(url, json={"state": "pending"}, headers=headers)
    assert response.status_code == 401
    [request] = forge.requests("POST")
    assert request.headers["authorization"] == "Bearer <redacted>"
    assert request.status == 401
    assert request.json == {"state": "pending"}


def test_openapi_violations_name_missing_field_and_unknown_path(
    forge: FakeForge, github: httpx.Client
) -> None:
    """A body missing a required field and a path outside the spec are both recorded."""
    assert github.post("/repos/acme/profile/releases", json={"name": "x"}).status_code == 422
    assert github.get("/repos/acme/profile/branches").status_code == 404
    problems = forge.violations()
    assert any("required field 'tag_name' missing" in p for p in problems)
    assert any("/branches: no path in the OpenAPI description matches" in p for p in problems)


# -- GitHub archive ------------------------------------------------------------------------


def test_github_tarball_redirects_to_another_host_without_the_token(
    forge: FakeForge, github: httpx.Client
) -> None:
    """The tarball 302s to codeload on another host name, which httpx reaches without auth."""
    response = github.get("/repos/acme/profile/tarball/main", follow_redirects=True)
    assert response.status_code == 200
    assert response.history[0].status_code == 302
    assert response.url.host == "localhost"
    [codeload] = forge.requests("GET", "/github/codeload/*")
    assert not codeload.had_authorization
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        names = tar.getnames()
        assert tar.pax_headers["comment"] == SHA
    top = f"acme-profile-{SHA[:7]}"
    assert {name.split("/")[0] for name in names} == {top}
    assert f"{top}/profiledef.sh" in names
    assert response.headers["content-disposition"] == f"attachment; filename={top}.tar.gz"


def test_codeload_records_a_leaked_authorization_header(
    forge: FakeForge, github: httpx.Client
) -> None:
    """A client that forwards Authorization to codeload is caught by the record."""
    location = github.get("/repos/acme/profile/tarball/main").headers["location"]
    assert httpx.get(location, headers={"Authorization": f"Bearer {GH_TOKEN}"}).status_code == 200
    [codeload] = forge.requests("GET", "/github/codeload/*")
    assert codeload.had_authorization


def test_github_tarball_of_unknown_ref_is_404(github: httpx.Client) -> None:
    """A ref the repository does not have gets 404 and no redirect."""
    assert github.get("/repos/acme/profile/tarball/nope").status_code == 404


# -- GitHub releases -----------------------------------------------------------------------


def test_github_release_flow_draft_upload_publish(forge: FakeForge, github: httpx.Client) -> None:
    """A draft is hidden from tags/{tag}, takes a streamed upload, and is found once published."""
    release = _draft(github)
    assert github.get("/repos/acme/profile/releases/tags/v1.0").status_code == 404
    data = os.urandom(3 * 1024 * 1024 + 17)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
    response = github.post(
        _upload_url(release), params={"name": "test.iso"}, content=chunks(), headers=headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["digest"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    listed = github.get(f"/repos/acme/profile/releases/{release['id']}/assets").json()
    assert [(a["name"], a["size"], a["state"]) for a in listed] == [
        ("test.iso", len(data), "uploaded")
    ]
    publish = github.patch(f"/repos/acme/profile/releases/{release['id']}", json={"draft": False})
    assert publish.json()["draft"] is False
    assert github.get("/repos/acme/profile/releases/tags/v1.0").status_code == 200
    [stored] = forge.releases("github", "acme/profile")[0].assets
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.path.read_bytes() == data
    assert forge.violations() == []


def test_github_duplicate_asset_is_422_until_deleted(
    forge: FakeForge, github: httpx.Client
) -> None:
    """A second upload of a name gets 422 already_exists; after DELETE the name is free again."""
    release = _draft(github)
    upload = {"params": {"name": "sha256sums"}, "headers": {"Content-Type": "text/plain"}}
    first = github.post(_upload_url(release), content=b"a  x.iso\n", **upload)  # type: ignore[arg-type]
    again = github.post(_upload_url(release), content=b"b  x.iso\n", **upload)  # type: ignore[arg-type]
    assert again.status_code == 422
    assert again.json()["errors"] == [
        {"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}
    ]
    assert (
        github.delete(f"/repos/acme/profile/releases/assets/{first.json()['id']}").status_code
        == 204
    )
    third = github.post(_upload_url(release), content=b"c  x.iso\n", **upload)  # type: ignore[arg-type]
    assert third.status_code == 201
    [asset] = forge.releases("github", "acme/profile")[0].assets
    assert asset.path.read_bytes() == b"c  x.iso\n"


def test_github_drafts_share_a_tag_until_one_is_published(github: httpx.Client) -> None:
    """Two drafts of a tag are allowed; once one is published, the tag takes no other."""
    first, second = _draft(github), _draft(github)
    assert first["id"] != second["id"]
    published = github.patch(f"/repos/acme/profile/releases/{first['id']}", json={"draft": False})
    assert published.status_code == 200
    response = github.post("/repos/acme/profile/releases", json={"tag_name": "v1.0"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "already_exists"
    again = github.patch(f"/repos/acme/profile/releases/{second['id']}", json={"draft": False})
    assert again.status_code == 422


def test_github_upload_without_content_length_is_400(
    forge: FakeForge, github: httpx.Client
) -> None:
    """A chunked upload (no Content-Length) gets 400 "Bad Content-Length"."""
    release = _draft(github)
    headers = {"Content-Type": "application/octet-stream"}
    body = iter([b"abc", b"def"])
    response = github.post(
        _upload_url(release), params={"name": "x.iso"}, content=body, headers=headers
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Bad Content-Length"
    assert forge.releases("github", "acme/profile")[0].assets == []


def test_github_asset_over_the_size_limit_is_refused(
    forge: FakeForge, github: httpx.Client
) -> None:
    """An asset at or above the limit is refused with 422 before any byte is stored."""
    forge.max_asset_size = 10
    release = _draft(github)
    headers = {"Content-Type": "application/octet-stream"}
    response = github.post(
        _upload_url(release), params={"name": "x.iso"}, content=b"y" * 11, headers=headers
    )
    assert response.status_code == 422
    assert "size is not included in the list" in response.text


# -- faults --------------------------------------------------------------------------------


def test_status_fault_with_retry_after_then_recovers(
    forge: FakeForge, github: httpx.Client
) -> None:
    """An armed 503 answers exactly `times` matching requests with Retry-After, then stops."""
    forge.fail("POST", "/github/api/repos/*/statuses/*", status=503, times=2, retry_after=7)
    url = f"/repos/acme/profile/statuses/{SHA}"
    answers = [github.post(url, json={"state": "pending"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 201]
    assert answers[0].headers["retry-after"] == "7"
    assert forge.pending_faults() == []
    assert [r.fault for r in forge.requests("POST")] == ["status 503", "status 503", None]
    assert len(forge.statuses("github", "acme/profile", SHA)) == 1


def test_rate_limit_fault_is_403_with_reset(forge: FakeForge, github: httpx.Client) -> None:
    """The rate-limit fault answers 403 with x-ratelimit-remaining 0 and the reset epoch."""
    forge.rate_limit("GET", "*/releases/tags/*", reset=1_900_000_000)
    response = github.get("/repos/acme/profile/releases/tags/v1.0")
    assert response.status_code == 403
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset"] == "1900000000"


def test_gitlab_429_fault_is_plain_text(forge: FakeForge, gitlab: httpx.Client) -> None:
    """A 429 on a GitLab path answers GitLab's plain-text "Retry later"."""
    forge.fail("*", "/gitlab/*", status=429, retry_after=1)
    response = gitlab.get("/projects/42/releases")
    assert (response.status_code, response.text) == (429, "Retry later\n")


def test_drop_fault_closes_the_connection(forge: FakeForge, github: httpx.Client) -> None:
    """A dropped request ends in a transport error and is recorded with status 0."""
    forge.drop("GET", "*/releases")
    with pytest.raises(httpx.RemoteProtocolError):
        github.get("/repos/acme/profile/releases")
    assert github.get("/repos/acme/profile/releases").status_code == 200
    assert [(r.status, r.fault) for r in forge.requests("GET")] == [(0, "drop"), (200, None)]


def test_hang_fault_outlasts_the_client_timeout(forge: FakeForge, github: httpx.Client) -> None:
    """A hung request times the client out."""
    forge.hang("GET", "*/releases", seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        github.get("/repos/acme/profile/releases", timeout=0.3)


def test_fault_after_handling_stores_the_upload_but_answers_504(
    forge: FakeForge, github: httpx.Client
) -> None:
    """With after_handling, the upload is stored although the client sees 504."""
    release = _draft(github)
    forge.fail("POST", "/github/uploads/*", status=504, after_handling=True)
    headers = {"Content-Type": "application/octet-stream"}
    response = github.post(
        _upload_url(release), params={"name": "x.iso"}, content=b"iso", headers=headers
    )
    assert response.status_code == 504
    assets = github.get(f"/repos/acme/profile/releases/{release['id']}/assets").json()
    assert [(a["name"], a["size"]) for a in assets] == [("x.iso", 3)]


# -- GitLab --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "requested", "expected"),
    [
        ("created", "pending", "pending"),
        ("created", "running", "running"),
        ("pending", "running", "running"),
        ("created", "success", "success"),
        ("running", "success", "success"),
        ("running", "failed", "failed"),
        ("pending", "canceled", "canceled"),
    ],
)
def test_gitlab_transition_allows(current: str, requested: str, expected: str) -> None:
    """GitLab's state machine allows the forward transitions a runner posts."""
    assert transition(current, requested) == expected


@pytest.mark.parametrize(
    ("current", "requested", "message"),
    [
        ("pending", "pending", "Cannot transition status via :enqueue from :pending"),
        ("running", "running", "Cannot transition status via :run from :running"),
        ("running", "pending", "Cannot transition status via :enqueue from :running"),
        ("running", "skipped", "Cannot transition status via :skip from :running"),
    ],
)
def test_gitlab_transition_refuses(current: str, requested: str, message: str) -> None:
    """GitLab's state machine refuses repeats and backward moves with its own message."""
    with pytest.raises(IllegalTransition, match=message):
        transition(current, requested)


def test_gitlab_status_state_machine_over_http(forge: FakeForge, gitlab: httpx.Client) -> None:
    """Repeated non-final states get 400, and a final state starts a new job for the next post."""
    url = f"/projects/group%2Fprofile/statuses/{SHA}"
    codes = [gitlab.post(url, json={"state": s, "name": "iso"}) for s in
             ("pending", "pending", "running", "running", "success", "pending")]  # fmt: skip
    assert [c.status_code for c in codes] == [201, 400, 201, 400, 201, 201]
    assert codes[3].json() == {"message": "Cannot transition status via :run from :running"}
    recorded = forge.statuses("gitlab", "group/profile", SHA)
    assert [(s.state, s.ref) for s in recorded] == [
        ("pending", "main"), ("running", "main"), ("success", "main"), ("pending", "main")
    ]  # fmt: skip
    assert recorded[0].id == recorded[2].id != recorded[3].id


def test_gitlab_status_for_unreferenced_commit_needs_ref(gitlab: httpx.Client) -> None:
    """A sha no branch points at gets 404 "References for commit" unless a ref is given."""
    url = f"/projects/42/statuses/{OTHER_SHA}"
    assert gitlab.post(url, json={"state": "pending"}).status_code == 404
    assert gitlab.post(url, json={"state": "pending", "ref": "fork-branch"}).status_code == 201


def test_gitlab_project_id_must_be_encoded_exactly_once(gitlab: httpx.Client) -> None:
    """The project is found by number or by `group%2Fname`; `%252F` and a raw slash are 404."""
    assert gitlab.get("/projects/42/releases").status_code == 200
    assert gitlab.get("/projects/group%2Fprofile/releases").status_code == 200
    assert gitlab.get("/projects/group%252Fprofile/releases").status_code == 404
    assert gitlab.get("/projects/group/profile/releases").status_code == 404


def test_gitlab_wrong_private_token_is_401(forge: FakeForge) -> None:
    """A wrong PRIVATE-TOKEN gets 401 and is recorded redacted."""
    url = f"{forge.gitlab_api_url}/projects/42/releases"
    assert httpx.get(url, headers={"PRIVATE-TOKEN": "wrong"}).status_code == 401
    assert forge.requests()[0].headers["private-token"] == "<redacted>"


def test_gitlab_archive_has_gitlab_top_directory(gitlab: httpx.Client) -> None:
    """The archive at a sha has the single top directory `{project}-{sha}-{sha}`."""
    response = gitlab.get(
        "/projects/group%2Fprofile/repository/archive.tar.gz", params={"sha": SHA}
    )
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tops = {name.split("/")[0] for name in tar.getnames()}
    assert tops == {f"profile-{SHA}-{SHA}"}


def test_gitlab_package_upload_is_streamed_to_disk(forge: FakeForge, gitlab: httpx.Client) -> None:
    """A generic package file is stored on disk with its size and sha256."""
    data = os.urandom(1024 * 1024 + 3)
    url = "/projects/42/packages/generic/isorunner/1.0.0/test.iso"
    response = gitlab.put(
        url, params={"select": "package_file"}, content=iter([data[:1000], data[1000:]])
    )
    assert response.status_code == 201
    assert response.json()["file_sha256"] == hashlib.sha256(data).hexdigest()
    [stored] = forge.packages("group/profile")
    assert (stored.package, stored.version, stored.size) == ("isorunner", "1.0.0", len(data))
    assert stored.path.read_bytes() == data
    bad = gitlab.put("/projects/42/packages/generic/iso%20runner/1.0.0/x.iso", content=b"x")
    assert bad.status_code == 400


def test_gitlab_release_with_links_then_update_and_more_links(
    forge: FakeForge, gitlab: httpx.Client
) -> None:
    """Releases take links at creation and later and name their page; duplicates get 409/400."""
    link = {"name": "test.iso", "url": "http://x/test.iso", "link_type": "image"}
    body = {"tag_name": "v1.0", "ref": SHA, "name": "v1.0", "assets": {"links": [link]}}
    created = gitlab.post("/projects/42/releases", json=body)
    assert created.status_code == 201
    page = f"{forge.base_url}/gitlab/group/profile/-/releases/v1.0"
    assert created.json()["_links"]["self"] == page
    assert gitlab.post("/projects/42/releases", json=body).status_code == 409
    assert (
        gitlab.put("/projects/42/releases/v1.0", json={"description": "notes"}).status_code == 200
    )
    sums = {"name": "sha256sums", "url": "http://x/sha256sums"}
    assert gitlab.post("/projects/42/releases/v1.0/assets/links", json=sums).status_code == 201
    assert gitlab.post("/projects/42/releases/v1.0/assets/links", json=sums).status_code == 400
    [release] = forge.releases("gitlab", "group/profile")
    assert release.body == "notes"
    assert [(x.name, x.link_type) for x in release.links] == [
        ("test.iso", "image"),
        ("sha256sums", "other"),
    ]


def test_gitlab_package_files_are_listed_and_deleted_one_by_one(
    forge: FakeForge, gitlab: httpx.Client
) -> None:
    """A name uploaded twice is two files of one package; one can be deleted by id."""
    base = "/projects/42/packages/generic/isorunner/v1"
    for body in (b"first", b"second"):
        assert gitlab.put(f"{base}/x.iso", content=body).status_code == 201
    query = {"package_type": "generic", "package_name": "isorun", "package_version": "v1"}
    [package] = gitlab.get("/projects/42/packages", params=query).json()
    assert (package["name"], package["version"]) == ("isorunner", "v1")
    files = gitlab.get(f"/projects/42/packages/{package['id']}/package_files").json()
    assert [(f["file_name"], f["size"]) for f in files] == [("x.iso", 5), ("x.iso", 6)]
    assert files[0]["file_sha256"] == hashlib.sha256(b"first").hexdigest()
    url = f"/projects/42/packages/{package['id']}/package_files/{files[0]['id']}"
    assert gitlab.delete(url).status_code == 204
    assert gitlab.delete(url).status_code == 404
    assert [f.path.read_bytes() for f in forge.packages("group/profile")] == [b"second"]


def test_half_stored_fault_keeps_half_the_upload_and_answers_502(
    forge: FakeForge, gitlab: httpx.Client
) -> None:
    """A GitLab upload cut by the fault leaves a file of half the size and answers 502."""
    forge.fail_half_stored("PUT", "/gitlab/api/v4/projects/42/packages/*")
    data = os.urandom(256 * 1024)
    url = "/projects/42/packages/generic/isorunner/v1/x.iso"
    try:
        status = gitlab.put(url, content=data).status_code
    except httpx.TransportError:
        status = 0  # the connection closed while the client still sent the rest
    assert status in (0, 502)
    [stored] = forge.packages("group/profile")
    assert stored.size == len(data) // 2
    assert stored.path.read_bytes() == data[: len(data) // 2]


def test_outage_answers_while_its_predicate_holds(forge: FakeForge, github: httpx.Client) -> None:
    """An outage answers 503 for as long as the test says, however many requests come."""
    down = [True]
    forge.outage("GET", "/github/api/repos/*/releases", active=lambda: down[0])
    assert [github.get("/repos/acme/profile/releases").status_code for _ in range(3)] == [503] * 3
    down[0] = False
    assert github.get("/repos/acme/profile/releases").status_code == 200


def test_gitlab_release_for_missing_tag_needs_ref(gitlab: httpx.Client) -> None:
    """A release for a tag that does not exist needs a ref to create the tag from."""
    response = gitlab.post("/projects/42/releases", json={"tag_name": "v9"})
    assert response.status_code == 422


@pytest.mark.anyio
async def test_async_fake_forge_serves_on_the_running_loop(tmp_path: Path, profile: Path) -> None:
    """The async context manager serves requests from a task on the test's own loop."""
    async with arun_fake_forge(tmp_path / "forge") as forge:
        forge.seed_github("acme/profile", token=GH_TOKEN, commits={SHA: profile})
        headers = {"Authorization": f"token {GH_TOKEN}"}
        async with httpx.AsyncClient(base_url=forge.github_api_url, headers=headers) as client:
            response = await client.post(
                f"/repos/acme/profile/statuses/{SHA}", json={"state": "success"}
            )
        assert response.status_code == 201
        assert [s.state for s in forge.statuses("github", "acme/profile", SHA)] == ["success"]


# -- GitHub App ----------------------------------------------------------------------------


def _jwt(key: rsa.RSAPrivateKey, claims: Mapping[str, object]) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = part(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{part(signature)}"


def test_github_app_mints_installation_tokens_the_repo_accepts(forge: FakeForge) -> None:
    """A valid app JWT finds the installation and mints a token that posts statuses."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forge.seed_github_app("123", public_key_pem=pem, installation_id=77, repos=["acme/profile"])
    now = int(time.time())
    jwt = _jwt(key, {"iat": now - 60, "exp": now + 540, "iss": "123"})
    with httpx.Client(
        base_url=forge.github_api_url, headers={"Authorization": f"Bearer {jwt}"}
    ) as app:
        assert app.get("/repos/acme/profile/installation").json()["id"] == 77
        minted = app.post("/app/installations/77/access_tokens")
    assert minted.status_code == 201
    token = minted.json()["token"]
    assert forge.minted_tokens(77) == [token]
    url = f"{forge.github_api_url}/repos/acme/profile/statuses/{SHA}"
    posted = httpx.post(
        url, json={"state": "pending"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert posted.status_code == 201
    assert forge.violations() == []


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"iat": -60, "exp": 540, "iss": "999"}, "Issuer"),
        ({"iat": -60, "exp": 900, "iss": "123"}, "too far in the future"),
        ({"iat": -700, "exp": -100, "iss": "123"}, "value in the future"),
    ],
)
def test_github_app_refuses_bad_jwts(
    forge: FakeForge, claims: dict[str, int | str], message: str
) -> None:
    """JWTs with a wrong issuer, an exp too far ahead or an expired exp get 401."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forge.seed_github_app("123", public_key_pem=pem, installation_id=77, repos=["acme/profile"])
    now = int(time.time())
    shifted = {k: now + v if isinstance(v, int) else v for k, v in claims.items()}
    headers = {"Authorization": f"Bearer {_jwt(key, shifted)}"}
    response = httpx.post(
        f"{forge.github_api_url}/app/installations/77/access_tokens", headers=headers
    )
    assert response.status_code == 401
    assert message in response.json()["message"]
    assert forge.minted_tokens(77) == []
