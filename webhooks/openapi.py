"""The OpenAPI 3.1 description of the app, served at `GET /api/openapi.json`.

Pure: a function of the public URL that returns a JSON-ready dict. The test module
checks it against the app's routes (both directions) and validates real responses
against the schemas below, so a route added without its description fails a test.
"""

from __future__ import annotations

from typing import Any, Final

from webhooks.api import MAX_LIMIT
from webhooks.build import BuildState, Forge, RefKind, ReleaseState

_REF = "#/components/schemas/"
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
_NULLABLE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF + schema}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


_BUILD_ID = {
    "name": "build_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
_FILTERS = [
    {"name": "repo", "in": "query", "schema": {"type": "string", "maxLength": 255}},
    {"name": "state", "in": "query", "schema": {"type": "string", "enum": [*BuildState]}},
    {
        "name": "before",
        "in": "query",
        "description": "Only builds with smaller ids: the `next` link's keyset cursor.",
        "schema": {"type": "integer", "minimum": 1},
    },
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
]

_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What failed and what to do."}},
    },
    "BuildRequest": {
        "type": "object",
        "required": [
            "forge",
            "repo",
            "commit_sha",
            "ref",
            "ref_name",
            "kind",
            "pr_number",
            "trusted",
            "commit_time",
            "delivery_id",
            "source_repo",
            "project_id",
            "web_url",
            "title",
            "sender",
            "previous_sha",
        ],
        "properties": {
            "forge": {"type": "string", "enum": [*Forge]},
            "repo": {"type": "string"},
            "commit_sha": {"type": "string"},
            "ref": {"type": "string"},
            "ref_name": {"type": "string"},
            "kind": {"type": "string", "enum": [*RefKind]},
            "pr_number": {"type": ["integer", "null"]},
            "trusted": {"type": "boolean"},
            "commit_time": {"type": "string", "format": "date-time"},
            "delivery_id": {"type": "string"},
            "source_repo": {"type": "string"},
            "project_id": {"type": ["integer", "null"]},
            "web_url": {"type": "string"},
            "title": {"type": "string"},
            "sender": {"type": "string"},
            "previous_sha": {
                "type": ["string", "null"],
                "description": "The commit the branch or PR pointed at before this push.",
            },
        },
    },
    "Build": {
        "type": "object",
        "required": [
            "id",
            "state",
            "detail",
            "created_at",
            "started_at",
            "finished_at",
            "request",
            "packages",
            "release",
        ],
        "properties": {
            "id": {"type": "integer"},
            "state": {"type": "string", "enum": [*BuildState]},
            "detail": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _NULLABLE_TIME,
            "finished_at": _NULLABLE_TIME,
            "request": {"$ref": _REF + "BuildRequest"},
            "packages": {
                "type": ["array", "null"],
                "items": {"$ref": _REF + "Package"},
                "description": (
                    "Every package the build installed, with the sha256 of the file used,"
                    " sorted by name; null until they are resolved, and in build lists."
                ),
            },
            "release": {
                "oneOf": [{"type": "null"}, {"$ref": _REF + "Release"}],
                "description": "The release a succeeded trusted tag build publishes, else null.",
            },
            "trust": {
                "oneOf": [{"$ref": _REF + "Trust"}, {"type": "null"}],
                "description": "One build only (GET /api/builds/{id}): its signature and "
                "rebuild check, null while it runs or when it wrote none.",
            },
        },
    },
    "Package": {
        "type": "object",
        "required": ["name", "version", "repo", "sha256"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string", "description": "[epoch:]pkgver-pkgrel"},
            "repo": {"type": "string", "description": "The repository it came from."},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
    },
    "Release": {
        "type": "object",
        "description": "Publishing of a tag build's release, after the build, retried until done.",
        "required": [
            *("tag", "state", "attempts", "refusals", "next_attempt_at", "last_error", "url"),
            *("updated_at", "files"),
        ],
        "properties": {
            "tag": {"type": "string"},
            "state": {"type": "string", "enum": [*ReleaseState]},
            "attempts": {"type": "integer", "description": "Failed attempts so far."},
            "refusals": {
                "type": "integer",
                "description": "The latest attempts in a row the forge refused (not outages).",
            },
            "next_attempt_at": _NULLABLE_TIME,
            "last_error": {"type": "string", "description": "Why the last attempt failed."},
            "url": {**_NULLABLE_STRING, "description": "The release page, once published."},
            "updated_at": {"type": "string", "format": "date-time"},
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "size", "sha256", "uploaded"],
                    "properties": {
                        "name": {"type": "string"},
                        "size": {"type": "integer"},
                        "sha256": {"type": "string"},
                        "uploaded": {"type": "boolean", "description": "The forge has it whole."},
                    },
                },
            },
        },
    },
    "Trust": {
        "type": "object",
        "required": [
            "signed_by",
            "public_key_url",
            "reproducibility",
            "differences",
            "difference_count",
        ],
        "properties": {
            "signed_by": {"type": ["string", "null"], "description": "minisign key id."},
            "public_key_url": {"type": ["string", "null"]},
            "reproducibility": {
                "type": "string",
                "enum": ["identical", "different", "not-checked"],
            },
            "differences": {"type": "array", "items": {"type": "string"}},
            "difference_count": {"type": "integer"},
        },
    },
    "BootTest": {
        "type": "object",
        "description": "One boot of the build's ISO in QEMU, in the order they ran.",
        "required": [
            "name",
            "firmware",
            "medium",
            "mode",
            "outcome",
            "required",
            "accelerator",
            "seconds",
            "reason",
            "command_line",
            "screenshot_url",
            "serial_tail",
        ],
        "properties": {
            "name": {"type": "string", "description": 'e.g. "bios", "uefi, usb, kernel"'},
            "firmware": {"type": "string", "enum": ["bios", "uefi"]},
            "medium": {"type": "string", "enum": ["cdrom", "usb"]},
            "mode": {"type": "string", "enum": ["firmware", "kernel"]},
            "outcome": {"type": "string", "enum": ["passed", "failed", "timed_out", "error"]},
            "required": {"type": "boolean", "description": "A failure fails the build."},
            "accelerator": {"type": "string", "description": '"kvm", "tcg", or "" (not run)'},
            "seconds": {"type": "number", "description": "From the guest's start to the end."},
            "reason": {"type": "string"},
            "command_line": {"type": "string"},
            "screenshot_url": {**_NULLABLE_STRING, "description": "The screen at the end (PNG)."},
            "serial_tail": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The last lines of the serial console, oldest first.",
            },
        },
    },
    "BuildList": {
        "type": "object",
        "required": ["builds", "next"],
        "properties": {
            "builds": {"type": "array", "items": {"$ref": _REF + "Build"}},
            "next": {
                **_NULLABLE_STRING,
                "description": "The next (older) page, or null on the last page.",
            },
        },
    },
    "Queued": {
        "type": "object",
        "required": ["build_id", "url"],
        "properties": {
            "build_id": {"type": "integer"},
            "url": {"type": "string", "description": "The build's page."},
            "duplicate": {"type": "boolean", "const": True},
        },
    },
    "Ignored": {
        "type": "object",
        "required": ["ignored"],
        "properties": {"ignored": {"type": "string", "description": "Why nothing is built."}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "const": "ok"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "not ready"]},
            "checks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "ok", "detail"],
                    "properties": {
                        "name": {"type": "string"},
                        "ok": {"type": "boolean"},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    },
}
_SCHEMAS["BuildDetail"] = {
    **_SCHEMAS["Build"],
    "required": [*_SCHEMAS["Build"]["required"], "boot_tests"],
    "properties": {
        **_SCHEMAS["Build"]["properties"],
        "boot_tests": {"type": "array", "items": {"$ref": _REF + "BootTest"}},
    },
}


