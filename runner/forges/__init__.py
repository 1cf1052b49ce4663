"""Forge clients: commit statuses, profile archives and releases on GitHub and GitLab.

Layout (R2: pure builders and decoders, one thin transport):

- `request.py`: `ForgeRequest` / `ForgeResponse`, the values between builders and transport.
- `response.py`: pure; rate-limit headers, retry advice, HTTP status → `ForgeError`.
- `github.py`, `gitlab.py`: pure request builders and response decoders per forge.
- `releaseplan.py`: pure; what the forge already has of a release and what is left
  to do (both clients publish by it).
- `client.py`: `ForgeTransport`, the only module doing network I/O (retries, redirects,
  streamed downloads and uploads).
- `github_client.py`, `gitlab_client.py`: `GitHubClient`, `GitLabClient`, thin async
  clients that satisfy the `protocol.ForgeClient` protocol.
- `tokens.py`: the `TokenProvider` seam and `StaticToken`; `github_app.py`: GitHub App
  authentication (JWT, installation tokens cached and refreshed).
- `exceptions.py`: the `ForgeError` tree.

Wiring, in the composition root:

    transport = ForgeTransport(http_client)           # http_client owned by the caller
    github = GitHubClient(transport, StaticToken(pat), api_url=..., context=...)
    gitlab = GitLabClient(transport, StaticToken(token), api_url=..., status_name=...)
"""
