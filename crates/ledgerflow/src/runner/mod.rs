//! One (model, day) run, all-or-nothing: plan the day's inputs (one layer
//! per day), validate every input file, skip if the inputs' fingerprint is
//! unchanged, run the model's SQL with the window bound as parameters, and
//! hand the output to the sink, which writes it and closes the ledger row in
//! one transaction.

mod check_day;
mod check_history;
mod explain;
mod guard;
mod progress;
mod slots;
pub mod turns;

pub use check_day::{CheckOptions, RealtimePosition};
pub use check_history::record_checks;
pub use explain::Explained;

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::unified::{Catalog, DayPlan, Layer};
use crate::checks::sql::SqlCheck;
use crate::checks::CheckResult;
use crate::config::{CommitMode, Config, UnavailablePolicy};
use crate::error::{Error, Result, Retry};
use crate::ledger::{NewRun, RunOutcome, RunState};
use crate::models::{self, ModelSpec};
use crate::sinks::{self, Sink, WriteRequest};

/// Why a held model's output was not written under `run.commit = "day"`:
/// the reason, its retry kind, and whether a newer write superseded it.
type NotWritten = (String, Retry, bool);

/// A day's session, with the copy of a speed day its tables may read.
struct DaySession {
    ctx: SessionContext,
    _copy: Option<tempfile::TempDir>,
}

impl std::ops::Deref for DaySession {
    type Target = SessionContext;

    fn deref(&self) -> &SessionContext {
        &self.ctx
    }
}

/// Stops the heartbeat task when dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One model's run within a day's: what it shares with the day's other
/// models, and its own ledger row.
struct Run<'a> {
    ctx: &'a SessionContext,
    plan: &'a DayPlan,
    /// This model's ledger row.
    id: i64,
    /// The write's version, drawn before the day was planned.
    version: i64,
    /// This model's place in the queue for a query slot
    /// (`engine.parallel_models`).
    ticket: &'a slots::Ticket<'a>,
    outputs: &'a std::sync::Mutex<models::Outputs>,
    /// The day's other models: when this one may read and write.
    progress: &'a progress::DayProgress,
    /// The run's models: an output is kept only if one of them reads it.
    in_run: &'a [ModelSpec],
    /// Under `run.commit = "day"`: writes held for one transaction at the
    /// end of the day, with the model's index.
    deferred: Option<&'a std::sync::Mutex<Vec<(usize, WriteRequest)>>>,
    /// This model's index in the run.
    index: usize,
    /// In a pipelined backfill: waited on before the model's checks and
    /// write.
    turns: Option<&'a turns::WriteTurns>,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run even if the inputs' fingerprint equals the last success's.
    pub force: bool,
    /// Write an empty result for a day found in neither layer.
    pub allow_empty: bool,
    /// What started the run (`run`, `backfill`, `schedule`), for the ledger.
    pub trigger: String,
    /// Attempt number recorded in the ledger.
    pub attempt: i32,
    /// Set by [`Runner::backfill`] when days overlap.
    pub turns: Option<Arc<turns::WriteTurns>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            force: false,
            allow_empty: false,
            trigger: "run".into(),
            attempt: 1,
            turns: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunStatus {
    Success {
        rows: u64,
        /// Seconds planning and executing the SQL (reads included).
        compute_s: f64,
        /// Seconds in the sink (staging, COPY, replace, commit).
        write_s: f64,
    },
    Skipped {
        reason: String,
    },
    /// Not run: a model it reads failed (or was itself not run) in this
    /// run. Recorded as skipped.
    UpstreamFailed {
        upstream: String,
    },
    Failed {
        error: String,
        /// Whether another attempt can help (the scheduler retries only
        /// transient failures).
        retry: Retry,
    },
    /// The speed layer could not be reached and `speed.on_unavailable` is
    /// `skip`: recorded as skipped, exit 99, repaired later by backfill.
    Unavailable {
        reason: String,
    },
    /// A run that read the inputs later committed (model, day) first: this
    /// run's output was dropped. The day holds the newer output.
    Superseded {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub model: String,
    pub day: NaiveDate,
    pub layer: Layer,
    #[serde(flatten)]
    pub status: RunStatus,
    pub seconds: f64,
}

/// What a run would do, for `backfill --dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRun {
    pub model: String,
    pub day: NaiveDate,
    pub layer: Layer,
    pub source_layers: String,
    pub files: usize,
    /// `run`, `skip (unchanged)` or `error: ...`.
    pub action: String,
}

