"""The error every read-only adapter raises when the API server cannot be read.

``observe.snapshot`` turns it into an unreadable ``Snapshot`` with the reason; nothing else is
made up when the cluster cannot be read.
"""

from __future__ import annotations


class ClusterUnavailable(Exception):
    """The API server could not be read; try again later."""
