"""Drive ledgerflow from Airflow 3: one idempotent command per day.

`ledgerflow run --date {{ ds }}` replaces the day's rows in one transaction
per model, so a retry or a re-run never appends; an unchanged day is skipped
by its input fingerprint. Exit codes: 0 success, 1 a run failed (Airflow
retries), 2 usage/config error (retrying will not help), 99 skipped (a
source is unavailable under `speed.on_unavailable = "skip"`; the task is
marked skipped).

catchup=False on purpose: the incident this tool exists to prevent was
catch-up re-running every missed day. Repair gaps explicitly with
`ledgerflow backfill --from D --to D` (idempotent too).

The 2-hour SLA is a Deadline Alert (Airflow 3.1+; `sla` in default_args is
dropped silently since Airflow 3): when a run is not done 2 hours after its
logical date, `deadline_missed` runs on the triggerer. Replace its body with
a notifier of yours (Slack, PagerDuty, ...), or point ledgerflow's own
`scheduler.webhook` at your alerting.

Set LEDGERFLOW_PROJECT (the directory holding ledgerflow.toml) and, if the
binary is not on PATH, LEDGERFLOW_BIN in the workers' environment
(LEDGERFLOW_RETRIES overrides the 3 retries).
"""

import logging
import os
import shlex
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow.sdk.definitions.deadline import (
    AsyncCallback,
    DeadlineAlert,
    DeadlineReference,
)

PROJECT = os.environ.get("LEDGERFLOW_PROJECT", "/srv/ledgerflow")
LEDGERFLOW = os.environ.get("LEDGERFLOW_BIN", "ledgerflow")
RETRIES = int(os.environ.get("LEDGERFLOW_RETRIES", "3"))


async def deadline_missed(**context):
    """A run of the DAG missed its 2-hour deadline."""
    logging.getLogger("ledgerflow").error(
        "ledgerflow_daily missed its 2-hour deadline: %s", context
    )


with DAG(
    dag_id="ledgerflow_daily",
    start_date=datetime(2026, 11, 1),
    schedule="30 0 * * *",  # after midnight UTC, once the day is compacted
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    },
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=timedelta(hours=2),
        callback=AsyncCallback(deadline_missed),
    ),
    tags=["ledgerflow"],
) as dag:
    BashOperator(
        task_id="run_models",
        cwd=PROJECT,
        bash_command=f"{shlex.quote(LEDGERFLOW)} --log-format json run --date {{{{ ds }}}}",
        skip_on_exit_code=99,
    )
