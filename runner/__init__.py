"""The runner: configuration, the job store, the worker, forge clients and the CLI.

It is the only package where webhooks, sandbox and forges meet.

- `__main__.py`: the `isorunner` command (`serve`, `check`, `build`); loads `Settings`.
- `settings.py`: `Settings`, the one configuration object, and its sections.
- `wiring.py`: builds the components from `Settings` (`running_service` and the
  sandbox, web app and forge client configurations).
- `service.py`: `isorunner serve`: runs what `wiring` builds, with the web app.
- `check.py`: `isorunner check`; `localbuild.py`: `isorunner build`.
- `jobs.py`: the build lifecycle's transition table and the store's values.
- `store/`: the job store (`JobStore`, `open_store`, the SQLite store).
- `worker.py`: claims queued builds and runs them; `WorkerSink` for the web app.
- `pipeline.py`: one build from fetch to publish; `archive.py`, `gzipstream.py`:
  the profile archive, extracted safely.
- `artifacts.py`, `checksums.py`: a finished build's ISOs and their sums files.
- `buildlogs.py`: build logs on disk; `retention.py`: old builds forgotten.
- `notifications.py`: commit statuses, from the store's outbox to the forge.
- `publish/`: tag builds' releases, from the store's outbox to the forge, resumed
  and retried until published or refused (see its `__init__`).
- `forges/`: forge clients (see its `__init__`).
- `web.py`: adapters giving the web app what it reads from the runner.
- `metrics.py`: the runner's Prometheus metrics; `logs.py`: process logging.
- `exceptions.py`: the `RunnerError` tree.
"""