pub struct Runner {
    pub config: Config,
    pub catalog: Catalog,
    pub sink: Arc<dyn Sink>,
    pub models: Vec<ModelSpec>,
    /// SQL checks (`checks/*.sql`), each guarding one model.
    pub checks: Vec<SqlCheck>,
    /// Where the day's model queries execute (`engine.mode`).
    pub queries: crate::engine::Queries,
    /// `engine.parallel_models` query slots shared by the days in flight
    /// when the queries run here: a query already takes every core, so
    /// the days overlap one another's writes, not their queries.
    local_queries: Arc<slots::QuerySlots>,
}

impl Runner {
    pub async fn open(config: Config) -> Result<Runner> {
        let runner = Self::open_read_only(config).await?;
        runner.close_abandoned().await?;
        Ok(runner)
    }

    /// [`open`](Self::open) without closing abandoned ledger rows: for
    /// readers that must change nothing (`serve`).
    pub async fn open_read_only(config: Config) -> Result<Runner> {
        let models = models::load_dir(&config.models_dir())?;
        let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let checks = crate::checks::sql::load_dir(&config.checks_dir(), &names)?;
        let catalog = Catalog::open(&config)?;
        let sink = sinks::open(&config).await?;
        let queries = crate::engine::Queries::open(&config)?;
        let local_queries = Arc::new(slots::QuerySlots::new(config.engine.parallel_models));
        let runner = Runner {
            config,
            catalog,
            sink,
            models,
            checks,
            queries,
            local_queries,
        };
        Ok(runner)
    }

    /// Closes as failed every `pending`/`running` row for which `error`
    /// gives a reason; the shared walk of the three cleanups below.
    async fn close_open(
        &self,
        error: impl Fn(&crate::ledger::RunRecord) -> Option<String>,
    ) -> Result<usize> {
        let mut closed = 0;
        for state in [RunState::Pending, RunState::Running] {
            let filter = crate::ledger::RunFilter {
                state: Some(state),
                ..Default::default()
            };
            for run in self.sink.ledger_list(&filter).await? {
                if let Some(error) = error(&run) {
                    tracing::warn!(id = run.id, model = %run.model, day = %run.day, "{error}");
                    self.close(run.id, RunState::Failed, None, error).await?;
                    closed += 1;
                }
            }
        }
        Ok(closed)
    }

    /// Marks `pending`/`running` rows as failed (abandoned) when their
    /// process on this host is gone, or, on any host, when their heartbeat
    /// is older than `ledger.lease`: a killed run never stays "running" in
    /// the ledger, and its (model, day) is due again (its fingerprint never
    /// succeeded).
    pub async fn close_abandoned(&self) -> Result<usize> {
        let lease = self.config.ledger.lease;
        let expired: BTreeSet<i64> = self.sink.ledger_expired(lease).await?.into_iter().collect();
        self.close_open(|run| {
            let owner = run.owner.as_deref().unwrap_or("unknown");
            if crate::ledger::owner_is_gone(owner) {
                Some(format!("abandoned: process {owner} is gone"))
            } else if expired.contains(&run.id) {
                Some(format!(
                    "abandoned: no heartbeat from {owner} for longer than ledger.lease ({})",
                    humantime::format_duration(lease)
                ))
            } else {
                None
            }
        })
        .await
    }

