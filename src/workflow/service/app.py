"""The FastAPI application: ``create_app(engine)``, and ``from_environment()`` for uvicorn.

``workflow serve`` runs uvicorn with ``workflow.service.app:from_environment`` as an app
factory (so that several worker processes each build their own engine on the one database),
passing the command line's options in environment variables (``WORKFLOW_DB``,
``WORKFLOW_DEFINITIONS``, ...).

The access log is written here, not by uvicorn: one line per request with the client address,
the account name (never a token, cookie, password or query string), method, path, status and
time taken.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import workflow
from workflow.engine.facade import Engine
from workflow.errors import WorkflowError
from workflow.runtime.attachments import MAX_BYTES
from workflow.service import api, api_evolution, api_notify, calls, pages, problems
from workflow.service.auth import api_principal

STATIC = Path(__file__).parent / "static"
access_log = logging.getLogger("workflow.service.access")

#: Environment variables the serve command sets for the app factory.
ENV_DB = "WORKFLOW_DB"
ENV_DEFINITIONS = "WORKFLOW_DEFINITIONS"  # os.pathsep-separated
ENV_ALLOW_OVERRIDE = "WORKFLOW_ALLOW_OVERRIDE"  # space-separated
ENV_LOCK_TIMEOUT = "WORKFLOW_LOCK_TIMEOUT"
ENV_STATEMENT_TIMEOUT = "WORKFLOW_STATEMENT_TIMEOUT"

_PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


def thread_limit(engine: Engine) -> int | None:
    """How many requests a worker may run at once: the routes are plain functions, run in
    anyio's thread pool (40 threads by default), more than the database pool can serve (a
    request would then wait for a connection and fail after the pool's timeout, a 503). So
    the threads are as many as the Store can serve (``Store.thread_capacity``); None leaves
    the default."""
    return engine.store.thread_capacity()


def create_app(engine: Engine, *, accounts: Any = None, close_engine: bool = False) -> FastAPI:
    """The service on ``engine``; ``accounts`` defaults to the engine's accounts library."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limit = thread_limit(engine)
        if limit is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = limit
        try:
            yield
        finally:
            if close_engine:
                engine.close()

    app = FastAPI(
        title="workflow",
        version=workflow.__version__,
        summary="Programs of Thailand's Community Development Department as audited state "
        "machines (CONTRACT §7)",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.accounts = accounts if accounts is not None else calls.accounts_of(engine)

    app.add_exception_handler(WorkflowError, problems.workflow_error_handler)
    app.add_exception_handler(RequestValidationError, problems.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, problems.http_error_handler)
    app.add_exception_handler(Exception, problems.internal_error_handler)

    app.include_router(api.router)
    app.include_router(api_evolution.router)
    app.include_router(api_notify.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/v1/openapi.json", include_in_schema=False,
             dependencies=[Depends(api_principal)])
    def openapi() -> dict[str, Any]:
        return api.openapi_document(app)

    app.add_middleware(_LogAndHarden)
    return app


#: The largest request body the service reads: every attachment a fire may carry is at most
#: ``MAX_BYTES``; room for the form around one such file. ``WORKFLOW_MAX_REQUEST_BYTES`` sets it.
DEFAULT_MAX_REQUEST = MAX_BYTES + 1024 * 1024


def max_request_bytes() -> int:
    """``WORKFLOW_MAX_REQUEST_BYTES`` (a positive number of bytes), else the default."""
    raw = os.environ.get("WORKFLOW_MAX_REQUEST_BYTES", "").strip()
    if raw.isdecimal() and 0 < len(raw) <= 15 and int(raw) > 0:
        return int(raw)
    return DEFAULT_MAX_REQUEST


class _LogAndHarden:
    """One access-log line per request, and the security headers on every response.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` runs every request
    through a task group and a memory stream, which cost more than most routes do."""

    def __init__(self, app: ASGIApp, max_body: int | None = None) -> None:
        self.app = app
        self.max_body = max_body if max_body is not None else max_request_bytes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        under_api = scope["path"].startswith("/api/")

        async def send_hardened(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for k, v in _PAGE_HEADERS.items():
                    headers.setdefault(k, v)
                if under_api:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        refusal = self._refuse_body(scope)
        if refusal is not None:
            # Before anything reads the body: a form parser would spool every byte of it
            # (file parts go to a temporary file with no limit of their own).
            status = refusal.status_code
            await refusal(scope, receive, send_hardened)
            client = scope.get("client")
            access_log.info('%s - "%s %s" %d (refused before reading)',
                            client[0] if client else "-", scope["method"], scope["path"],
                            status)
            return
        try:
            await self.app(scope, receive, send_hardened)
        finally:
            client = scope.get("client")
            access_log.info(
                '%s %s "%s %s" %d %.1fms', client[0] if client else "-",
                scope.get("state", {}).get("account", "-"), scope["method"], scope["path"],
                status, (time.perf_counter() - began) * 1000,
            )

    def _refuse_body(self, scope: Scope) -> Response | None:
        """413 for a declared body over the limit; 411 for a body of unknown length (chunked),
        which could only be measured by reading it: browsers, curl and HTTP libraries send
        ``Content-Length`` with a form or a file."""
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is not None:
            text = length.decode("latin-1").strip()
            if not text.isdecimal() or len(text) > 15:
                return problems.problem(400, "UsageError", "Content-Length is not a number", 2)
            if int(text) > self.max_body:
                return problems.problem(
                    413, "UsageError",
                    f"the request body ({int(text)} bytes) is larger than the service takes "
                    f"({self.max_body} bytes)", 2)
            return None
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return problems.problem(411, "UsageError",
                                    "a request body needs a Content-Length", 2)
        return None


def _float(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


def _paths(value: str) -> Sequence[str]:
    return [p for p in value.split(os.pathsep) if p]


def from_environment() -> FastAPI:
    """The app factory uvicorn calls in each worker (``workflow serve``)."""
    engine = Engine(
        os.environ.get(ENV_DB, "sqlite:///workflow.db"),
        _paths(os.environ.get(ENV_DEFINITIONS, "")),
        allow_override=os.environ.get(ENV_ALLOW_OVERRIDE, "").split(),
        lock_timeout=_float(ENV_LOCK_TIMEOUT),
        statement_timeout=_float(ENV_STATEMENT_TIMEOUT),
    )
    return create_app(engine, close_engine=True)


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging, with its access log replaced by ours (no headers, no query)."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "workflow.service": {"handlers": ["stderr"], "level": level.upper(),
                                 "propagate": False},
        },
    }


def serve(
    *,
    db: str,
    definitions: Sequence[str],
    allow_override: Sequence[str],
    lock_timeout: float | None,
    statement_timeout: float | None,
    host: str,
    port: int,
    workers: int,
    forwarded_allow_ips: str | None,
    log_level: str,
) -> None:
    """Run uvicorn with ``workers`` processes, each calling :func:`from_environment`."""
    import uvicorn

    os.environ[ENV_DB] = db
    os.environ[ENV_DEFINITIONS] = os.pathsep.join(str(d) for d in definitions)
    os.environ[ENV_ALLOW_OVERRIDE] = " ".join(allow_override)
    for name, value in ((ENV_LOCK_TIMEOUT, lock_timeout),
                        (ENV_STATEMENT_TIMEOUT, statement_timeout)):
        if value is not None:
            os.environ[name] = str(value)
    uvicorn.run(
        "workflow.service.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config(log_level),
        access_log=False,
        # X-Forwarded-* are honoured only from the proxies named by --forwarded-allow-ips.
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips or "",
        server_header=False,
    )
