//! The run ledger, checkpoints and check history in PostgreSQL.

use super::*;

pub(super) fn record(row: &Row) -> Result<RunRecord, BoxError> {
    let state: String = row.try_get(3)?;
    Ok(RunRecord {
        id: row.try_get(0)?,
        model: row.try_get(1)?,
        day: row.try_get(2)?,
        state: RunState::parse(&state).ok_or_else(|| format!("unknown state `{state}`"))?,
        attempt: row.try_get(4)?,
        trigger: row.try_get(5)?,
        started_at: row.try_get(6)?,
        finished_at: row.try_get(7)?,
        rows_written: row.try_get(8)?,
        fingerprint: row.try_get(9)?,
        source_layers: row.try_get(10)?,
        error: row.try_get(11)?,
        owner: row.try_get(12)?,
    })
}

#[async_trait]
impl RunLedger for PostgresSink {
    async fn ledger_insert(&self, run: &NewRun) -> Result<i64> {
        let sql = format!(
            "INSERT INTO {} (model, day, state, attempt, \"trigger\", started_at, finished_at, \
             fingerprint, source_layers, error, owner, heartbeat_at) VALUES ($1, $2, $3, $4, $5, \
             CASE WHEN $6 THEN now() END, CASE WHEN $7 THEN now() END, $8, $9, $10, $11, now()) \
             RETURNING id",
            self.table(ledger::TABLE)
        );
        let row = self
            .client()
            .await?
            .query_one(
                &sql,
                &[
                    &run.model,
                    &run.day,
                    &run.state.as_str(),
                    &run.attempt,
                    &run.trigger,
                    &(run.state == RunState::Running),
                    &is_finished(run.state),
                    &run.fingerprint,
                    &run.source_layers,
                    &run.error,
                    &run.owner,
                ],
            )
            .await
            .map_err(|e| {
                self.fail(
                    &format!("recording a run of {} for {}", run.model, run.day),
                    &e,
                )
            })?;
        Ok(row.get(0))
    }

