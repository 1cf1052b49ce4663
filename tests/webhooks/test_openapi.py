"""Tests for webhooks.openapi: the description matches the routes and real responses."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import SecretStr
from starlette.routing import Route

from tests.webhooks.samples import GITHUB_SECRET, github_signed
from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, DirArtifacts, DirLogs, FixedProbe, WebStore
from webhooks.app import create_app
from webhooks.build import (
    BuildState,
    Forge,
    ReadinessCheck,
    Release,
    ReleaseFile,
    ReleaseState,
)
from webhooks.config import RepoRule, WebhookConfig
from webhooks.openapi import describe
from webhooks.routes import ROUTES

CONFIG = WebhookConfig(
    public_url="https://ci.example.org",
    repos=(RepoRule(Forge.GITHUB, "Codertocat/Hello-World", branches=("master",)),),
    github_secret=SecretStr(GITHUB_SECRET),
)
SPEC = describe(CONFIG.public_url)
TOKEN = "admin"
AUTH = {"authorization": f"Bearer {TOKEN}"}
_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = SPEC["components"]["schemas"][name]
    return schema


def violations(value: object, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Check `value` against the JSON Schema subset the description uses."""
    schema = _resolve(schema)
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not violations(value, s, where)]
        return [] if len(matching) == 1 else [f"{where}: matches {len(matching)} of oneOf"]
    problems: list[str] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, _TYPES[n])
            and not (n in ("integer", "number") and value is True)
            and not (n in ("integer", "number") and value is False)
            for n in names
        )
        if not ok:
            return [f"{where}: {value!r} is not of type {names}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: {value!r} != {schema['const']!r}")
    if isinstance(value, dict):
        problems.extend(_object_violations(value, schema, where))
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            problems.extend(violations(item, schema["items"], f"{where}[{n}]"))
    return problems


def _object_violations(
    value: Mapping[str, object], schema: Mapping[str, Any], where: str
) -> list[str]:
    problems = [
        f"{where}: {key!r} is required" for key in schema.get("required", []) if key not in value
    ]
    properties = schema.get("properties", {})
    for key, item in value.items():
        if key not in properties:
            problems.append(f"{where}: {key!r} is not documented")
        else:
            problems.extend(violations(item, properties[key], f"{where}.{key}"))
    return problems


