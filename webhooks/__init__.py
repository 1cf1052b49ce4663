"""Webhook intake: verified forge deliveries become build requests.

This package serves the ASGI app. It never calls a forge or the sandbox; what it
accepts it hands to a `BuildSink` that the composition root passes in.
"""