def _webhook(forge: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"Receive a signed {forge} webhook delivery",
            "tags": ["webhooks"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "202": _json("Queued", "Stored as a new build."),
                "200": {
                    "description": "A repeat of a stored build, or deliberately not built.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [{"$ref": _REF + "Queued"}, {"$ref": _REF + "Ignored"}]
                            }
                        }
                    },
                },
                "400": _error("The body or a required header is malformed."),
                "401": _error("The signature or token is missing or wrong."),
                "404": _error("This forge is not configured."),
                "413": _error("The body is over the size limit."),
                "415": _error("The content type is not accepted."),
                "503": _error("The build store failed; redeliver later."),
            },
        }
    }


def _admin(summary: str, success: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "tags": ["api"],
            "security": [{"adminToken": []}],
            "parameters": [_BUILD_ID],
            "responses": {
                **success,
                "401": _error("The admin bearer token is missing or wrong."),
                "403": _error("No admin token is configured: the admin API is off."),
                "404": _error("No such build."),
                "409": _error("The build's state does not allow this."),
            },
        }
    }


def _download(summary: str, found: str, missing: str) -> dict[str, Any]:
    """The description of a file download path (`/artifacts/` or `/untrusted/`)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "get": {
            "summary": summary,
            "tags": ["pages"],
            "parameters": [_BUILD_ID, name],
            "responses": {
                "200": _text("application/octet-stream", found),
                "404": _error(missing),
            },
        }
    }


def describe(public_url: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the app served at `public_url`."""
    build_page_params = [_BUILD_ID]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "isorunner",
            "version": "0.1.0",
            "description": "Webhook intake, build pages, live logs and the JSON API.",
        },
        "servers": [{"url": public_url.rstrip("/")}],
        "paths": {
            "/webhooks/github": _webhook("GitHub"),
            "/webhooks/gitlab": _webhook("GitLab"),
            "/": {
                "get": {
                    "summary": "Recent builds, newest first (HTML)",
                    "tags": ["pages"],
                    "parameters": _FILTERS,
                    "responses": {
                        "200": _text("text/html", "The build list."),
                        "400": _error("A filter is not valid."),
                    },
                }
            },
            "/builds/{build_id}": {
                "get": {
                    "summary": "A build's page: request, state, log, artifacts (HTML)",
                    "tags": ["pages"],
                    "parameters": build_page_params,
                    "responses": {
                        "200": _text("text/html", "The page."),
                        "404": _error("No such build."),
                    },
                }
            },
            "/builds/{build_id}/log": {
                "get": {
                    "summary": "The build log as plain text",
                    "tags": ["pages"],
                    "parameters": build_page_params,
                    "responses": {
                        "200": _text("text/plain", "The log so far (empty before it starts)."),
                        "206": _text("text/plain", "The requested byte range of the log."),
                        "404": _error("No such build."),
                    },
                }
            },
            "/builds/{build_id}/log/stream": {
                "get": {
                    "summary": "The build log as server-sent events",
                    "description": (
                        "Each message carries whole log lines (one `data:` field per line);"
                        " its id is the byte offset after them. A final `end` event carries"
                        ' `{"state", "detail"}`.'
                    ),
                    "tags": ["pages"],
                    "parameters": [
                        _BUILD_ID,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "description": "Resume after this offset (sent by browsers).",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "description": "Start at this offset when no Last-Event-ID is sent.",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": _text("text/event-stream", "The event stream."),
                        "400": _error("The offset is not a number."),
                        "404": _error("No such build."),
                    },
                }
            },
            "/builds/{build_id}/artifacts/{name}": _download(
                "Download one file of a finished build", "The file.", "No such build or file."
            ),
            "/builds/{build_id}/untrusted/{name}": _download(
                "Download one file of a finished build from a fork (untrusted)",
                "The file, saved as untrusted-<name>.",
                "No such build from a fork, or no such file.",
            ),
            "/builds/{build_id}/boot/{name}": {
                "get": {
                    "summary": "The screen at the end of one boot test of a finished build",
                    "tags": ["pages"],
                    "parameters": [
                        _BUILD_ID,
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[^/]+[.]png$"},
                        },
                    ],
                    "responses": {
                        "200": _text("image/png", "The screenshot."),
                        "404": _error("No such build or screenshot."),
                    },
                }
            },
            "/api/builds": {
                "get": {
                    "summary": "Builds, newest first, filtered and paginated",
                    "tags": ["api"],
                    "parameters": _FILTERS,
                    "responses": {
                        "200": _json("BuildList", "A page of builds."),
                        "400": _error("A parameter is not valid."),
                        "503": _error("The build store could not be read."),
                    },
                }
            },
            "/api/builds/{build_id}": {
                "get": {
                    "summary": "One build, with its boot tests",
                    "tags": ["api"],
                    "parameters": [_BUILD_ID],
                    "responses": {
                        "200": _json("BuildDetail", "The build and its boot tests."),
                        "404": _error("No such build."),
                    },
                }
            },
            "/api/builds/{build_id}/cancel": _admin(
                "Cancel a queued or running build",
                {"200": _json("Build", "The cancelled build.")},
            ),
            "/api/builds/{build_id}/retry": _admin(
                "Build a finished build's commit again, as a new build",
                {"202": _json("Queued", "The new build.")},
            ),
            "/api/builds/{build_id}/publish": _admin(
                "Publish a succeeded tag build's release again, from its files, no rebuild",
                {"202": _json("Build", "The build, its release queued.")},
            ),
            "/api/openapi.json": {
                "get": {
                    "summary": "This description",
                    "tags": ["api"],
                    "responses": {"200": {"description": "OpenAPI 3.1 document."}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "tags": ["health"],
                    "responses": {"200": _json("Health", "Alive.")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Whether the service can take builds, check by check",
                    "tags": ["health"],
                    "responses": {
                        "200": _json("Readiness", "Every check passed."),
                        "503": _json("Readiness", "At least one check failed."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text format)",
                    "tags": ["health"],
                    "responses": {"200": _text("text/plain", "The metrics.")},
                }
            },
            "/signing-key.pub": {
                "get": {
                    "summary": "The minisign public key release files are signed with",
                    "tags": ["pages"],
                    "responses": {
                        "200": _text("text/plain", "The minisign public key file."),
                        "404": _error("This server signs nothing (no [signing] key_file)."),
                    },
                }
            },
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The `server.admin_token` setting.",
                }
            },
        },
    }
