"""Enqueuer's library: everything that is not UI (see shared DESIGN.md).

The emulator comes first; the modules of this package arrive with the core/API issue.
"""
