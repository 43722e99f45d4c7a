"""dogops: an image classifier from a data folder to a live, auto-scaled, secured endpoint."""

__version__ = "0.1.0"
