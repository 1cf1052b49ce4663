"""The two Python servers of `bench/intake_bench.py`, one per process.

Run by the bench, not by hand: `python bench/intake_app.py {bare,isorunner} --port P
--workdir DIR`. Both serve with the same `uvicorn.Config` (one process, no access log,
`loop`/`http` on "auto", and the production server's `log_config=None`,
`proxy_headers=False`, `server_header=False`), so the only difference is the app:

- `bare`: one Starlette route, `POST /webhooks/github`, that reads the body and
  answers 202 with an empty body. It verifies nothing and stores nothing: the ceiling.
- `isorunner`: `webhooks.app.create_app` with a real `SQLiteStore` at
  `DIR/isorunner.db` as sink and catalog, opened by a lifespan hook, a GitHub secret
  read from `DIR/secret`, one repository rule (`bench/isorunner`, branch `main`), and
  the production logging (`runner.logs.configure_logging`, console format, stderr).

Like `isorunner serve`, both call `runner.service.freeze_startup_objects` just before
serving.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runner.logs import configure_logging
from runner.service import freeze_startup_objects
from runner.store.sqlite import SQLiteStore
from webhooks.app import create_app
from webhooks.build import Forge
from webhooks.config import RepoRule, WebhookConfig

REPO = "bench/isorunner"
"""The repository every generated push names; the isorunner app has a rule for it."""

PATH = "/webhooks/github"
"""The path both Python apps answer on."""


async def _accept(request: Request) -> Response:
    await request.body()
    return Response(status_code=202)


def bare_app() -> Starlette:
    """Return the ceiling: a route that reads the body and answers 202."""
    return Starlette(routes=[Route(PATH, _accept, methods=["POST"])])


def isorunner_app(workdir: Path) -> Starlette:
    """Return the real intake app over a real SQLite store in `workdir`."""
    secret = SecretStr((workdir / "secret").read_text().strip())
    configure_logging(log_format="console", secrets=[secret])
    store = SQLiteStore(workdir / "isorunner.db")

    @contextlib.asynccontextmanager
    async def open_store() -> AsyncIterator[SQLiteStore]:
        async with store:
            yield store

    config = WebhookConfig(
        public_url="http://127.0.0.1",
        repos=(RepoRule(forge=Forge.GITHUB, name=REPO, branches=("main",)),),
        github_secret=secret,
    )
    return create_app(config, sink=store, catalog=store, lifespan_hooks=[open_store])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "isorunner"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    app = bare_app() if args.kind == "bare" else isorunner_app(args.workdir)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="auto",
        http="auto",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )
    freeze_startup_objects()  # as `isorunner serve` does, for both apps
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
