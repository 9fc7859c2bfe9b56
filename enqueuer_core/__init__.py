"""Enqueuer's library: everything that is not UI (see shared DESIGN.md).

The API (``app.py``), the CLI (``cli.py``) and the dashboard (``pages/``) only parse input
and render output; they call this package, which calls the Google client libraries.
"""
