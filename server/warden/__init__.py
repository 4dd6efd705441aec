"""Warden: a policy sidecar for applications that call LLMs."""

__version__ = "0.1.0"
