"""sunblend: plans and keeps the cheapest blend of committed, spot and on-demand GPU capacity.

The package is layered: ``api`` (models) <- ``core`` (pure decisions) <- adapters and the CLI.
"""

__version__ = "0.1.0"
