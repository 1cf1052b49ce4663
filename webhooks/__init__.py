"""Webhook intake and the web app: verified forge deliveries become build requests.

This package serves the ASGI app. It never calls a forge or the sandbox and never
imports `runner`; what it accepts it hands to a `BuildSink` that the composition root
passes in, and what it shows it reads through the other protocols of `build.py`.

- `app.py`: `create_app`, the one app factory, and its lifespan; `state.py`: the
  typed state (`AppState`) the lifespan yields.
- `routes.py`: the endpoints, the only module that touches `Request`, and the one
  mapping of errors (store failures included) to responses.
- `body.py`: a request body read under the size cap.
- `build.py`: the values shared with the runner (`BuildRequest`, `BuildRecord`,
  `BuildState`, `Artifact`…) and the protocols the app depends on (`BuildSink`…).
- `config.py`: `WebhookConfig`, repository rules, `Ignored`, the `Receiver` shape.
- `verify.py`: signature and token checks on the raw body.
- `github.py`, `gitlab.py`: pure: deliveries parsed, filtered and normalised into
  `BuildRequest`s; `payload.py`: what both share.
- `api.py`: the JSON API's pure core; `openapi.py`: its OpenAPI description.
- `pages.py` and `templates/`: the server-rendered build pages; `logview.py`: the
  part of a log a page embeds, escaped.
- `artifacts.py`: a finished build's files, listed and opened safely.
- `logfile.py`, `logresponse.py`, `live.py`: build logs, read line-aligned, served as
  a snapshot, and followed live over server-sent events.
- `health.py`: the readiness answer; `metrics.py`: the app's own metrics.
- `exceptions.py`: the `WebhookError` tree, each error with its HTTP status.
"""
