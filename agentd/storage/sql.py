"""Named SQL, and the transaction handle the storage rules run on.

Every statement agentd sends is in a ``.sql`` file under ``sql/``, under a name (procrastinate's
way), so a reader can grep it: ``sql/queries.sql`` holds those both backends run as written,
``sql/<dialect>/queries.sql`` those each backend writes its own way (JSON, time arithmetic,
LangGraph's checkpoint tables). Parameters are named (``:name``); a backend whose driver wants
another style converts the text once (``Dialect.convert``).

The few statements whose shape depends on the request (search filters, the columns an update
sets) are put together by ``Where`` and the dialect's fragment methods, with parameters only."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any

import orjson

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.M)


def sql_file(path: str) -> str:
    return resources.files("agentd.storage").joinpath(f"sql/{path}").read_text()


Queries = Mapping[str, tuple[str, ...]]


def parse_queries(text: str) -> dict[str, tuple[str, ...]]:
    """``-- name: <name>`` starts a query; it runs to the next header. A query is one
    statement or several (each ending with ``;`` at the end of a line, run in order), or none
    (only comments: nothing to do on this backend)."""
    parts = _HEADER.split(text)
    queries: dict[str, tuple[str, ...]] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
        queries[name] = tuple(s.strip() for s in re.split(r";\s*$", code, flags=re.M) if s.strip())
    return queries


@cache
def load_queries(dialect: Dialect) -> Queries:
    """The shared queries and the dialect's own, in the dialect's parameter style; a name
    may be defined in one place only."""
    shared = parse_queries(sql_file("queries.sql"))
    own = parse_queries(sql_file(f"{dialect.name}/queries.sql"))
    if both := shared.keys() & own.keys():
        raise ValueError(f"queries defined both shared and for {dialect.name}: {sorted(both)}")
    return {
        name: tuple(dialect.convert(s) for s in statements)
        for name, statements in {**shared, **own}.items()
    }


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(value: str | bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


class Where:
    """A WHERE clause put together from parts, each value a named parameter."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: dict[str, Any] = {}

    def param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def add(self, part: str) -> None:
        self.parts.append(part)

    def clause(self) -> str:
        return f" WHERE {' AND '.join(self.parts)}" if self.parts else ""


class Dialect:
    """What differs between backends beyond named queries: fragments of dynamic SQL."""

    name: str
    # The column that orders rows inserted in the same microsecond as they were inserted.
    insertion_order: str

    def convert(self, sql: str) -> str:
        """The driver's form of a statement written with ``:name`` parameters."""
        return sql

    def json_equals(self, where: Where, column: str, key: str, value: Any) -> None:
        """``column``'s top-level ``key`` is present and equal to ``value`` (JSON)."""
        raise NotImplementedError

    def in_list(self, where: Where, column: str, values: Sequence[str]) -> None:
        """``column`` is one of ``values`` (any number of them)."""
        raise NotImplementedError

    def contains_text(self, where: Where, column: str, text: str) -> None:
        """``column`` contains ``text``, ignoring case (no pattern characters)."""
        raise NotImplementedError

    def list_param(self, values: Sequence[str]) -> Any:
        """A list of strings as one parameter of a named query that takes one (``ids``)."""
        raise NotImplementedError

    def insert_events(self, tx: Tx, rows: list[dict[str, Any]]) -> int:
        """Insert run events (``insert_run_event``'s parameters), ignoring ones already
        there; returns how many were new."""
        return tx.many("insert_run_event", rows)


class Tx:
    """One transaction: named queries on a DB-API connection (sqlite3 or psycopg, both with
    rows readable by column name)."""

    def __init__(self, conn: Any, queries: Queries, dialect: Dialect):
        self.conn = conn
        self.queries = queries
        self.dialect = dialect

    def _sql(self, name: str) -> str:
        [statement] = self.queries[name]
        return statement

    def one(self, query: str, /, **params: Any) -> Any:
        return self.conn.execute(self._sql(query), params).fetchone()

    def all(self, query: str, /, **params: Any) -> list[Any]:
        return self.conn.execute(self._sql(query), params).fetchall()

    def run(self, query: str, /, **params: Any) -> int:
        """Execute each statement of the query; the number of rows they changed."""
        changed = 0
        for statement in self.queries[query]:
            changed += max(0, self.conn.execute(statement, params).rowcount)
        return changed

    def many(self, query: str, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        cur = self.conn.cursor()
        try:
            cur.executemany(self._sql(query), rows)
            return cur.rowcount  # type: ignore[no-any-return]
        finally:
            cur.close()

    def sql_all(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        """A statement put together at run time (``Where``): its text converted here."""
        return self.conn.execute(self.dialect.convert(sql), params).fetchall()

    def sql_one(self, sql: str, params: Mapping[str, Any]) -> Any:
        return self.conn.execute(self.dialect.convert(sql), params).fetchone()

    def sql_run(self, sql: str, params: Mapping[str, Any]) -> int:
        return self.conn.execute(self.dialect.convert(sql), params).rowcount  # type: ignore[no-any-return]

    @contextmanager
    def savepoint(self, name: str) -> Iterator[None]:
        """Undo what the block wrote if it raises (the exception goes on)."""
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            raise
        finally:
            self.conn.execute(f"RELEASE SAVEPOINT {name}")


def pyformat(sql: str) -> str:
    """``:name`` parameters as ``%(name)s`` (psycopg), ``%`` escaped; ``::type`` casts kept."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
