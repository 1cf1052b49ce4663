"""The runner: configuration, the job store, the worker, forge clients and the CLI.

It is the only package where webhooks, sandbox and forges meet.
"""
