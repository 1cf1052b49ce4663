"""Checks GitHub requests against the trimmed GitHub REST OpenAPI description.

Pure: `OpenApiCheck.check(...)` takes what was received and returns the violations as
sentences. It checks what isorunner can get wrong: that the method and path template
exist, on the right host (API or uploads), required query parameters, integer path
parameters, and the JSON body (required, required fields, types, enums, unknown fields).
Unknown fields are stricter than GitHub, which ignores them; here they catch typos.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

Area = Literal["api", "uploads"]
JsonObject = dict[str, object]

# The copy kept beside the recorded GitHub responses; see tests/samples/forges/README.md.
_SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "forges"
DEFAULT_SPECS = (
    _SAMPLES / "github-rest-trimmed.openapi.json",
    _SAMPLES / "github-app-supplement.openapi.json",
)

_JSON_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True, slots=True)
class _Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    area: Area
    parameters: tuple[JsonObject, ...]
    body: JsonObject | None
    body_required: bool


def _as_object(value: object) -> JsonObject:
    return cast(JsonObject, value) if isinstance(value, dict) else {}


class OpenApiCheck:
    """The operations of an OpenAPI description, ready to check requests against."""

    def __init__(self, spec_paths: Sequence[Path] = DEFAULT_SPECS) -> None:
        self._operations: list[_Operation] = []
        self._components: dict[str, JsonObject] = {}
        for spec_path in spec_paths:
            spec = _as_object(json.loads(spec_path.read_text(encoding="utf-8")))
            for section, entries in _as_object(spec.get("components")).items():
                self._components.setdefault(section, {}).update(_as_object(entries))
            for template, item in _as_object(spec.get("paths")).items():
                for method, raw_op in _as_object(item).items():
                    op = self._operation(method, template, _as_object(raw_op))
                    self._operations.append(op)

    def _resolve(self, node: JsonObject) -> JsonObject:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        found: object = {"components": self._components}
        for part in ref.removeprefix("#/").split("/"):
            found = _as_object(found).get(part)
        return _as_object(found)

    def _operation(self, method: str, template: str, op: JsonObject) -> _Operation:
        params = tuple(
            self._resolve(_as_object(p)) for p in cast(list[object], op.get("parameters", []))
        )
        multi = {p.get("name") for p in params if p.get("x-multi-segment")}

        def segment(match: re.Match[str]) -> str:
            return f"(?P<{match[1]}>.+)" if match[1] in multi else f"(?P<{match[1]}>[^/]+)"

        regex = re.sub(
            r"\{(\w+)\}", segment, re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
        )
        servers = cast(list[object], op.get("servers", []))
        area: Area = (
            "uploads" if any("uploads" in str(_as_object(s).get("url")) for s in servers) else "api"
        )
        body = _as_object(op.get("requestBody"))
        schema = _as_object(
            _as_object(_as_object(body.get("content")).get("application/json")).get("schema")
        )
        return _Operation(
            method=method.upper(),
            template=template,
            pattern=re.compile(regex),
            area=area,
            parameters=params,
            body=self._resolve(schema) if schema else None,
            body_required=bool(body.get("required")) and bool(schema),
        )

    def check(
        self, method: str, area: Area, path: str, query: Mapping[str, str], body: object | None
    ) -> list[str]:
        """Return the ways a request departs from the description (empty when it conforms).

        Args:
            method: HTTP method.
            area: "api" for the API host, "uploads" for the uploads host.
            path: Decoded path below the host, e.g. `/repos/o/r/statuses/<sha>`.
            query: Query parameters.
            body: Decoded JSON body, or None when there was none.

        Returns:
            One sentence per violation, each naming the method and path.
        """
        where = f"{method} {path}"
        templates = [op for op in self._operations if op.pattern.fullmatch(path)]
        if not templates:
            return [f"{where}: no path in the OpenAPI description matches"]
        ops = [op for op in templates if op.method == method.upper()]
        if not ops:
            return [f"{where}: {templates[0].template} has no {method.upper()} operation"]
        op = ops[0]
        problems: list[str] = []
        if op.area != area:
            problems.append(f"{where}: {op.template} belongs on the {op.area} host, not {area}")
        match = op.pattern.fullmatch(path)
        assert match is not None
        for param in op.parameters:
            name, schema = str(param.get("name")), _as_object(param.get("schema"))
            if param.get("in") == "query" and param.get("required") and name not in query:
                problems.append(f"{where}: required query parameter {name!r} missing")
            integer = param.get("in") == "path" and schema.get("type") == "integer"
            if integer and not match[name].isdigit():
                problems.append(f"{where}: path parameter {name!r} is not an integer")
        if op.body is None:
            return problems
        if body is None:
            if op.body_required:
                problems.append(f"{where}: JSON body required")
            return problems
        problems.extend(f"{where}: {p}" for p in self._check_object(op.body, body))
        return problems

    def _check_object(self, schema: JsonObject, body: object) -> list[str]:
        if not isinstance(body, dict):
            return [f"body must be a JSON object, got {type(body).__name__}"]
        props = _as_object(schema.get("properties"))
        problems = [
            f"required field {name!r} missing"
            for name in cast(list[str], schema.get("required", []))
            if name not in body
        ]
        for key, value in cast(JsonObject, body).items():
            if key not in props:
                problems.append(f"unknown field {key!r}")
                continue
            prop = self._resolve(_as_object(props[key]))
            if value is None:
                if not prop.get("nullable"):
                    problems.append(f"field {key!r} may not be null")
                continue
            expected = _JSON_TYPES.get(str(prop.get("type")))
            is_bool = isinstance(value, bool)
            if expected is not None and (
                not isinstance(value, expected) or (is_bool and prop.get("type") != "boolean")
            ):
                problems.append(f"field {key!r} must be {prop.get('type')}, got {value!r}")
                continue
            enum = prop.get("enum")
            if isinstance(enum, list) and value not in enum:
                problems.append(f"field {key!r} = {value!r} is not one of {enum}")
        return problems
