"""The HTTP API's parts, one concept each; ``app.py`` at the repository root puts them together
(``create_app``, the routes) and is what ``uvicorn app:app`` loads.

    errors.py     the one failure shape, and a validation error told as what to send instead
    body.py       the request body: strict JSON (UTF-8, no NaN, no half surrogate pair), its
                  size cap, and the outermost guard (413 unread, never a 500)
    acting.py     who calls: the route that names its caller before the body is read
    fast_path.py  the everyday POST /enqueue answered by the route's own parts without
                  FastAPI's routing and dependencies; anything else goes on to the app
    collector.py  the server process's garbage collector: start-up frozen, young collections
                  when garbage has built up (``uvicorn app:app`` only, not ``create_app``)
    contract.py   what ``/openapi.json`` says: the answers, every status with real examples,
                  the request as a union of one branch per worker of the registry

Like ``app.py``, these only parse requests, name the caller and render answers; the logic is
in ``enqueuer_core``.
"""
