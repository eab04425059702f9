#!/usr/bin/env python3
"""Real PostgreSQL drivers against a running `paystream sql`: psycopg 3 (extended protocol
with typed parameters, and the simple protocol through a client-side-binding cursor)
and asyncpg (binary results, prepared statements, type introspection). Every answer is
checked against what `paystream log dump` shows of the same log.

    sql_clients.py PAYSTREAM_BINARY DATA_DIR HOST:PORT PASSWORD

Exits 1, naming the failed check, at the first wrong answer.
"""

import asyncio
import datetime
import json
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal

import asyncpg
import psycopg

binary, data_dir, address, password = sys.argv[1:5]
host, port = address.rsplit(":", 1)
DSN = f"postgresql://analyst@{host}:{port}/paystream"


def dump(topic):
    out = subprocess.run(
        [binary, "log", "dump", topic, "--data-dir", data_dir], check=True, capture_output=True, text=True
    ).stdout
    return [json.loads(line)["value"] for line in out.splitlines() if line.strip()]


def check(name, got, want):
    if got != want:
        print(f"FAILED {name}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok {name}: {got!r}")


decisions = dump("decisions")
by_outcome = Counter(d["outcome"] for d in decisions)
# Amounts on the log are exact decimal strings; every currency here has 2 decimals.
amount_minor = sum(int(Decimal(d["amount"]) * 100) for d in decisions)
over_100 = sum(1 for d in decisions if Decimal(d["amount"]) * 100 > 10_000)
first_day = min(d["event_time"][:10] for d in decisions)
# A statement that would run for hours.
ENDLESS = "SELECT count(*) FROM generate_series(1, 1000000000000)"


def with_psycopg():
    with psycopg.connect(DSN, password=password, connect_timeout=10) as conn:
        # Extended protocol, server-side parameters with declared types.
        rows = conn.execute(
            "SELECT outcome, count(*) AS n FROM decisions GROUP BY outcome ORDER BY outcome"
        ).fetchall()
        check("psycopg: decisions by outcome", dict(rows), dict(by_outcome))
        (total,) = conn.execute("SELECT sum(amount_minor) FROM decisions").fetchone()
        check("psycopg: sum of amount_minor", total, amount_minor)
        (count,) = conn.execute("SELECT count(*) FROM decisions WHERE amount_minor > %s", (10_000,)).fetchone()
        check("psycopg: typed integer parameter", count, over_100)
        (count,) = conn.execute(
            "SELECT count(*) FROM decisions WHERE outcome = %s", ("decline",)
        ).fetchone()
        check("psycopg: text parameter", count, by_outcome["decline"])
        (when,) = conn.execute("SELECT min(event_time) FROM decisions").fetchone()
        check("psycopg: timestamptz arrives with its zone", when.tzinfo is not None, True)
        check("psycopg: first day", when.astimezone(datetime.timezone.utc).date().isoformat(), first_day)
        # The simple protocol (what Grafana's panels use), parameters bound client-side.
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT count(*) FROM decisions WHERE outcome = %s", ("approve",))
        check("psycopg simple protocol: approvals", cur.fetchone()[0], by_outcome["approve"])
        # A write is refused, with a clear error, and the connection stays usable.
        try:
            conn.execute("CREATE TABLE t (a INT)")
            check("psycopg: DDL refused", "accepted", "refused")
        except psycopg.Error as error:
            check("psycopg: DDL refused", "read-only" in str(error), True)
        conn.rollback()
        # The view DDL is the views author's: the analyst gets PostgreSQL's
        # insufficient_privilege (42501), over the extended protocol too.
        try:
            conn.execute(
                "CREATE MATERIALIZED VIEW per_hour AS SELECT date_bin(INTERVAL '1 hour', event_time) "
                "AS window_start, count(*) AS n FROM decisions GROUP BY 1"
            )
            check("psycopg: view DDL refused to the analyst", "accepted", "refused")
        except psycopg.Error as error:
            check("psycopg: view DDL refused to the analyst (42501)", error.sqlstate, "42501")
        conn.rollback()
        check("psycopg: usable after an error", conn.execute("SELECT 1").fetchone()[0], 1)
        # A client may shorten the statement timeout (the server's is 60 s): the statement
        # is then cancelled after 1 s, with PostgreSQL's SQLSTATE, which psycopg maps to
        # its QueryCanceled.
        conn.execute("SET statement_timeout = 1000")
        started = time.monotonic()
        try:
            conn.execute(ENDLESS)
            check("psycopg: statement timeout", "finished", "QueryCanceled")
        except psycopg.errors.QueryCanceled as error:
            check("psycopg: statement timeout is QueryCanceled (57014)", error.sqlstate, "57014")
        check("psycopg: the client's timeout, well before the server's 60 s", time.monotonic() - started < 30, True)
        conn.rollback()


async def with_asyncpg():
    conn = await asyncpg.connect(DSN, password=password, timeout=10)
    try:
        rows = await conn.fetch("SELECT outcome, count(*) AS n FROM decisions GROUP BY outcome ORDER BY outcome")
        check("asyncpg: decisions by outcome", {r["outcome"]: r["n"] for r in rows}, dict(by_outcome))
        count = await conn.fetchval("SELECT count(*) FROM decisions WHERE amount_minor > $1", 10_000)
        check("asyncpg: typed integer parameter", count, over_100)
        count = await conn.fetchval("SELECT count(*) FROM decisions WHERE outcome = $1", "decline")
        check("asyncpg: text parameter", count, by_outcome["decline"])
        total = await conn.fetchval("SELECT sum(amount_minor) FROM decisions")
        check("asyncpg: sum of amount_minor", total, amount_minor)
        when = await conn.fetchval("SELECT min(event_time) FROM decisions")
        check("asyncpg: timestamptz arrives with its zone", when.tzinfo is not None, True)
        statement = await conn.prepare("SELECT count(*) FROM decisions WHERE outcome = $1")
        check("asyncpg: a prepared statement, run twice",
              [await statement.fetchval("approve"), await statement.fetchval("decline")],
              [by_outcome["approve"], by_outcome["decline"]])
        await conn.execute("SET statement_timeout = 1000")
        started = time.monotonic()
        try:
            await conn.fetchval(ENDLESS)
            check("asyncpg: statement timeout", "finished", "QueryCanceledError")
        except asyncpg.exceptions.QueryCanceledError as error:
            check("asyncpg: statement timeout is QueryCanceledError (57014)", error.sqlstate, "57014")
        check("asyncpg: the client's timeout, well before the server's 60 s", time.monotonic() - started < 30, True)
    finally:
        await conn.close()


with_psycopg()
asyncio.run(with_asyncpg())
print("all driver checks passed")
