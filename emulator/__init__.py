"""A local Google for Enqueuer: Cloud Tasks v2 over gRPC, an OIDC issuer, state in SQLite.

Any Cloud Tasks client, in any language, can use it unchanged; nothing here imports
``enqueuer_core``. Start it with ``python -m emulator``.
"""