    async fn ledger_update(&self, id: i64, outcome: &RunOutcome) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET state = $2, rows_written = $3, error = $4, \
             finished_at = CASE WHEN $5 THEN now() ELSE finished_at END, \
             started_at = CASE WHEN $6 THEN coalesce(started_at, now()) ELSE started_at END, \
             fingerprint = coalesce($7, fingerprint), source_layers = coalesce($8, source_layers), \
             heartbeat_at = now() \
             WHERE id = $1 AND state IN ('pending', 'running')",
            self.table(ledger::TABLE)
        );
        let client = self.client().await?;
        let updated = client
            .execute(
                &sql,
                &[
                    &id,
                    &outcome.state.as_str(),
                    &outcome.rows_written,
                    &outcome.error,
                    &is_finished(outcome.state),
                    &(outcome.state == RunState::Running),
                    &outcome.fingerprint,
                    &outcome.source_layers,
                ],
            )
            .await
            .map_err(|e| self.fail(&format!("updating ledger row {id}"), &e))?;
        // A closed row stays closed (a late cancellation must not turn a
        // committed success into a failure); a missing one is an error.
        if updated == 0 {
            let exists = client
                .query_opt(
                    &format!("SELECT 1 FROM {} WHERE id = $1", self.table(ledger::TABLE)),
                    &[&id],
                )
                .await
                .map_err(|e| self.fail(&format!("reading ledger row {id}"), &e))?
                .is_some();
            if !exists {
                return Err(self.message(format!("ledger row {id} does not exist")));
            }
        }
        Ok(())
    }

    async fn ledger_heartbeat(&self, ids: &[i64]) -> Result<()> {
        let sql = format!(
            "UPDATE {ledger} SET heartbeat_at = now() WHERE id IN (\
             SELECT id FROM {ledger} WHERE id = ANY($1) AND state IN ('pending', 'running') \
             FOR UPDATE SKIP LOCKED)",
            ledger = self.table(ledger::TABLE)
        );
        // SKIP LOCKED: a row a write transaction holds is being closed by
        // it; waiting for it would stall every other row's heartbeat.
        self.client()
            .await?
            .execute(&sql, &[&ids])
            .await
            .map_err(|e| self.fail("renewing the runs' heartbeat", &e))?;
        Ok(())
    }

    async fn ledger_expired(&self, lease: std::time::Duration) -> Result<Vec<i64>> {
        let sql = format!(
            "SELECT id FROM {} WHERE state IN ('pending', 'running') \
             AND coalesce(heartbeat_at, started_at) < now() - make_interval(secs => $1) \
             ORDER BY id",
            self.table(ledger::TABLE)
        );
        let rows = self
            .client()
            .await?
            .query(&sql, &[&lease.as_secs_f64()])
            .await
            .map_err(|e| self.fail("listing expired runs", &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn ledger_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM {} \
             WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR state = $2) \
             AND ($3::date IS NULL OR day >= $3) AND ($4::date IS NULL OR day <= $4) \
             ORDER BY id DESC LIMIT $5",
            self.table(ledger::TABLE)
        );
        let rows = self
            .client()
            .await?
            .query(
                &sql,
                &[
                    &filter.model,
                    &filter.state.map(RunState::as_str),
                    &filter.from,
                    &filter.to,
                    &filter.limit,
                ],
            )
            .await
            .map_err(|e| self.fail("listing runs", &e))?;
        rows.iter()
            .map(|r| record(r).map_err(|e| self.fail("reading the ledger", e.as_ref())))
            .collect()
    }

    async fn checkpoint(&self, stream: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT position FROM {} WHERE stream = $1",
            self.table(CHECKPOINT_TABLE)
        );
        let client = self.client().await?;
        let row = client
            .query_opt(&sql, &[&stream])
            .await
            .map_err(|e| self.fail(&format!("reading checkpoint `{stream}`"), &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn checks_record(&self, results: &[CheckResult]) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let fail = |e: tokio_postgres::Error| self.fail("recording check results", &e);
        let sql = check_history::insert_sql(&self.table(checks::TABLE), |n| format!("${n}"));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let stmt = tx.prepare(&sql).await.map_err(fail)?;
        for r in results {
            tx.execute(
                &stmt,
                &[
                    &r.run_id,
                    &r.model,
                    &r.day,
                    &r.check,
                    &r.severity.as_str(),
                    &r.status.as_str(),
                    &r.observed,
                    &r.expected,
                    &r.failing_rows,
                    &r.sample,
                    &r.detail,
                    &r.checked_at,
                ],
            )
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }

    async fn checks_list(&self, filter: &CheckFilter) -> Result<Vec<CheckResult>> {
        const TYPES: [&str; 5] = ["text", "date", "date", "bigint", "bigint"];
        let sql = check_history::list_sql(&self.table(checks::TABLE), |n| {
            format!("${n}::{}", TYPES[n - 1])
        });
        let rows = self
            .client()
            .await?
            .query(
                &sql,
                &[
                    &filter.model,
                    &filter.from,
                    &filter.to,
                    &check_history::failed_flag(filter),
                    &filter.limit,
                ],
            )
            .await
            .map_err(|e| self.fail("listing check results", &e))?;
        rows.iter()
            .map(|r| {
                check_history::from_parts(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                    r.get(9),
                    r.get(10),
                    r.get(11),
                )
                .map_err(|m| self.message(format!("reading check results: {m}")))
            })
            .collect()
    }

    async fn last_success_fingerprint(
        &self,
        model: &str,
        day: NaiveDate,
    ) -> Result<Option<String>> {
        let sql = format!(
            "SELECT fingerprint FROM {} WHERE model = $1 AND day = $2 AND state = 'success' \
             ORDER BY version DESC NULLS LAST, id DESC LIMIT 1",
            self.table(ledger::TABLE)
        );
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&model, &day])
            .await
            .map_err(|e| self.fail(&format!("reading the last run of {model} for {day}"), &e))?;
        Ok(row.and_then(|r| r.get(0)))
    }
}
