"""dogops: an image classifier from a data folder to a live, auto-scaled, secured endpoint.

The library under the flows: settings, the exception tree, plain functions, the backend interface
and its factory (`backends/`), and the two backends (`local/`, `aws/`). It imports neither the
flows nor the tasks; the entry points that do live in `dogops_cli/`.
"""

__version__ = "0.1.0"
