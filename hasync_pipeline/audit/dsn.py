"""Database addresses: the Go-style DSN the cluster secret holds, SQLAlchemy URLs, the embedded default.

    user:pass@tcp(host:3306)/general_db?parseTime=true   ->  mysql+pymysql://user:pass@host:3306/general_db
    sqlite:///path/to/audit.sqlite3                       ->  as is
    (no db_dsn setting)                                  ->  sqlite:///<state dir>/ha-sync-audit.sqlite3

Passwords never appear in logs or errors: use `redact()` for anything shown.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import URL, make_url

from ..settings import default_dsn

# what follows "user:pass@" in a Go DSN: [net(addr)]/db[?params]
_GO_ADDRESS = re.compile(r"^(?:(?P<net>tcp|unix)\((?P<addr>[^)]*)\))?/(?P<db>[^?]*)(?:\?(?P<params>.*))?$")
# Go driver parameters that mean nothing to PyMySQL
_GO_ONLY_PARAMS = {
    "parseTime",
    "loc",
    "allowNativePasswords",
    "timeout",
    "readTimeout",
    "writeTimeout",
    "multiStatements",
    "interpolateParams",
    "tls",
    "collation",
    "maxAllowedPacket",
}


SUPPORTED_BACKENDS = ("mysql", "sqlite")  # what the schema and the store are written and tested for


class DsnError(ValueError):
    """The DSN could not be understood (the message never contains the password)."""


def to_url(dsn: str | None) -> URL:
    """Turn any accepted DSN form into a SQLAlchemy URL (None or empty: the embedded default)."""
    dsn = (dsn or default_dsn()).strip()
    if "://" in dsn:
        try:
            url = make_url(dsn)
        except Exception:  # noqa: BLE001 - SQLAlchemy's message may quote the whole URL
            raise DsnError("not a valid SQLAlchemy URL (scheme://user:***@host/db)") from None
        if url.drivername in ("mysql", "mariadb"):
            url = url.set(drivername="mysql+pymysql")
        if url.get_backend_name() not in SUPPORTED_BACKENDS:
            raise DsnError(
                f"unsupported database {url.get_backend_name()!r}: the audit tables live in MySQL/"
                "MariaDB (mysql+pymysql://...) or SQLite (sqlite:///path)"
            )
        return _with_mysql_defaults(url)
    at = dsn.rfind("@")  # as the Go driver does: the password may itself hold '@'
    creds, rest = (dsn[:at], dsn[at + 1 :]) if at >= 0 else ("", dsn)
    m = _GO_ADDRESS.match(rest)
    if not m:
        raise DsnError("not a Go-style MySQL DSN (user:pass@tcp(host:3306)/db) nor a SQLAlchemy URL")
    user, _, password = creds.partition(":")
    query = {}
    for part in filter(None, (m.group("params") or "").split("&")):
        key, _, value = part.partition("=")
        if key not in _GO_ONLY_PARAMS:
            query[key] = value
    host = port = None
    if m.group("net") == "unix":
        query["unix_socket"] = m.group("addr")
    else:
        addr = m.group("addr") or "127.0.0.1:3306"
        host, _, port_text = addr.rpartition(":") if ":" in addr else (addr, "", "3306")
        try:
            port = int(port_text or 3306)
        except ValueError:
            raise DsnError(f"bad port {port_text!r} in the DSN") from None
    url = URL.create(
        "mysql+pymysql",
        username=user or None,
        password=password or None,
        host=host,
        port=port,
        database=m.group("db") or None,
        query=query,
    )
    return _with_mysql_defaults(url)


def _with_mysql_defaults(url: URL) -> URL:
    if url.get_backend_name() == "mysql" and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def redact(dsn_or_url: str | URL | None) -> str:
    """A printable form of the address with the password replaced by ***."""
    try:
        url = dsn_or_url if isinstance(dsn_or_url, URL) else to_url(dsn_or_url)
    except DsnError:
        return "<unparseable DSN>"
    return url.render_as_string(hide_password=True)


def scrub(text: str, url: URL) -> str:
    """Remove the password from any message (driver errors sometimes echo connection details)."""
    if url.password:
        text = text.replace(str(url.password), "***")
    return text
