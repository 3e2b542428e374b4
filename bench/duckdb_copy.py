#!/usr/bin/env python3
"""What a data engineer would write instead of ledgerflow, for issue 25's
comparison: the project's default models run by DuckDB over the same day
partitions, each day's output COPYed (CSV) into PostgreSQL tables with the
same keys, a day replaced in one transaction (DELETE + COPY).

    duckdb_copy.py PROJECT_DIR PG_URL SCHEMA FROM TO [MEMORY_LIMIT] [THREADS]

PROJECT_DIR is a `ledgerflow bench --dir D` project (D/project): its
models/*.sql and data/batch. Run it under `/usr/bin/time -f "%e s %M KiB"`
for wall time and peak RSS. Needs `pip install duckdb "psycopg[binary]"`.
"""

import datetime as dt
import os
import sys
import tempfile
import time

import duckdb
import psycopg

MODELS = [
    # (model, key, the column a day is replaced by)
    ("user_activity_agg", "day, address", "day"),
    ("block_daily_metrics", "day", "day"),
    ("realtime_dashboard", "minute", "minute"),
]

PG_TYPES = {
    "BIGINT": "bigint",
    "INTEGER": "bigint",
    "HUGEINT": "numeric",
    "DOUBLE": "double precision",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "VARCHAR": "text",
}


def model_sql(project, name, day):
    """The model's SQL with the day's parameters bound as literals (and the
    one DataFusion-only cast DuckDB spells differently)."""
    with open(os.path.join(project, "models", name + ".sql")) as f:
        sql = f.read()
    nxt = day + dt.timedelta(days=1)
    sql = (
        sql.replace("$start", f"TIMESTAMPTZ '{day} 00:00:00+00'")
        .replace("$end", f"TIMESTAMPTZ '{nxt} 00:00:00+00'")
        .replace("$day", f"'{day}'")
        .replace("$run_at", "now()")
    )
    for f in ("max", "min"):
        sql = sql.replace(f'CAST({f}("timestamp") AS BIGINT)', f'epoch_us({f}("timestamp"))')
    return sql


def pg_type(duck):
    if duck.startswith("DECIMAL"):
        return "numeric" + duck[len("DECIMAL"):]
    return PG_TYPES[duck]


def main():
    project, url, schema, first, last = sys.argv[1:6]
    memory = sys.argv[6] if len(sys.argv) > 6 else "512MB"
    threads = int(sys.argv[7]) if len(sys.argv) > 7 else os.cpu_count()
    first, last = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    batch = os.path.join(project, "data", "batch")
    duck = duckdb.connect()
    duck.execute(f"SET memory_limit = '{memory}'; SET threads = {threads}; SET TimeZone = 'UTC'")
    pg = psycopg.connect(url, autocommit=True)
    pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    created = set()
    started = time.monotonic()
    day = first
    with tempfile.TemporaryDirectory() as tmp:
        while day <= last:
            day_started = time.monotonic()
            for table in ("blocks", "transactions"):
                duck.execute(
                    f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM "
                    f"read_parquet('{batch}/{table}/date={day}/*.parquet')"
                )
            # Dependents read the day's user activity, as in ledgerflow.
            duck.execute(
                "CREATE OR REPLACE TEMP TABLE user_activity_agg AS "
                + model_sql(project, "user_activity_agg", day)
            )
            for name, key, column in MODELS:
                select = (
                    "SELECT * FROM user_activity_agg"
                    if name == "user_activity_agg"
                    else model_sql(project, name, day)
                )
                csv = os.path.join(tmp, name + ".csv")
                duck.execute(f"COPY ({select}) TO '{csv}' (HEADER false)")
                table = f'"{schema}"."{name}"'
                if name not in created:
                    cols = duck.execute(f"DESCRIBE {select}").fetchall()
                    ddl = ", ".join(f'"{c[0]}" {pg_type(c[1])}' for c in cols)
                    pg.execute(f"CREATE TABLE IF NOT EXISTS {table} ({ddl}, PRIMARY KEY ({key}))")
                    created.add(name)
                nxt = day + dt.timedelta(days=1)
                with pg.transaction():
                    if column == "day":
                        pg.execute(f"DELETE FROM {table} WHERE day = %s", (day,))
                    else:
                        pg.execute(
                            f"DELETE FROM {table} WHERE {column} >= %s AND {column} < %s",
                            (
                                dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc),
                                dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=dt.timezone.utc),
                            ),
                        )
                    with pg.cursor().copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy:
                        with open(csv, "rb") as f:
                            while chunk := f.read(1 << 20):
                                copy.write(chunk)
            print(f"{day}: {time.monotonic() - day_started:.2f} s", flush=True)
            day = nxt
    print(f"total: {time.monotonic() - started:.2f} s")


if __name__ == "__main__":
    main()
