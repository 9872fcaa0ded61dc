"""The HTTP service: the JSON API under ``/api/v1`` and the pages under ``/`` (FastAPI on uvicorn).

The only room that imports FastAPI, Starlette and uvicorn. It holds no workflow logic of its
own: each route authenticates the caller (``auth``), makes one call to the engine or the
accounts library (through ``calls``, the single adapter), and renders the result or the error
(``problems``: RFC 9457 ``application/problem+json``). CONTRACT §7 fixes paths, keys and codes.
"""