def _template(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def _routed() -> set[tuple[str, str]]:
    pairs = set()
    for route in ROUTES:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                pairs.add((_template(route.path), method.lower()))
    return pairs


def test_every_route_is_documented_and_every_documented_path_routed() -> None:
    """The described paths and methods are exactly the app's routes."""
    documented = {(path, method) for path, item in SPEC["paths"].items() for method in item}
    assert documented == _routed()


def test_path_parameters_match_the_templates() -> None:
    """Each operation declares exactly the parameters of its path template."""
    for path, item in SPEC["paths"].items():
        in_template = set(re.findall(r"\{(\w+)\}", path))
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_template, path


def test_description_is_openapi_3_1_with_resolvable_refs() -> None:
    """The document says 3.1 and every $ref points at a defined schema."""
    assert SPEC["openapi"].startswith("3.1.")
    text = repr(SPEC)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in SPEC["components"]["schemas"]


def test_openapi_json_is_served(client: TestClient) -> None:
    """`GET /api/openapi.json` serves the same document."""
    assert client.get("/api/openapi.json").json() == SPEC


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The app with a succeeded build (1, log and ISO), a running one (2), and releases."""
    store = WebStore()
    store.add(state=BuildState.SUCCEEDED)
    store.add(state=BuildState.RUNNING)
    files = (ReleaseFile("x.iso", 3, "ab" * 32, uploaded=True), ReleaseFile("sha256sums", 9, ""))
    waiting = Release("v1", ReleaseState.RETRYING, T0, 2, T0, "the forge answered 502", "", files)
    store.add(state=BuildState.SUCCEEDED, release=waiting)
    done = Release("v2", ReleaseState.PUBLISHED, T0, url="https://forge.example/r/v2")
    store.add(state=BuildState.SUCCEEDED, release=done)
    logs = DirLogs(tmp_path)
    logs.append(1, "one\ntwo\n")
    (tmp_path / "art" / "1").mkdir(parents=True)
    (tmp_path / "art" / "1" / "x.iso").write_bytes(b"iso")
    probe = FixedProbe(ReadinessCheck("store", True, "ok"))
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        logs=logs,
        browser=store,
        control=store,
        artifacts=DirArtifacts(tmp_path / "art"),
        readiness=probe,
        admin_token=SecretStr(TOKEN),
        clock=lambda: T0,
    )
    with TestClient(app) as client:
        yield client


def _operation(method: str, path: str) -> dict[str, Any]:
    for template, item in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\{\w+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method in item:
            return cast(dict[str, Any], item[method])
    raise AssertionError(f"{method.upper()} {path} is not documented")


def _calls() -> list[tuple[str, str, dict[str, str], bytes]]:
    push_headers, push = github_signed("push_branch")
    ping_headers, ping = github_signed("ping")
    bad = {**push_headers, "x-hub-signature-256": "sha256=" + "0" * 64}
    return [
        ("post", "/webhooks/github", push_headers, push),
        ("post", "/webhooks/github", push_headers, push),
        ("post", "/webhooks/github", ping_headers, ping),
        ("post", "/webhooks/github", bad, push),
        ("post", "/webhooks/gitlab", {}, b"{}"),
        ("get", "/", {}, b""),
        ("get", "/?state=bad", {}, b""),
        ("get", "/builds/1", {}, b""),
        ("get", "/builds/9", {}, b""),
        ("get", "/builds/1/log", {}, b""),
        ("get", "/builds/1/log", {"range": "bytes=0-2"}, b""),
        ("get", "/builds/1/log/stream", {}, b""),
        ("get", "/builds/1/log/stream", {"last-event-id": "x"}, b""),
        ("get", "/builds/1/artifacts/x.iso", {}, b""),
        ("get", "/builds/1/artifacts/y.iso", {}, b""),
        ("get", "/api/builds", {}, b""),
        ("get", "/api/builds?limit=1", {}, b""),
        ("get", "/api/builds?limit=500", {}, b""),
        ("get", "/api/builds/1", {}, b""),
        ("get", "/api/builds/3", {}, b""),
        ("get", "/api/builds/4", {}, b""),
        ("get", "/builds/3", {}, b""),
        ("get", "/api/builds/99", {}, b""),
        ("post", "/api/builds/2/cancel", {}, b""),
        ("post", "/api/builds/1/cancel", AUTH, b""),
        ("post", "/api/builds/99/cancel", AUTH, b""),
        ("post", "/api/builds/2/retry", AUTH, b""),
        ("post", "/api/builds/1/retry", AUTH, b""),
        ("post", "/api/builds/2/cancel", AUTH, b""),
        ("post", "/api/builds/3/publish", AUTH, b""),
        ("post", "/api/builds/2/publish", AUTH, b""),
        ("get", "/api/openapi.json", {}, b""),
        ("get", "/healthz", {}, b""),
        ("get", "/readyz", {}, b""),
        ("get", "/metrics", {}, b""),
    ]


def test_real_responses_match_the_description(client: TestClient) -> None:
    """Every status, media type and JSON body the app answers is the documented one."""
    for method, path, headers, body in _calls():
        response = client.request(method.upper(), path, headers=headers, content=body)
        operation = _operation(method, path.split("?")[0])
        documented = operation["responses"].get(str(response.status_code))
        assert documented is not None, f"{method} {path} -> {response.status_code}"
        content = documented.get("content")
        if content is None:
            continue
        media = response.headers["content-type"].split(";")[0]
        assert media in content, f"{method} {path}: {media} not in {list(content)}"
        if media == "application/json":
            schema = content[media]["schema"]
            assert violations(response.json(), schema) == [], f"{method} {path}"


def test_admin_responses_without_token_config_match(tmp_path: Path) -> None:
    """The 403 of a server without an admin token is documented too."""
    store = WebStore()
    store.add()
    app = create_app(CONFIG, sink=store, catalog=store, control=store)
    with TestClient(app) as client:
        response = client.post("/api/builds/1/retry", headers=AUTH)
    assert response.status_code == 403
    documented = _operation("post", "/api/builds/1/retry")["responses"]["403"]
    schema = documented["content"]["application/json"]["schema"]
    assert violations(response.json(), schema) == []


def test_validator_catches_mismatches() -> None:
    """The schema checker used above does find wrong types, missing and extra fields."""
    build = SPEC["components"]["schemas"]["Build"]
    assert violations({"id": "1"}, build)
    assert violations({"error": "x", "extra": 1}, {"$ref": "#/components/schemas/Error"})
    assert violations(True, {"type": "integer"})
    assert not violations(None, {"type": ["integer", "null"]})