    /// Renews the heartbeat of `ids` every third of `ledger.lease` until
    /// the returned guard is dropped.
    fn heartbeat(&self, ids: Vec<i64>) -> Heartbeat {
        let sink = Arc::clone(&self.sink);
        let every = self.config.ledger.lease / 3;
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = sink.ledger_heartbeat(&ids).await {
                    tracing::warn!("cannot renew the runs' heartbeat: {e}");
                }
            }
        }))
    }

    /// Closes this process's own `pending`/`running` rows as failed with
    /// `reason`: a scheduler that cancels its runs at shutdown leaves no
    /// row claiming to run.
    pub async fn close_own(&self, reason: &str) -> Result<usize> {
        let me = crate::ledger::this_process();
        self.close_open(|run| {
            (run.owner.as_deref() == Some(me.as_str())).then(|| reason.to_owned())
        })
        .await
    }

    /// Closes open rows that a scheduler process other than this one left
    /// (`trigger` `schedule:*`). Only for a scheduler that holds the lead:
    /// the lock proves the previous leader's session ended, and a leader
    /// that loses its lock cancels its runs at once.
    pub async fn close_other_schedulers(&self, reason: &str) -> Result<usize> {
        let me = crate::ledger::this_process();
        self.close_open(|run| {
            let other =
                run.trigger.starts_with("schedule:") && run.owner.as_deref() != Some(me.as_str());
            other.then(|| format!("{reason} ({})", run.owner.as_deref().unwrap_or_default()))
        })
        .await
    }

    /// The models to run, in dependency order; unknown names are a usage
    /// error.
    pub fn select(&self, names: &[String]) -> Result<Vec<ModelSpec>> {
        if names.is_empty() {
            return Ok(self.models.clone());
        }
        for n in names {
            if !self.models.iter().any(|m| &m.name == n) {
                let known: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "unknown model `{n}` (models: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(self
            .models
            .iter()
            .filter(|m| names.contains(&m.name))
            .cloned()
            .collect())
    }

    /// The inputs of (model, day): its SQL, the SQL of the models it reads,
    /// and the day's files.
    pub fn fingerprint(&self, model: &ModelSpec, plan: &DayPlan) -> String {
        let mut h = Sha256::new();
        h.update(model.sql.as_bytes());
        for up in models::dag::upstreams(model, &self.models) {
            h.update(up.name.as_bytes());
            h.update(up.sql.as_bytes());
        }
        plan.hash_into(&mut h);
        hex::encode(&h.finalize()[..16])
    }

    /// Runs `models` for one day in dependency order. A failed model's
    /// dependents are skipped, never run on missing inputs.
    pub async fn run_day(
        &self,
        day: NaiveDate,
        models: &[ModelSpec],
        opts: &RunOptions,
    ) -> Result<Vec<RunReport>> {
        // Drawn before any input is read: a run that commits a greater
        // version read its inputs after this one did.
        let version = self.sink.next_version().await?;
        let plan = self.catalog.plan_day(day).await;
        let source_down = match &plan {
            Err(e @ Error::SourceUnavailable { .. })
                if self.config.speed.on_unavailable == UnavailablePolicy::Skip =>
            {
                Some(format!(
                    "source unavailable (speed.on_unavailable = skip): {e}"
                ))
            }
            _ => None,
        };
        let described = |e: &Error| (e.to_string(), e.retry());
        let input_error = match &plan {
            Err(e) => Some(described(e)),
            Ok(p) if p.layer == Layer::None && !opts.allow_empty => {
                Some(described(&self.catalog.day_not_found(day)))
            }
            Ok(p) => self.catalog.validate(p).await.err().map(|e| described(&e)),
        };
        // The session is part of the inputs: if it cannot be built, every
        // model of the day fails with that reason (and the ledger says so).
        let (ctx, input_error) = match (&plan, input_error) {
            (Ok(plan), None) => match self.models_session(plan, models).await {
                Ok(ctx) => (Some(ctx), None),
                Err(e) => (None, Some(described(&e))),
            },
            (_, error) => (None, error),
        };
        let layer = plan.as_ref().map_or(Layer::None, |p| p.layer);
        let source_layers = plan.as_ref().ok().map(DayPlan::source_layers);
        // Every (model, day) of this run is visible as pending before the
        // first one starts; each row then moves to its final state.
        let mut ids = Vec::with_capacity(models.len());
        for model in models {
            ids.push(
                self.sink
                    .ledger_insert(&NewRun {
                        model: model.name.clone(),
                        day,
                        state: RunState::Pending,
                        attempt: opts.attempt,
                        trigger: opts.trigger.clone(),
                        fingerprint: None,
                        source_layers: source_layers.clone(),
                        error: None,
                        owner: Some(crate::ledger::this_process()),
                    })
                    .await?,
            );
        }
        let _heartbeat = self.heartbeat(ids.clone());
        // Every model runs at once, each waiting for what it needs: its
        // query for its upstreams' outputs and a query slot, its write for
        // its upstreams' runs to be over (`progress`). At most
        // `engine.parallel_models` queries run at once (day by day, see
        // `slots`); a model's checks and write hold no slot. On 2 cores
        // against PostgreSQL, the next query during a large COPY took a
        // mainnet week from 14.5-15.4 s to 12.2-12.9 s; two queries at once
        // gained nothing (they share the cores).
        // A cluster runs each day's queries beside the other days'.
        let own_queries;
        let queries: &slots::QuerySlots = match self.queries.remote() {
            Some(_) => {
                own_queries = slots::QuerySlots::new(self.config.engine.parallel_models);
                &own_queries
            }
            None => &self.local_queries,
        };
        let outputs = std::sync::Mutex::new(models::Outputs::new());
        let deferred = std::sync::Mutex::new(Vec::new());
        let day_commit = self.config.run.commit == CommitMode::Day;
        let progress = progress::DayProgress::new(models);
        if let Some(model) = progress.cycle() {
            let e = Error::Usage(format!(
                "models have a dependency cycle through `{model}` (see `depends_on`)"
            ));
            self.close_after_error(&ids, &e).await;
            return Err(e);
        }
        // Every model's place in the queue for a query slot, taken now: a
        // slot waits for the models of higher priority (see `slots`).
        let tickets: Vec<slots::Ticket<'_>> = models
            .iter()
            .map(|m| {
                let priority = (day, query_rank(m, models, &progress));
                queries.ticket(priority, !progress.reads_any(&m.name))
            })
            .collect();
        let runs = models
            .iter()
            .zip(tickets)
            .enumerate()
            .map(|(i, (model, ticket))| {
                let id = ids[i];
                let (input_error, plan, ctx, source_down, outputs, progress, deferred) = (
                    &input_error,
                    &plan,
                    &ctx,
                    &source_down,
                    &outputs,
                    &progress,
                    day_commit.then_some(&deferred),
                );
                async move {
                    let over = progress::Over::new(progress, &model.name);
                    let started = Instant::now();
                    let status = if let Some(reason) = source_down {
                        self.close(id, RunState::Skipped, None, reason.clone())
                            .await?;
                        RunStatus::Unavailable {
                            reason: reason.clone(),
                        }
                    } else if let Some((error, retry)) = input_error {
                        self.close(id, RunState::Failed, None, error.clone())
                            .await?;
                        RunStatus::Failed {
                            error: error.clone(),
                            retry: *retry,
                        }
                    } else if let Some(up) = progress.readable(&model.name).await {
                        self.skip_upstream_failed(id, up).await?
                    } else {
                        let plan = plan.as_ref().expect("no input error means a plan");
                        let ctx = ctx.as_ref().expect("no input error means a session");
                        ticket.can_run();
                        let run = Run {
                            ctx,
                            plan,
                            id,
                            version,
                            ticket: &ticket,
                            outputs,
                            progress,
                            in_run: models,
                            deferred,
                            index: i,
                            turns: opts.turns.as_deref(),
                        };
                        self.run_model(model, opts, &run).await?
                    };
                    // Its place in the queue goes, however it ended.
                    drop(ticket);
                    // A skipped model's dependents are skipped too, transitively.
                    over.set(matches!(
                        status,
                        RunStatus::Failed { .. }
                            | RunStatus::Unavailable { .. }
                            | RunStatus::UpstreamFailed { .. }
                    ));
                    // Past its reads however it ended.
                    release_reads(progress, outputs, ctx.as_deref(), &model.name);
                    if let (Some(turns), false) = (&opts.turns, day_commit) {
                        turns.model_done(&model.name, day);
                    }
                    Ok::<_, Error>((i, status, started.elapsed().as_secs_f64()))
                }
            });
        let mut reports: Vec<Option<RunReport>> = vec![None; models.len()];
        for result in futures::future::join_all(runs).await {
            let (i, status, seconds) = match result {
                Ok(r) => r,
                Err(e) => {
                    self.close_after_error(&ids, &e).await;
                    return Err(e);
                }
            };
            reports[i] = Some(RunReport {
                model: models[i].name.clone(),
                day,
                layer,
                status,
                seconds,
            });
        }
        let held = deferred
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if !held.is_empty() {
            self.commit_day(held, &ids, &mut reports).await?;
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// `run.commit = "day"`: writes the held outputs in one transaction,
    /// unless a model of the day failed, then none of them.
    async fn commit_day(
        &self,
        held: Vec<(usize, WriteRequest)>,
        ids: &[i64],
        reports: &mut [Option<RunReport>],
    ) -> Result<()> {
        let failure = reports.iter().flatten().find_map(|r| match &r.status {
            RunStatus::Failed { retry, .. } => Some((r.model.clone(), *retry)),
            RunStatus::Unavailable { .. } => Some((r.model.clone(), Retry::Transient)),
            _ => None,
        });
        let started = Instant::now();
        let mut pending = held;
        // Per held model: rows written, or why not (the reason, its retry
        // kind, whether a newer write superseded it).
        let mut outcomes: Vec<(usize, std::result::Result<u64, NotWritten>)> = Vec::new();
        if let Some((model, retry)) = failure {
            let reason = format!("not written: model `{model}` failed and run.commit = \"day\" commits a day's models together");
            for (i, _) in pending.drain(..) {
                outcomes.push((i, Err((reason.clone(), retry, false))));
            }
        }
        // A table a newer run has written is dropped from the transaction
        // (its day holds that run's output) and the rest is tried again:
        // the others' versions still stand.
        while !pending.is_empty() {
            let reqs: Vec<WriteRequest> = pending.iter().map(|(_, r)| r.clone()).collect();
            match self.sink.write_all(reqs).await {
                Ok(rows) => {
                    for ((i, _), n) in pending.drain(..).zip(rows) {
                        outcomes.push((i, Ok(n)));
                    }
                }
                Err(e @ Error::Superseded { .. }) => {
                    let Error::Superseded { table, .. } = &e else {
                        unreachable!("matched above")
                    };
                    let Some(k) = pending.iter().position(|(_, r)| &r.table == table) else {
                        return Err(e);
                    };
                    let (i, _) = pending.remove(k);
                    outcomes.push((i, Err((e.to_string(), e.retry(), true))));
                }
                Err(e) => {
                    let reason = (e.to_string(), e.retry(), false);
                    for (i, _) in pending.drain(..) {
                        outcomes.push((i, Err(reason.clone())));
                    }
                }
            }
        }
        let write_s = started.elapsed().as_secs_f64();
        for (i, outcome) in outcomes {
            let Some(report) = reports[i].as_mut() else {
                continue;
            };
            report.seconds += write_s;
            report.status = match (outcome, &report.status) {
                (Ok(rows), RunStatus::Success { compute_s, .. }) => RunStatus::Success {
                    rows,
                    compute_s: *compute_s,
                    write_s,
                },
                (Ok(_), status) => status.clone(),
                (Err((reason, _, true)), _) => {
                    self.close(ids[i], RunState::Superseded, None, reason.clone())
                        .await?;
                    RunStatus::Superseded { reason }
                }
                (Err((error, retry, false)), _) => {
                    self.close(ids[i], RunState::Failed, None, error.clone())
                        .await?;
                    RunStatus::Failed { error, retry }
                }
            };
        }
        Ok(())
    }

    /// A run that cannot go on (the ledger itself failed) closes what it
    /// opened, best effort: rows already closed are left as they are.
    async fn close_after_error(&self, ids: &[i64], error: &Error) {
        for &id in ids {
            if let Err(e) = self
                .close(id, RunState::Failed, None, format!("run aborted: {error}"))
                .await
            {
                tracing::warn!(id, "cannot close ledger row: {e}");
            }
        }
    }

    /// The plan of a day read on demand (`check`, `explain`): an error
    /// when neither layer has it or one of its files is unreadable.
    async fn readable_day(&self, day: NaiveDate) -> Result<DayPlan> {
        let plan = self.catalog.plan_day(day).await?;
        if plan.layer == Layer::None {
            return Err(self.catalog.day_not_found(day));
        }
        self.catalog.validate(&plan).await?;
        Ok(plan)
    }

    async fn session_for(&self, plan: &DayPlan) -> Result<SessionContext> {
        // Each day its own pool: days in flight sharing one starved each
        // other's aggregations ("Resources exhausted" on 30 mainnet days).
        let session = crate::engine::session(&self.config)?;
        self.catalog
            .register(&session, std::slice::from_ref(plan))
            .await?;
        Ok(session)
    }

    /// [`session_for`](Self::session_for) for running the day's models: a
    /// landing day of many micro-batches is read once into a local copy
    /// (not on a cluster, whose executors cannot read this host's disk).
    async fn models_session(&self, plan: &DayPlan, models: &[ModelSpec]) -> Result<DaySession> {
        let ctx = self.session_for(plan).await?;
        let copy = match self.queries.remote() {
            Some(_) => None,
            None if self.catalog.copies(plan) => {
                // A model that cannot be planned fails on its own later;
                // meanwhile the copy takes every column.
                let read = match crate::engine::session(&self.config) {
                    Ok(probe) => models::columns::read_by(&probe, models, &self.models, plan.day)
                        .await
                        .ok(),
                    Err(_) => None,
                };
                self.catalog
                    .copy_speed_day(&ctx, plan, read.as_ref())
                    .await?
            }
            None => None,
        };
        Ok(DaySession { ctx, _copy: copy })
    }

    /// Closes ledger row `id` as skipped because `upstream` failed.
    async fn skip_upstream_failed(&self, id: i64, upstream: String) -> Result<RunStatus> {
        let reason = format!("upstream model `{upstream}` failed");
        self.close(id, RunState::Skipped, None, reason).await?;
        Ok(RunStatus::UpstreamFailed { upstream })
    }

    /// Moves ledger row `id` to a final state without data.
    async fn close(
        &self,
        id: i64,
        state: RunState,
        fingerprint: Option<String>,
        error: String,
    ) -> Result<()> {
        self.sink
            .ledger_update(
                id,
                &RunOutcome {
                    error: Some(error),
                    fingerprint,
                    ..RunOutcome::new(state)
                },
            )
            .await
    }

    /// One model over one planned day, ledger row `id`. Errors of the model
    /// itself become a `Failed` status (recorded in the ledger); errors
    /// reaching the ledger itself are returned.
    async fn run_model(
        &self,
        model: &ModelSpec,
        opts: &RunOptions,
        run: &Run<'_>,
    ) -> Result<RunStatus> {
        let (plan, id) = (run.plan, run.id);
        let fingerprint = self.fingerprint(model, plan);
        if !opts.force {
            let last = self
                .sink
                .last_success_fingerprint(&model.name, plan.day)
                .await?;
            if last.as_deref() == Some(fingerprint.as_str()) {
                // No query: its place in the queue goes before it waits.
                run.ticket.withdraw();
                // Its readers recompute it from its upstreams' outputs:
                // only if those are written.
                if let Some(upstream) = run.progress.upstreams_over(&model.name).await {
                    return self.skip_upstream_failed(id, upstream).await;
                }
                let reason =
                    "inputs and SQL unchanged since the last success (use --force to re-run)"
                        .to_string();
                self.close(id, RunState::Skipped, Some(fingerprint), reason.clone())
                    .await?;
                return Ok(RunStatus::Skipped { reason });
            }
        }
        self.sink
            .ledger_update(
                id,
                &RunOutcome {
                    fingerprint: Some(fingerprint),
                    ..RunOutcome::new(RunState::Running)
                },
            )
            .await?;
        match self.execute(model, run).await {
            Ok(Executed::Written {
                rows,
                compute_s,
                write_s,
            }) => Ok(RunStatus::Success {
                rows,
                compute_s,
                write_s,
            }),
            Ok(Executed::UpstreamFailed(upstream)) => self.skip_upstream_failed(id, upstream).await,
            Err(e @ Error::Superseded { .. }) => {
                let reason = e.to_string();
                tracing::warn!(model = %model.name, day = %plan.day, "{reason}");
                self.close(id, RunState::Superseded, None, reason.clone())
                    .await?;
                Ok(RunStatus::Superseded { reason })
            }
            Err(e) => {
                let error = e.to_string();
                self.close(id, RunState::Failed, None, error.clone())
                    .await?;
                Ok(RunStatus::Failed {
                    error,
                    retry: e.retry(),
                })
            }
        }
    }

    async fn execute(&self, model: &ModelSpec, run: &Run<'_>) -> Result<Executed> {
        let (ctx, plan, run_id) = (run.ctx, run.plan, run.id);
        let permit = run.ticket.acquire().await;
        let started = Instant::now();
        if crate::failpoint::fail_now("model_error", &model.name) {
            return Err(Error::Serving {
                target: crate::failpoint::ENV.into(),
                message: "injected failure: connection lost".into(),
                transient: true,
            });
        }
        if crate::failpoint::fail_now("model_bug", &model.name) {
            return Err(Error::Model {
                file: model.file.clone(),
                line: 1,
                message: format!("injected failure ({})", crate::failpoint::ENV),
            });
        }
        let (start, end) = crate::day::bounds(plan.day);
        if let (Some(url), Layer::Speed, Some(target)) = (
            self.queries.remote(),
            plan.layer,
            self.catalog.speed.local_copy(),
        ) {
            return Err(Error::Cluster {
                model: model.name.clone(),
                day: plan.day,
                url: url.to_string(),
                message: format!(
                    "a {target} speed day is read into a Parquet copy in this host's spill dir, which the executors cannot read; compact the day into the batch layer first, or run it with engine.mode = \"local\""
                ),
                transient: false,
            });
        }
        // On a cluster an upstream's output is recomputed inside the
        // dependent's plan (a view of its query) instead of shipped.
        let upstream_outputs = match self.queries.remote() {
            Some(_) => models::Outputs::new(),
            None => run
                .outputs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        let (schema, df) = models::plan(
            ctx,
            model,
            &self.models,
            &upstream_outputs,
            plan.day,
            start,
            end,
        )
        .await?;
        let batches = self
            .queries
            .collect(&model.name, plan.day, df, |e| {
                self.catalog.engine_error(&model.name, plan, e)
            })
            .await?;
        // Held (and counted in the pool) until the query that read them ran.
        drop(upstream_outputs);
        // The rest (waiting for this model's earlier days, the checks over
        // the output, the write) is not a query: the next query may run.
        // (A permit held while waiting for an earlier day that needs one
        // would deadlock the days in flight.)
        drop(permit);
        // Kept for the models of this run that read this one (their query
        // then scans these rows instead of recomputing them), if the day's
        // memory pool can hold it.
        let local = self.queries.remote().is_none();
        if local && models::dag::is_read_by(&model.name, run.in_run) {
            run.outputs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keep(
                    &ctx.runtime_env().memory_pool,
                    &model.name,
                    schema.clone(),
                    batches.clone(),
                );
        }
        if let Some(turns) = run.turns {
            // The query overlapped the earlier days; the checks and the
            // write wait for this model's earlier days to be over.
            turns.wait(&model.name, plan.day).await;
        }
        let out = guard::Output {
            ctx,
            day: plan.day,
            run_id: Some(run_id),
            schema: &schema,
            batches: &batches,
        };
        // The checks read the upstreams' outputs too (a SQL check may join
        // them); then they can go, before this model's write.
        let checked = self.evaluate(model, &out).await;
        release_reads(run.progress, run.outputs, Some(ctx), &model.name);
        let results = checked?;
        // Its readers may read it from now on, while it is written (its SQL
        // checks, which put the output in the session under its name, are
        // over), unless a check already failed it. On a cluster they wait
        // for the write, each recomputing it inside its own plan.
        if local && !results.iter().any(CheckResult::blocks) {
            run.progress.output_ready(&model.name);
            if run.progress.unread(&model.name) {
                drop_outputs(run.outputs, Some(ctx), std::slice::from_ref(&model.name));
            }
        }
        let compute_s = started.elapsed().as_secs_f64();
        // Written only after the models it read are: if one of them failed
        // (its checks, its write), this one is skipped, as if it had not
        // run (its check results unrecorded).
        if let Some(up) = run.progress.upstreams_over(&model.name).await {
            return Ok(Executed::UpstreamFailed(up));
        }
        self.judge(model, plan.day, results).await?;
        let writing = Instant::now();
        crate::failpoint::hit("before_write", &model.name).await;
        let req = WriteRequest {
            table: model.name.clone(),
            key: model.key.clone(),
            mode: model.write.clone(),
            day: plan.day,
            schema,
            batches,
            run_id: Some(run_id),
            checkpoint: None,
            version: Some(run.version),
        };
        if let Some(deferred) = run.deferred {
            // Written with the day's other models (`commit_day`); the rows
            // and write time are filled in then.
            deferred
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((run.index, req));
            return Ok(Executed::Written {
                rows: 0,
                compute_s,
                write_s: 0.0,
            });
        }
        let rows = self.sink.write(req).await?;
        let write_s = writing.elapsed().as_secs_f64();
        tracing::info!(model = %model.name, day = %plan.day, layer = plan.layer.as_str(), rows, compute_s, write_s, "model written");
        Ok(Executed::Written {
            rows,
            compute_s,
            write_s,
        })
    }

    /// Runs `days` oldest first, up to `engine.parallel_days` at once: a
    /// day's queries overlap the earlier days' writes, while each model's
    /// days are checked and written in order ([`turns::WriteTurns`]).
    /// `on_day` sees each day's reports in day order as soon as that day
    /// and the ones before it are over. A day that fails outright (the
    /// ledger unreachable) stops new days from starting; the ones running
    /// finish, and the first such error is returned with its day.
    pub async fn backfill(
        &self,
        days: &[NaiveDate],
        models: &[ModelSpec],
        opts: &RunOptions,
        mut on_day: impl FnMut(NaiveDate, &[RunReport]),
    ) -> std::result::Result<Vec<RunReport>, (NaiveDate, Error)> {
        use futures::StreamExt;
        let parallel = self.config.engine.parallel_days.max(1);
        let turns = Arc::new(turns::WriteTurns::new(days));
        let opts = RunOptions {
            turns: (parallel > 1).then(|| turns.clone()),
            ..opts.clone()
        };
        let mut running = futures::stream::FuturesOrdered::new();
        let mut next = days.iter();
        let mut all = Vec::new();
        let mut failure = None;
        loop {
            while failure.is_none() && running.len() < parallel {
                let Some(&day) = next.next() else { break };
                let (opts, turns) = (&opts, &turns);
                running.push_back(async move {
                    let reports = self.run_day(day, models, opts).await;
                    turns.day_done(day);
                    (day, reports)
                });
            }
            let Some((day, reports)) = running.next().await else {
                break;
            };
            match reports {
                Ok(reports) => {
                    on_day(day, &reports);
                    all.extend(reports);
                }
                Err(e) => {
                    failure.get_or_insert((day, e));
                }
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(all),
        }
    }

    /// What `backfill` would do for each (model, day), without running.
    pub async fn preview(
        &self,
        days: &[NaiveDate],
        models: &[ModelSpec],
        opts: &RunOptions,
    ) -> Result<Vec<PlannedRun>> {
        let mut out = Vec::new();
        for &day in days {
            let plan = self.catalog.plan_day(day).await?;
            for model in models {
                let action = if plan.layer == Layer::None && !opts.allow_empty {
                    format!("error: {}", self.catalog.day_not_found(day))
                } else if !opts.force
                    && self.sink.last_success_fingerprint(&model.name, day).await?
                        == Some(self.fingerprint(model, &plan))
                {
                    "skip (unchanged)".to_string()
                } else {
                    "run".to_string()
                };
                out.push(PlannedRun {
                    model: model.name.clone(),
                    day,
                    layer: plan.layer,
                    source_layers: plan.source_layers(),
                    files: plan.file_count(),
                    action,
                });
            }
        }
        Ok(out)
    }
}

/// What [`Runner::execute`] did with a model whose query ran.
enum Executed {
    Written {
        rows: u64,
        compute_s: f64,
        write_s: f64,
    },
    /// Not written: a model it read failed after its query read it.
    UpstreamFailed(String),
}

/// A model's place in its day's queue for a query slot: the models whose
/// output others read first (their readers wait for them), then those
/// reading one (the output goes once they have), then the rest.
fn query_rank(model: &ModelSpec, in_run: &[ModelSpec], progress: &progress::DayProgress) -> u8 {
    if models::dag::is_read_by(&model.name, in_run) {
        0
    } else if progress.reads_any(&model.name) {
        1
    } else {
        2
    }
}

/// `model` reads its upstreams no more: the outputs no model of the day
/// reads now are dropped, with the session's tables over them.
fn release_reads(
    progress: &progress::DayProgress,
    outputs: &std::sync::Mutex<models::Outputs>,
    ctx: Option<&SessionContext>,
    model: &str,
) {
    drop_outputs(outputs, ctx, &progress.past_reads(model));
}

/// Drops the outputs `names` with the session's tables over them.
fn drop_outputs(
    outputs: &std::sync::Mutex<models::Outputs>,
    ctx: Option<&SessionContext>,
    names: &[String],
) {
    if names.is_empty() {
        return;
    }
    outputs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|name| !names.iter().any(|f| f == name));
    if let Some(ctx) = ctx {
        for name in names {
            let _ = ctx.deregister_table(name.as_str());
        }
    }
}
