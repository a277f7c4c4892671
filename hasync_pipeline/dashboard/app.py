"""The dashboard's web app (Starlette, which dagster-webserver already brings): read-only JSON over the audit
tables and one static page.  Errors are JSON with a message; never a stack trace or a DSN."""

from __future__ import annotations

from importlib import resources

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from ..audit import AuditStore, AuditUnavailable
from ..pairs import load_registry
from ..settings import deployment
from . import queries

MAX_LIMIT, MAX_PAGE = 200, 1000


class BadRequest(Exception):
    pass


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"'{name}' is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}")
    return value


def create_app(dsn: str | None = None, dagster_url: str | None = None) -> Starlette:
    settings = deployment()
    store = AuditStore(dsn if dsn is not None else settings.db_dsn, settings.db_timeout)
    registry_pairs = [p.name for p in load_registry().pairs]
    dagster_url = dagster_url if dagster_url is not None else settings.dagster_url
    page = resources.files(__package__).joinpath("static/index.html").read_text()

    def read(fn):
        """Run a read; map bad input to 400 and a dead database to 503."""
        try:
            store.ensure_schema()
            with store.engine.connect() as conn:
                return JSONResponse(fn(conn))
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except AuditUnavailable:
            return JSONResponse({"error": "the audit database is unavailable"}, status_code=503)
        except SQLAlchemyError:
            return JSONResponse({"error": "the audit database is unavailable"}, status_code=503)

    async def index(request: Request):
        return HTMLResponse(page.replace("__DAGSTER_URL__", dagster_url.replace('"', "")))

    async def pairs(request: Request):
        return await run_in_threadpool(read, lambda conn: {"pairs": queries.pairs_summary(conn, registry_pairs)})

    async def iterations(request: Request):
        def q(conn):
            limit = _int_param(request, "limit", 20, 1, MAX_LIMIT)
            pair = request.query_params.get("pair") or None
            return {"iterations": queries.recent_iterations(conn, pair, limit)}

        return await run_in_threadpool(read, q)

    async def operations(request: Request):
        def q(conn):
            iteration_id = _int_param(request, "iteration_id", None, 1, 2**63 - 1)
            size = _int_param(request, "page_size", 100, 1, MAX_PAGE)
            after = _int_param(request, "after", 0, 0, 2**63 - 1)
            if not queries.iteration_exists(conn, iteration_id):
                return {"iteration_id": iteration_id, "operations": [], "next_after": None}
            return queries.operations_page(conn, iteration_id, after, size)

        return await run_in_threadpool(read, q)

    async def healthz(request: Request):
        return await run_in_threadpool(read, lambda conn: {"status": "ok"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/pairs", pairs),
            Route("/api/iterations", iterations),
            Route("/api/operations", operations),
            Route("/healthz", healthz),
        ]
    )
