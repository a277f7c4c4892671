"""The dashboard's web app (Starlette, which dagster-webserver already brings): read-only JSON over the audit
tables, the main page (static, refreshing itself from the JSON), two server-rendered pages (pages.py): an
iteration's operations and a pair's activity, conflicts and trash; and GET /metrics for Prometheus
(metrics.py).  Errors are a message (JSON for the API, a line of HTML for a page); never a stack trace or a
DSN."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..audit import AuditStore, AuditUnavailable
from ..pairs import load_registry
from ..settings import deployment
from . import pages, queries
from .chart import activity_svg
from .metrics import render as render_metrics

MAX_LIMIT, MAX_PAGE = 200, 1000
CHART_DAYS, CONFLICT_DAYS = 7, 30
UNAVAILABLE = "the audit database is unavailable"


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


def _path_int(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"'{raw[:40]}' is not an iteration number")
    return int(raw)


def create_app(dsn: str | None = None, dagster_url: str | None = None) -> Starlette:
    settings = deployment()
    store = AuditStore(dsn if dsn is not None else settings.db_dsn, settings.db_timeout)
    registry_pairs = [p.name for p in load_registry().pairs]
    dagster_url = dagster_url if dagster_url is not None else settings.dagster_url
    static = resources.files(__package__).joinpath("static")
    page, style = static.joinpath("index.html").read_text(), static.joinpath("style.css").read_text()
    trash_days = settings.trash_retain_days

    def read(fn, html: bool = False):
        """Run a read; map bad input to 400 and a dead database to 503.  `html`: fn returns a page (or None:
        not found), errors are a line of HTML."""

        def error(message: str, code: int) -> Response:
            if html:
                body = f'<p class="alert">{escape(message)}</p>'  # it may quote the request
                return HTMLResponse(pages.layout("HA Sync", body), status_code=code)
            return JSONResponse({"error": message}, status_code=code)

        try:
            store.ensure_schema()
            with store.engine.connect() as conn:
                out = fn(conn)
        except BadRequest as exc:
            return error(str(exc), 400)
        except (AuditUnavailable, SQLAlchemyError):
            return error(UNAVAILABLE, 503)
        if not html:
            return JSONResponse(out)
        return HTMLResponse(out) if out is not None else error("not found", 404)

    def since(days: int) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)

    def known_pair(conn, pair: str) -> bool:
        return pair in queries.known_pairs(conn, registry_pairs)

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

    def filters(request: Request) -> dict[str, str]:
        out = {}
        for name, allowed in queries.OPERATION_FILTERS.items():
            value = request.query_params.get(name) or ""
            if value and value not in allowed:
                raise BadRequest(f"'{name}' must be one of {', '.join(allowed)}")
            out[name] = value
        out["prefix"] = (request.query_params.get("prefix") or "")[:1024]
        return out

    async def filtered_operations(request: Request):
        def q(conn):
            iteration_id = _int_param(request, "iteration_id", None, 1, 2**63 - 1)
            size = _int_param(request, "page_size", 100, 1, MAX_PAGE)
            after = _int_param(request, "after", 0, 0, 2**63 - 1)
            chosen = {k: v or None for k, v in filters(request).items()}
            return queries.filtered_operations(conn, iteration_id, after, size, **chosen)

        return await run_in_threadpool(read, q)

    async def iteration_page(request: Request):
        def q(conn):
            iteration_id = _path_int(request, "iteration_id")
            found = queries.iteration(conn, iteration_id)
            if found is None:
                return None
            chosen = filters(request)
            after = _int_param(request, "after", 0, 0, 2**63 - 1)
            ops = queries.filtered_operations(
                conn, iteration_id, after, 100, **{k: v or None for k, v in chosen.items()}
            )
            return pages.iteration_page(found, ops, chosen, dagster_url)

        return await run_in_threadpool(read, q, True)

    async def pair_page(request: Request):
        pair = request.path_params["pair"]

        def q(conn):
            if not known_pair(conn, pair):
                return None
            chart = activity_svg(
                queries.activity(conn, pair, since(CHART_DAYS)),
                since(CHART_DAYS),
                since(0),
                f"{pair}, last {CHART_DAYS} days",
            )
            found = queries.conflicts(conn, pair, since(CONFLICT_DAYS))
            trashed = queries.trashed(conn, pair, since(trash_days))
            return pages.pair_page(pair, chart, found, trashed, CONFLICT_DAYS, trash_days)

        return await run_in_threadpool(read, q, True)

    async def pair_lists(request: Request):
        """/api/conflicts and /api/trash: what the pair page shows, as JSON."""
        pair = request.query_params.get("pair") or ""

        def q(conn):
            if not known_pair(conn, pair):
                raise BadRequest(f"'pair' must be one of {', '.join(queries.known_pairs(conn, registry_pairs))}")
            if request.url.path.endswith("conflicts"):
                return {"pair": pair, "conflicts": queries.conflicts(conn, pair, since(CONFLICT_DAYS))}
            found = queries.trashed(conn, pair, since(trash_days))
            for o in found:
                o["restore"] = pages.restore_command(pair, o)
            return {"pair": pair, "trash": found}

        return await run_in_threadpool(read, q)

    async def stylesheet(request: Request):
        return Response(style, media_type="text/css")

    async def metrics(request: Request):
        body = await run_in_threadpool(render_metrics, store)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request):
        return await run_in_threadpool(read, lambda conn: {"status": "ok"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/pairs", pairs),
            Route("/api/iterations", iterations),
            Route("/api/operations", filtered_operations),
            Route("/api/conflicts", pair_lists),
            Route("/api/trash", pair_lists),
            Route("/iterations/{iteration_id}", iteration_page),
            Route("/pairs/{pair}", pair_page),
            Route("/static/style.css", stylesheet),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ]
    )
