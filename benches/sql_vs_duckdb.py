#!/usr/bin/env python3
"""paystream's SQL and DuckDB side by side, on the same data, in one run.

    sql_vs_duckdb.py PAYSTREAM_BINARY DATA_DIR [RUNS]

DATA_DIR: a decided embedded log, e.g. from `paystream demo --data-dir DIR`. The script
exports its decisions and labels topics as JSON lines (`paystream log dump`), starts
`paystream sql` over DATA_DIR, and runs three queries RUNS times each (default 5) on
both:

  1. outcome counts and amount sums;
  2. declines per merchant per day;
  3. the top 10 merchants by fraud reports joined to decisions.

paystream is timed from psycopg (the query's round trip on the PostgreSQL wire): its
first run of each query decodes the log's records it reads, later runs find them in
the endpoint's scan cache (`--scan-cache-bytes-max`); both are reported. DuckDB runs in
process, over the JSON files with read_json (reading them each time), and over tables
loaded in memory first. All must give the same rows before any time is reported.
Prints a Markdown table of milliseconds (medians of the runs after the first) and the
ratios DuckDB/paystream (at least 1.0: paystream as fast or faster).

Needs psycopg and duckdb (the venvs deploy/check/sql-clients.sh and this file's README
section create).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb
import psycopg

PASSWORD = "benchmark-password-1"

QUERIES = {
    "outcomes and amounts": (
        "SELECT outcome, count(*) AS n, sum(amount_minor) AS amount_minor "
        "FROM decisions GROUP BY outcome ORDER BY outcome",
        "SELECT outcome, count(*) AS n, "
        "sum(CAST(round(CAST(amount AS DECIMAL(18,2)) * 100) AS BIGINT)) AS amount_minor "
        "FROM {decisions} GROUP BY outcome ORDER BY outcome",
    ),
    "declines per merchant per day": (
        "SELECT merchant_id, CAST(date_trunc('day', event_time) AS DATE) AS day, count(*) AS declines "
        "FROM decisions WHERE outcome = 'decline' GROUP BY 1, 2 ORDER BY declines DESC, 1, 2",
        "SELECT merchant_id, CAST(date_trunc('day', CAST(event_time AS TIMESTAMPTZ)) AS DATE) AS day, "
        "count(*) AS declines FROM {decisions} WHERE outcome = 'decline' GROUP BY 1, 2 "
        "ORDER BY declines DESC, 1, 2",
    ),
    "top merchants by fraud reports": (
        "SELECT d.merchant_id, count(*) AS frauds FROM labels l JOIN decisions d "
        "ON l.payment_id = d.payment_id WHERE l.is_fraud GROUP BY d.merchant_id "
        "ORDER BY frauds DESC, d.merchant_id LIMIT 10",
        "SELECT d.merchant_id, count(*) AS frauds FROM {labels} l JOIN {decisions} d "
        "ON l.payment_id = d.payment_id WHERE l.is_fraud GROUP BY d.merchant_id "
        "ORDER BY frauds DESC, d.merchant_id LIMIT 10",
    ),
}


def timed(run, runs):
    """(first run's ms, median ms of the later runs, rows)."""
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1000)
    return times[0], statistics.median(times[1:] or times), result


def normal(rows):
    return [tuple(str(value) for value in row) for row in rows]


def main():
    binary, data_dir = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    work = tempfile.mkdtemp(prefix="paystream-duckdb.")
    files = {}
    for topic in ("decisions", "labels"):
        files[topic] = os.path.join(work, f"{topic}.jsonl")
        with open(files[topic], "w") as out:
            subprocess.run([binary, "log", "dump", topic, "--data-dir", data_dir], stdout=out, check=True)
    rows = {topic: sum(1 for _ in open(path)) for topic, path in files.items()}
    print(f"data: {rows['decisions']:,} decisions, {rows['labels']:,} labels "
          f"({os.path.getsize(files['decisions']) >> 20} MiB of decisions as JSON lines)\n")

    log = open(os.path.join(work, "sql.log"), "w+")
    env = dict(os.environ, PAYSTREAM_SQL_PASSWORD=PASSWORD)
    server = subprocess.Popen(
        [binary, "sql", "--sql-addr", "127.0.0.1:0", "--no-metrics", "--data-dir", data_dir,
         "--result-rows-max", "100000000", "--statement-timeout-ms", "600000",
         "--connection-memory-bytes-max", str(8 << 30)],
        stderr=log, env=env)
    try:
        address = None
        for _ in range(120):
            log.seek(0)
            for line in log:
                if line.startswith("sql: postgres://analyst@"):
                    address = line.strip().removeprefix("sql: postgres://analyst@").removesuffix("/paystream")
            if address:
                break
            time.sleep(0.5)
        host, port = address.rsplit(":", 1)
        conn = psycopg.connect(f"postgresql://analyst@{host}:{port}/paystream", password=PASSWORD, autocommit=True)

        duck = duckdb.connect()
        duck.execute("SET TimeZone = 'UTC'")
        # `log dump` wraps each record's value with its key, partition and offset.
        read = {
            topic: f"(SELECT unnest(value) FROM read_json('{path}', format = 'newline_delimited'))"
            for topic, path in files.items()
        }
        for topic, source in read.items():
            duck.execute(f"CREATE TABLE {topic}_loaded AS SELECT * FROM {source}")
        loaded = {topic: f"{topic}_loaded" for topic in files}

        print("| query | paystream first ms | paystream later ms | DuckDB over JSON ms | ratio first "
              "| ratio later | DuckDB in memory ms | ratio later |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (ours, theirs) in QUERIES.items():
            first_ms, our_ms, our_rows = timed(lambda: conn.execute(ours).fetchall(), runs)
            _, json_ms, json_rows = timed(lambda: duck.execute(theirs.format(**read)).fetchall(), runs)
            _, memory_ms, memory_rows = timed(lambda: duck.execute(theirs.format(**loaded)).fetchall(), runs)
            if not (normal(our_rows) == normal(json_rows) == normal(memory_rows)):
                print(f"{name}: results differ\n paystream {our_rows[:5]}\n duckdb {json_rows[:5]}")
                sys.exit(1)
            print(f"| {name} ({len(our_rows)} rows) | {first_ms:.0f} | {our_ms:.0f} | {json_ms:.0f} "
                  f"| {json_ms / first_ms:.2f} | {json_ms / our_ms:.2f} | {memory_ms:.0f} | {memory_ms / our_ms:.2f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
