"""The build sandbox: hardened systemd-nspawn containers that turn a profile into an ISO.

It knows nothing of forges or HTTP.
"""
