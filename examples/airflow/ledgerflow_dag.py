"""Drive ledgerflow from Airflow: one idempotent command per day.

`ledgerflow run --date {{ ds }}` replaces the day's rows in one transaction
per model, so a retry or a re-run never appends; an unchanged day is skipped
by its input fingerprint. Exit codes: 0 success, 1 a run failed (Airflow
retries), 2 usage/config error (retrying will not help), 99 skipped (a
source is unavailable; BashOperator marks the task skipped).

catchup=False on purpose: the incident this tool exists to prevent was
catch-up re-running every missed day. Repair gaps explicitly with
`ledgerflow backfill --from D --to D` (idempotent too).
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

PROJECT = "/srv/ledgerflow"  # the directory holding ledgerflow.toml

with DAG(
    dag_id="ledgerflow_daily",
    start_date=datetime(2026, 11, 1),
    schedule="30 0 * * *",  # after midnight UTC, once the day is compacted
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "sla": timedelta(hours=2),
    },
    tags=["ledgerflow"],
) as dag:
    BashOperator(
        task_id="run_models",
        cwd=PROJECT,
        bash_command="ledgerflow --log-format json run --date {{ ds }}",
        skip_on_exit_code=99,
    )
