"""Publishing: what a finished build puts on its forge, from the store's outbox.

- `files.py`: a build's files to publish, their digests and their order (file I/O).
- `release.py`: `Publisher`, the outbox's release step: one attempt per due `RELEASE`
  notification, its progress and outcome recorded in the store, retried with backoff
  across restarts and outages until published or refused for good (I/O shell).

The decisions about what the forge already has and what is left to do are pure and
live with the forge clients (`runner.forges.releaseplan`), which both forges share.
"""

from runner.publish.files import release_files
from runner.publish.release import REFUSAL_ATTEMPTS, Publisher

__all__ = ["REFUSAL_ATTEMPTS", "Publisher", "release_files"]
