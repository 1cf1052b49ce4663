"""The `runner` package's error tree: what failed, for which build, and what to do.

Pure: exception classes only, no I/O. Kept apart from the modules that raise them so
that every `runner` module can import it without cycles. Messages never carry secrets.

```
RunnerError                    root of everything `runner` raises on purpose
 ├── ArchiveRejected           a profile archive broke an extraction rule (runner.archive)
 ├── ConfigError               the configuration file or environment is wrong (runner.settings)
 ├── ForgeError                a forge API call failed (runner.forges.exceptions has its tree)
 ├── IllegalTransition         a build event the lifecycle table forbids (runner.jobs)
 ├── ReleaseFilesGone          a tag build's files to publish are gone (runner.publish)
 └── StoreError                the job store cannot do what was asked (runner.store)
      ├── BuildNotFound        no build with that id
      └── NotificationNotFound no pending notification with that id
```
"""

from __future__ import annotations

from webhooks.bounds import quoted
from webhooks.build import BuildState


class RunnerError(Exception):
    """Root of the errors the `runner` package raises on purpose."""


class ConfigError(RunnerError):
    """The configuration is wrong; the message names the key and never its secret value."""


class IllegalTransition(RunnerError):
    """An event that the build lifecycle table does not allow in the current state.

    Attributes:
        state: The state the build was in.
        event: The event that was refused: the value of a `runner.jobs.Event`.
        build_id: The build concerned, when known.
    """

    def __init__(self, state: BuildState, event: str, build_id: int | None = None) -> None:
        self.state = state
        self.event = event
        self.build_id = build_id
        subject = f"build {build_id}" if build_id is not None else "a build"
        hint = (
            "a finished build never changes state; retry it to build the commit again"
            if state.is_final
            else "this is a bug in the caller: check the state before sending the event"
        )
        super().__init__(f"{subject} is {state.value}: the event {event!r} is not allowed ({hint})")


class ReleaseFilesGone(RunnerError):
    """A succeeded tag build's files are gone or changed: its release can never be published."""


class StoreError(RunnerError):
    """The job store cannot do what was asked; the message says what to do."""


class BuildNotFound(StoreError):
    """No stored build has this id.

    Attributes:
        build_id: The id that was looked up.
    """

    def __init__(self, build_id: int) -> None:
        self.build_id = build_id
        super().__init__(f"no build with id {build_id} in the job store")


class NotificationNotFound(StoreError):
    """No pending notification has this id (it was already done, or never existed).

    Attributes:
        notification_id: The id that was looked up.
    """

    def __init__(self, notification_id: int) -> None:
        self.notification_id = notification_id
        super().__init__(
            f"no pending notification with id {notification_id} in the job store"
            " (already marked done, or never enqueued)"
        )


class ArchiveRejected(RunnerError):
    """The profile archive breaks a safety rule or is not a valid `.tar.gz` (runner.archive).

    The build ends with an error status quoting the message; the fix is in the profile
    repository (or, for a corrupt download, a retry).

    Attributes:
        entry: The offending member's path as written in the archive, or None when the
            archive as a whole is at fault (corrupt, empty, several top-level entries).
        rule: What is wrong, in words a profile maintainer can act on.
    """

    def __init__(self, rule: str, *, entry: str | None = None) -> None:
        self.entry = entry
        self.rule = rule
        # The entry's name is the archive's choice: quoted in at most 100 characters.
        super().__init__(rule if entry is None else f"archive entry {quoted(entry)} {rule}")
