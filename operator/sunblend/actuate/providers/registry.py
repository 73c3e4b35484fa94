"""The node providers this operator can use, each made once at start-up over one API client."""

from __future__ import annotations

from kubernetes import client

from sunblend.actuate.providers import base


def enabled(api: client.ApiClient) -> list[base.NodeProvider]:
    """Every provider, ready to use; a pool (or the operator's default) picks one by name."""
    found: list[base.NodeProvider] = [base.NoProvider()]
    return found
