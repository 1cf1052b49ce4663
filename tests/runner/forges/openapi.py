"""Test helper: check a GitHub request against GitHub's (trimmed) OpenAPI description.

Pure: reads the spec file once, then works on values. `validate_github_request` takes
what went on the wire (method, URL, headers, body) and raises `OpenAPIViolation`
unless an operation of the spec matches the method and path template, every path
parameter has its type, every required query parameter is present and no undeclared
one is, and the body has the declared content type, the required fields, only declared
properties, the declared types and enum values. It also enforces the house headers
(pinned API version, Bearer token). The spec is a copy of
`shared/reference/github-rest-trimmed.openapi.json` in `tests/samples/forges/`, plus a
small hand-written supplement in the same format for the two GitHub App operations
(installation look-up, installation token) that the trimmed copy leaves out.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from runner.forges.request import ForgeRequest

SAMPLES = Path(__file__).parents[2] / "samples" / "forges"
#: The trimmed REST description, and the two GitHub App operations it lacks.
SPECS = (
    SAMPLES / "github-rest-trimmed.openapi.json",
    SAMPLES / "github-app-supplement.openapi.json",
)
API_VERSION = "2022-11-28"


class OpenAPIViolation(AssertionError):
    """A request that GitHub's OpenAPI description does not allow."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the spec, ready for matching."""

    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    path_params: Mapping[str, Mapping[str, Any]]
    query_params: Mapping[str, Mapping[str, Any]]
    body: Mapping[str, Any] | None


def _resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(spec, target)


def _segment(name: str, path_params: Mapping[str, Mapping[str, Any]]) -> str:
    # Multi-segment parameters (a SHA or a tag) may contain slashes; others may not.
    multi = path_params[name].get("x-multi-segment")
    return f"(?P<{name}>{'.+' if multi else '[^/]+'})"


@functools.cache
def operations() -> tuple[Operation, ...]:
    """Load every operation of the spec files."""
    found = []
    for spec_path in SPECS:
        found.extend(_load(json.loads(spec_path.read_text())))
    return tuple(found)


def _load(spec: Mapping[str, Any]) -> list[Operation]:
    found = []
    for template, item in spec["paths"].items():
        for method, op in item.items():
            params = [_resolve(spec, p) for p in op.get("parameters", [])]
            path_params = {p["name"]: p for p in params if p["in"] == "path"}
            regex = "".join(
                _segment(m.group(1), path_params) if m.group(1) else re.escape(m.group(0))
                for m in re.finditer(r"\{(\w+)\}|[^{]+", template)
            )
            found.append(
                Operation(
                    operation_id=op["operationId"],
                    method=method.upper(),
                    template=template,
                    pattern=re.compile(f"^{regex}$"),
                    path_params=path_params,
                    query_params={p["name"]: p for p in params if p["in"] == "query"},
                    body=op.get("requestBody"),
                )
            )
    return found


def _check_type(where: str, value: object, schema: Mapping[str, Any]) -> None:
    if value is None:
        if not schema.get("nullable"):
            raise OpenAPIViolation(f"{where} is null but not nullable")
        return
    expected = schema.get("type")
    checks: dict[str, bool] = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }
    if isinstance(expected, str) and not checks.get(expected, True):
        raise OpenAPIViolation(f"{where} = {value!r} is not of type {expected}")
    if "enum" in schema and value not in schema["enum"]:
        raise OpenAPIViolation(f"{where} = {value!r} is not one of {schema['enum']}")


def _check_text_param(where: str, raw: str, schema: Mapping[str, Any]) -> None:
    if schema.get("type") == "integer" and not raw.isdigit():
        raise OpenAPIViolation(f"{where} = {raw!r} is not an integer")
    if not raw:
        raise OpenAPIViolation(f"{where} is empty")


def _check_body(op: Operation, headers: Mapping[str, str], body: bytes) -> None:
    if op.body is None:
        if body:
            raise OpenAPIViolation(f"{op.operation_id} takes no body, got {len(body)} bytes")
        return
    content: Mapping[str, Any] = op.body["content"]
    media = headers.get("content-type", "").split(";")[0].strip()
    if not body and not op.body.get("required"):
        return
    if media not in content:
        raise OpenAPIViolation(f"{op.operation_id} takes {list(content)}, got {media!r}")
    if media == "application/octet-stream":
        if headers.get("content-length") != str(len(body)):
            raise OpenAPIViolation(f"{op.operation_id}: Content-Length does not match the body")
        return
    schema = content[media]["schema"]
    data = json.loads(body)
    if not isinstance(data, dict):
        raise OpenAPIViolation(f"{op.operation_id} takes a JSON object")
    for name in schema.get("required", []):
        if name not in data:
            raise OpenAPIViolation(f"{op.operation_id}: required field {name!r} missing")
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name, value in data.items():
        if name not in properties:
            raise OpenAPIViolation(f"{op.operation_id}: undeclared field {name!r}")
        _check_type(f"{op.operation_id}.{name}", value, properties[name])


def validate_github_request(
    method: str, url: str, headers: Mapping[str, str], body: bytes, *, bases: tuple[str, ...]
) -> str:
    """Raise `OpenAPIViolation` unless the request is one GitHub documents.

    Args:
        method: The HTTP method.
        url: The absolute URL.
        headers: The request headers (any case).
        body: The raw body.
        bases: The API and upload base URLs the request may start with.

    Returns:
        The matched operation id, e.g. `repos/create-commit-status`.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("x-github-api-version") != API_VERSION:
        raise OpenAPIViolation(f"X-GitHub-Api-Version must be pinned to {API_VERSION}")
    if not lowered.get("authorization", "").startswith("Bearer "):
        raise OpenAPIViolation("Authorization must be a Bearer token")
    parts = urlsplit(url)
    origin_path = f"{parts.scheme}://{parts.netloc}{parts.path}"
    base = next((b for b in bases if origin_path.startswith(b.rstrip("/") + "/")), None)
    if base is None:
        raise OpenAPIViolation(f"{url} is under none of {bases}")
    path = origin_path[len(base.rstrip("/")) :]
    for op in operations():
        match = op.pattern.match(path)
        if op.method != method.upper() or match is None:
            continue
        for name, raw in match.groupdict().items():
            _check_text_param(f"path {name}", unquote(raw), op.path_params[name]["schema"])
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for name, param in op.query_params.items():
            if param.get("required") and name not in query:
                raise OpenAPIViolation(f"{op.operation_id}: query {name!r} missing")
        for name, raw in query.items():
            if name not in op.query_params:
                raise OpenAPIViolation(f"{op.operation_id}: undeclared query {name!r}")
            _check_text_param(f"query {name}", raw, op.query_params[name]["schema"])
        _check_body(op, lowered, body)
        return op.operation_id
    raise OpenAPIViolation(f"no operation {method} {path} in GitHub's description")


def validate_forge_request(request: ForgeRequest, *, bases: tuple[str, ...]) -> str:
    """Validate a built `ForgeRequest` as it would go on the wire; return the operation id."""
    headers = dict(request.headers)
    body = b""
    if request.json is not None:
        body = json.dumps(request.json).encode()
        headers["Content-Type"] = "application/json"
    return validate_github_request(request.method, request.url, headers, body, bases=bases)
