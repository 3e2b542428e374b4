//! `ledgerflow schedule`: the leader loop. Each poll it (1) records the
//! ticks that came due since the last one it saw, applying the catch-up
//! rule, (2) raises an alert for every tick past its SLA deadline and not
//! done by then, and (3) starts due ticks, at most `max_active_runs` per job
//! and never two of the same (job, day). A tick runs the job's models for
//! its day through the runner (so every write is the exactly-once write)
//! and retries with backoff; each attempt is a ledger row.
//!
//! State lives in the serving database (`store`), not in memory: a killed
//! scheduler's running tick is found on restart (its process is gone), its
//! ledger rows are closed as abandoned and the tick runs again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::clock::Clock;
use super::job::Job;
use super::leader::Leader;
use super::store::{Alert, GapRecord, ScheduleStore, Tick, TickState};
use crate::config::{Config, SchedulerConfig};
use crate::error::{Error, Result, Retry};
use crate::ledger::{owner_is_gone, this_process};
use crate::runner::turns::{OpenDay, WriteTurns};
use crate::runner::{RunOptions, RunStatus, Runner};

#[derive(Debug, Clone, Copy, Default)]
pub struct ScheduleOptions {
    /// Run what is due now (with its retries), then exit.
    pub once: bool,
    /// If another scheduler leads, wait and take over when it stops.
    pub standby: bool,
}

/// What a scheduler did before it stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleSummary {
    pub succeeded: usize,
    pub failed: usize,
}

struct Shared {
    runner: Runner,
    store: ScheduleStore,
    clock: Clock,
    me: String,
    /// Webhook deliveries in flight; shutdown waits for them, so a
    /// delivered alert is recorded as delivered and not re-sent.
    deliveries: tokio::sync::Mutex<JoinSet<()>>,
    /// Per job: the write order of its ticks in flight (with
    /// `max_active_runs` > 1 a catch-up's days overlap, each model's days
    /// still written oldest first).
    turns: BTreeMap<String, Arc<WriteTurns>>,
}

type Running = BTreeMap<(String, DateTime<Utc>), NaiveDate>;
type TaskOutput = (String, DateTime<Utc>, TickState);
type Tasks = JoinSet<TaskOutput>;
type Joined = std::result::Result<(tokio::task::Id, TaskOutput), tokio::task::JoinError>;
/// Which tick each task runs, to free its slot even if it panics.
type TaskIds = BTreeMap<tokio::task::Id, (String, DateTime<Utc>)>;

/// Runs the scheduler until `shutdown` turns true (or, with `once`, until
/// the work due at start is done).
pub async fn serve(
    config: Config,
    opts: ScheduleOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ScheduleSummary> {
    if config.jobs.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no [[jobs]]: nothing to schedule (see README, \"Scheduling\")",
            config.source_path.display()
        )));
    }
    let jobs: Vec<Arc<Job>> = config
        .jobs
        .iter()
        .map(|j| Job::parse(j.clone()).map(Arc::new))
        .collect::<std::result::Result<_, _>>()
        .map_err(|(key, m)| Error::Usage(format!("job setting `{key}`: {m}")))?;
    let clock = Clock::from_env()?;
    let settings = config.scheduler.clone();
    let runner = Runner::open(config.clone()).await?;
    for job in &jobs {
        runner
            .select(&job.config.models)
            .map_err(|e| Error::Usage(format!("job `{}`: {e}", job.name())))?;
    }
    let store = ScheduleStore::open(&config).await?;
    let shared = Arc::new(Shared {
        runner,
        store,
        clock,
        me: this_process(),
        deliveries: Default::default(),
        turns: jobs
            .iter()
            .map(|j| (j.name().to_owned(), Arc::default()))
            .collect(),
    });
    let mut summary = ScheduleSummary::default();
    let mut standby = opts.standby;
    loop {
        let Some(leader) = lead(&config, standby, &mut shutdown).await? else {
            return Ok(summary);
        };
        tracing::info!(leader = %leader.describe(), jobs = jobs.len(), simulated_clock = shared.clock.is_simulated(), "leading the schedule");
        let lost = lead_loop(
            &shared,
            &jobs,
            &settings,
            &leader,
            opts,
            &mut shutdown,
            &mut summary,
        )
        .await?;
        if !lost {
            return Ok(summary);
        }
        // Lost the lock (database restart, network): another scheduler may
        // lead now. Start over as a standby.
        standby = true;
    }
}

/// Takes the lead; as a standby waits for it. `None` when shut down first.
async fn lead(
    config: &Config,
    standby: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Leader>> {
    let mut announced = false;
    let mut unreachable = false;
    loop {
        match Leader::try_acquire(config).await {
            Ok(Ok(leader)) => return Ok(Some(leader)),
            Ok(Err(holder)) if !standby => {
                return Err(Error::Scheduler(format!(
                    "another scheduler leads: {holder}; run this one with --standby to take over when it stops"
                )))
            }
            Ok(Err(holder)) => {
                unreachable = false;
                if !announced {
                    tracing::info!("standing by: the scheduler {holder} leads");
                    announced = true;
                }
            }
            // Said once per outage, not at every retry.
            Err(e) if standby => {
                if !unreachable {
                    tracing::warn!("standby: cannot reach the serving database ({e}); retrying");
                    unreachable = true;
                }
            }
            Err(e) => return Err(e),
        }
        let wait = (config.scheduler.lease / 4).max(Duration::from_millis(250));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return Ok(None),
        }
    }
}

/// Leads until shutdown (`Ok(false)`) or until the lock is lost
/// (`Ok(true)`).
async fn lead_loop(
    shared: &Arc<Shared>,
    jobs: &[Arc<Job>],
    settings: &SchedulerConfig,
    leader: &Leader,
    opts: ScheduleOptions,
    shutdown: &mut watch::Receiver<bool>,
    summary: &mut ScheduleSummary,
) -> Result<bool> {
    recover(shared, jobs, settings).await;
    let mut tasks: Tasks = JoinSet::new();
    let mut ids: TaskIds = BTreeMap::new();
    let mut running: Running = BTreeMap::new();
    // Ends retry waits (and so new attempts) on shutdown or a lost lock.
    let (halt, halted) = watch::channel(false);
    let mut planned = false;
    let mut lost = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !leader.still_held().await {
            tracing::error!(
                "lost the scheduler lock ({}): no new runs start here",
                leader.describe()
            );
            lost = true;
            break;
        }
        let now = shared.clock.now();
        if !(opts.once && planned) {
            for job in jobs {
                if let Err(e) = plan_job(shared, job, settings, now).await {
                    tracing::error!(job = job.name(), "cannot plan ticks: {e}");
                }
            }
            planned = true;
        }
        let mut waiting = false;
        for job in jobs {
            if let Err(e) = check_sla(shared, job, settings, now).await {
                tracing::error!(job = job.name(), "cannot check the SLA: {e}");
            }
            match start_due(
                shared,
                job,
                now,
                &mut running,
                &mut tasks,
                &mut ids,
                &halted,
            )
            .await
            {
                Ok(w) => waiting |= w,
                Err(e) => {
                    waiting = true;
                    tracing::error!(job = job.name(), "cannot start due ticks: {e}");
                }
            }
        }
        if opts.once && tasks.is_empty() && !waiting {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.poll_interval) => {}
            _ = shutdown.changed() => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => finish(done, &mut ids, &mut running, summary),
        }
    }
    let _ = halt.send(true);
    // A lost lock gives no grace: the new leader may start these ticks.
    let grace = if lost {
        Duration::ZERO
    } else {
        settings.grace_period
    };
    stop(shared, grace, &mut tasks, &mut ids, &mut running, summary).await;
    Ok(lost)
}

fn finish(done: Joined, ids: &mut TaskIds, running: &mut Running, summary: &mut ScheduleSummary) {
    let id = match &done {
        Ok((id, _)) => *id,
        Err(e) => e.id(),
    };
    if let Some(key) = ids.remove(&id) {
        running.remove(&key);
    }
    match done {
        Ok((_, (_, _, state))) => match state {
            TickState::Success => summary.succeeded += 1,
            TickState::Failed => summary.failed += 1,
            _ => {}
        },
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!("a run task panicked: {e}"),
    }
}

/// Shutdown: no new runs; running ones get the grace period, then are
/// cancelled (their transactions roll back). Nothing of this process stays
/// "running": its ledger rows close as failed and its ticks are due again.
async fn stop(
    shared: &Arc<Shared>,
    grace: Duration,
    tasks: &mut Tasks,
    ids: &mut TaskIds,
    running: &mut Running,
    summary: &mut ScheduleSummary,
) {
    if !tasks.is_empty() {
        tracing::info!(
            runs = tasks.len(),
            ?grace,
            "stopping: letting running runs finish"
        );
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = tasks.join_next_with_id().await {
                finish(done, ids, running, summary);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                runs = tasks.len(),
                "grace period over: cancelling running runs (rolled back)"
            );
            tasks.abort_all();
            while let Some(done) = tasks.join_next_with_id().await {
                finish(done, ids, running, summary);
            }
        }
    }
    let mut deliveries = std::mem::take(&mut *shared.deliveries.lock().await);
    if !deliveries.is_empty() {
        let waited = tokio::time::timeout(grace.max(Duration::from_secs(5)), async {
            while deliveries.join_next().await.is_some() {}
        })
        .await;
        if waited.is_err() {
            tracing::warn!("alerts still being delivered are retried at the next start");
        }
    }
    match shared
        .runner
        .close_own("cancelled: the scheduler stopped")
        .await
    {
        Ok(n) if n > 0 => {
            tracing::warn!(rows = n, "closed this process's open ledger rows as failed")
        }
        Ok(_) => {}
        Err(e) => tracing::error!("cannot close this process's ledger rows: {e}"),
    }
    for (job, tick) in running.keys() {
        if let Ok(ticks) = shared.store.ticks(job, 500).await {
            if let Some(mut t) = ticks.into_iter().find(|t| t.tick == *tick) {
                t.state = TickState::Due;
                t.owner = None;
                t.error = Some("cancelled: the scheduler stopped".into());
                if let Err(e) = shared.store.save_tick(&t).await {
                    tracing::error!("cannot re-queue tick {tick} of {job}: {e}");
                }
            }
        }
    }
}

/// On taking the lead: ticks left running by a process that is gone are due
/// again (their ledger rows were closed as abandoned by `Runner::open`), and
/// alerts not yet delivered are sent.
async fn recover(shared: &Arc<Shared>, jobs: &[Arc<Job>], settings: &SchedulerConfig) {
    // After a lost lead, rows this process could not close while the
    // database was away are still open; none of its runs is running now.
    if let Err(e) = shared
        .runner
        .close_own("abandoned: the scheduler lost its lock while it ran")
        .await
    {
        tracing::error!("cannot close this process's open ledger rows: {e}");
    }
    let mut left: Vec<Tick> = Vec::new();
    for job in jobs {
        match shared.store.ticks(job.name(), 500).await {
            Ok(t) => left.extend(t.into_iter().filter(|t| t.state == TickState::Running)),
            Err(e) => tracing::error!(job = job.name(), "cannot read ticks: {e}"),
        }
    }
    // Holding the lock proves the previous leader's lock session ended; a
    // leader that notices cancels its runs at once. Give it the lease to do
    // so before taking over what it left, on any host.
    let foreign = left.iter().any(|t| {
        let owner = t.owner.as_deref().unwrap_or_default();
        owner != shared.me && !owner.is_empty() && !owner_is_gone(owner)
    });
    if foreign {
        tracing::info!(lease = ?settings.lease, "waiting a lease for the previous leader's runs to stop");
        tokio::time::sleep(settings.lease).await;
    }
    match shared
        .runner
        .close_other_schedulers("abandoned: the scheduler that ran it lost the lead")
        .await
    {
        Ok(n) if n > 0 => tracing::warn!(
            rows = n,
            "closed ledger rows left open by a previous leader"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!("cannot close a previous leader's ledger rows: {e}"),
    }
    for mut t in left {
        let owner = t.owner.clone().unwrap_or_default();
        tracing::warn!(job = %t.job, day = %t.day, "tick {} was left running by {owner} (gone): due again", t.tick);
        t.state = TickState::Due;
        t.next_attempt_at = None;
        t.error = Some(format!("abandoned: process {owner} is gone"));
        t.owner = None;
        if let Err(e) = shared.store.save_tick(&t).await {
            tracing::error!("cannot re-queue tick: {e}");
        }
    }
    match shared.store.alerts(None, 200).await {
        Ok(alerts) => {
            for a in alerts
                .into_iter()
                .filter(|a| a.delivered_at.is_none() && a.webhook.is_some())
            {
                spawn_delivery(shared, a, settings.webhook_attempts);
            }
        }
        Err(e) => tracing::error!("cannot read alerts: {e}"),
    }
}

async fn plan_job(
    shared: &Arc<Shared>,
    job: &Job,
    settings: &SchedulerConfig,
    now: DateTime<Utc>,
) -> Result<()> {
    let last = shared.store.last_tick(job.name()).await?;
    let plan = job.plan(last, now);
    if let Some(gap) = plan.gap {
        tracing::warn!(
            job = job.name(),
            ticks = gap.ticks,
            first_day = %gap.first_day,
            last_day = %gap.last_day,
            "intervals missed while no scheduler ran are not run (catchup {}); `ledgerflow backfill` repairs them if needed",
            if job.config.catchup { "beyond max_catchup" } else { "off" }
        );
        // Intervals that never started because no scheduler ran missed
        // their SLA too: one alert for the outage, keyed by its first tick.
        if let Some(deadline) = job.deadline(gap.first_tick).filter(|d| *d <= now) {
            let state = format!(
                "missed: {} interval(s) not run (days {} .. {})",
                gap.ticks, gap.first_day, gap.last_day
            );
            raise_sla_alert(
                shared,
                job,
                settings,
                (gap.first_tick, gap.first_day),
                deadline,
                state,
                now,
            )
            .await?;
        }
        shared
            .store
            .add_gap(&GapRecord {
                job: job.name().to_owned(),
                found_at: now,
                gap,
            })
            .await?;
    }
    for tick in plan.run {
        let t = Tick {
            job: job.name().to_owned(),
            tick,
            day: job.day_of(tick),
            state: TickState::Due,
            attempts: 0,
            next_attempt_at: None,
            finished_at: None,
            error: None,
            owner: None,
        };
        if shared.store.add_tick(&t).await? {
            tracing::info!(job = job.name(), day = %t.day, "tick {tick} is due");
        }
    }
    Ok(())
}

/// Starts due ticks; returns whether some due tick waits (for a slot or
/// its retry time).
async fn start_due(
    shared: &Arc<Shared>,
    job: &Arc<Job>,
    now: DateTime<Utc>,
    running: &mut Running,
    tasks: &mut Tasks,
    ids: &mut TaskIds,
    halted: &watch::Receiver<bool>,
) -> Result<bool> {
    let mut due: Vec<Tick> = shared
        .store
        .ticks(job.name(), 500)
        .await?
        .into_iter()
        .filter(|t| t.state == TickState::Due)
        .collect();
    due.sort_by_key(|t| t.tick);
    let mut waiting = false;
    for t in due {
        let key = (job.name().to_owned(), t.tick);
        if running.contains_key(&key) {
            continue;
        }
        let active = running.keys().filter(|(j, _)| j == job.name()).count();
        let same_day = running
            .iter()
            .any(|((j, _), d)| j == job.name() && *d == t.day);
        if active >= job.config.max_active_runs as usize
            || same_day
            || t.next_attempt_at.is_some_and(|at| at > now)
        {
            waiting = true;
            continue;
        }
        running.insert(key.clone(), t.day);
        // Opened in tick order, before any later tick starts.
        let open = shared.turns[job.name()].open(t.day);
        let (shared, job, halted) = (Arc::clone(shared), Arc::clone(job), halted.clone());
        let handle = tasks.spawn(async move {
            let (name, tick) = (t.job.clone(), t.tick);
            let state = run_tick(&shared, &job, t, open, halted).await;
            (name, tick, state)
        });
        ids.insert(handle.id(), key);
    }
    Ok(waiting)
}

/// One tick: attempts until success or out of retries. A retry runs only
/// the models that did not succeed (and their dependents). `_open` closes
/// the tick's day in its job's write turns if the task is dropped mid-run.
async fn run_tick(
    shared: &Shared,
    job: &Job,
    mut tick: Tick,
    _open: OpenDay,
    mut halted: watch::Receiver<bool>,
) -> TickState {
    let turns = &shared.turns[job.name()];
    let mut models = match shared.runner.select(&job.config.models) {
        Ok(m) => m,
        Err(e) => return fail_tick(shared, tick, e.to_string()).await,
    };
    loop {
        tick.attempts += 1;
        tick.state = TickState::Running;
        tick.owner = Some(shared.me.clone());
        tick.next_attempt_at = None;
        save(shared, &tick).await;
        tracing::info!(job = %tick.job, day = %tick.day, attempt = tick.attempts, "tick {} started", tick.tick);
        if tick.attempts > 1 {
            // The first attempt's day was begun by `open`, in tick order.
            turns.begin(tick.day);
        }
        let opts = RunOptions {
            trigger: format!("schedule:{}", tick.job),
            attempt: tick.attempts as i32,
            turns: (job.config.max_active_runs > 1).then(|| Arc::clone(turns)),
            ..RunOptions::default()
        };
        let result = shared.runner.run_day(tick.day, &models, &opts).await;
        // Over, however it went: a retry waiting holds no later day back.
        turns.day_done(tick.day);
        let error = match result {
            Ok(reports) => {
                let done: BTreeSet<String> = reports
                    .iter()
                    .filter(|r| match &r.status {
                        // A superseded run's day holds a newer run's output.
                        RunStatus::Success { .. }
                        | RunStatus::Skipped { .. }
                        | RunStatus::Superseded { .. } => true,
                        RunStatus::Failed { .. }
                        | RunStatus::Unavailable { .. }
                        | RunStatus::UpstreamFailed { .. } => false,
                    })
                    .map(|r| r.model.clone())
                    .collect();
                let failures: Vec<(String, Retry)> = reports
                    .iter()
                    .filter_map(|r| match &r.status {
                        RunStatus::Failed { error, retry } => {
                            Some((format!("{}: {error}", r.model), *retry))
                        }
                        RunStatus::Unavailable { reason } => {
                            Some((format!("{}: {reason}", r.model), Retry::Transient))
                        }
                        _ => None,
                    })
                    .collect();
                models.retain(|m| !done.contains(&m.name));
                // A permanent failure anywhere makes the attempt permanent:
                // retrying would repeat it.
                let permanent = failures.iter().position(|f| f.1 == Retry::Permanent);
                failures.into_iter().nth(permanent.unwrap_or(0))
            }
            Err(e) => Some((e.to_string(), e.retry())),
        };
        let Some((error, retry)) = error else {
            recheck(shared, job, &tick).await;
            // Best effort, like the recheck: results go to the check
            // history; the tick itself has succeeded.
            if let Err(e) = shared.runner.reconcile(tick.day).await {
                tracing::warn!(job = %tick.job, day = %tick.day, "reconciliation checks could not run: {e}");
            }
            tick.state = TickState::Success;
            tick.finished_at = Some(shared.clock.now());
            tick.error = None;
            tick.owner = None;
            save(shared, &tick).await;
            tracing::info!(job = %tick.job, day = %tick.day, attempts = tick.attempts, "tick {} succeeded", tick.tick);
            return TickState::Success;
        };
        if retry == Retry::Permanent {
            tracing::error!(job = %tick.job, day = %tick.day, "attempt failed permanently (a retry would repeat it): {error}");
            return fail_tick(shared, tick, error).await;
        }
        if tick.attempts > job.config.retries {
            return fail_tick(shared, tick, error).await;
        }
        let delay = job.retry_delay(tick.attempts);
        tick.state = TickState::Due;
        tick.next_attempt_at = Some(shared.clock.now() + delay);
        tick.error = Some(error.clone());
        save(shared, &tick).await;
        tracing::warn!(job = %tick.job, day = %tick.day, attempt = tick.attempts, "attempt failed: {error}; retrying in {}", humantime::format_duration(delay));
        // Waiting for a retry holds nothing: a shutdown ends it at once and
        // the tick stays due, with its attempts, for the next scheduler.
        tokio::select! {
            _ = shared.clock.sleep(delay) => {}
            _ = halted.wait_for(|stop| *stop) => return TickState::Due,
        }
    }
}

/// Re-runs the `recheck_days` days before the tick's whose inputs changed
/// since their last success (the runner skips unchanged ones). Best effort:
/// a failure is logged and recorded in the ledger, and the next tick
/// rechecks again; the tick itself has succeeded.
async fn recheck(shared: &Shared, job: &Job, tick: &Tick) {
    let Ok(models) = shared.runner.select(&job.config.models) else {
        return;
    };
    let opts = RunOptions {
        trigger: format!("schedule:{}:recheck", tick.job),
        ..RunOptions::default()
    };
    for back in (1..=job.config.recheck_days).rev() {
        let Some(day) = tick
            .day
            .checked_sub_days(chrono::Days::new(u64::from(back)))
        else {
            continue;
        };
        // Only days that were loaded: a day never run is a gap, not a
        // recheck (status shows gaps with their backfill).
        let mut loaded = false;
        for m in &models {
            if let Ok(Some(_)) = shared
                .runner
                .sink
                .last_success_fingerprint(&m.name, day)
                .await
            {
                loaded = true;
                break;
            }
        }
        if !loaded {
            continue;
        }
        match shared.runner.run_day(day, &models, &opts).await {
            Ok(reports) => {
                for r in reports {
                    match &r.status {
                        RunStatus::Success { rows, .. } => {
                            tracing::info!(job = %tick.job, day = %day, model = %r.model, rows, "recheck: the day's inputs had changed; re-run")
                        }
                        RunStatus::Failed { error, .. } => {
                            tracing::warn!(job = %tick.job, day = %day, model = %r.model, "recheck failed: {error}")
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => tracing::warn!(job = %tick.job, day = %day, "recheck failed: {e}"),
        }
    }
}

async fn fail_tick(shared: &Shared, mut tick: Tick, error: String) -> TickState {
    tick.state = TickState::Failed;
    tick.finished_at = Some(shared.clock.now());
    tick.owner = None;
    tracing::error!(job = %tick.job, day = %tick.day, attempts = tick.attempts, "tick {} failed, out of retries: {error}", tick.tick);
    tick.error = Some(error);
    save(shared, &tick).await;
    TickState::Failed
}

/// A tick's state is best effort while the database is away: the ledger,
/// written in the run's own transaction, stays the truth.
async fn save(shared: &Shared, tick: &Tick) {
    if let Err(e) = shared.store.save_tick(tick).await {
        tracing::error!(job = %tick.job, day = %tick.day, "cannot record the tick's state: {e}");
    }
}

/// One alert per tick that was not done by its deadline.
async fn check_sla(
    shared: &Arc<Shared>,
    job: &Job,
    settings: &SchedulerConfig,
    now: DateTime<Utc>,
) -> Result<()> {
    for t in shared.store.ticks(job.name(), 50).await? {
        let Some(deadline) = job.deadline(t.tick) else {
            return Ok(());
        };
        let late = match t.state {
            TickState::Success => t.finished_at.is_some_and(|f| f > deadline),
            _ => true,
        };
        if deadline > now || !late {
            continue;
        }
        let state = t.state.as_str().to_owned();
        raise_sla_alert(shared, job, settings, (t.tick, t.day), deadline, state, now).await?;
    }
    Ok(())
}

/// Records the alert for (job, tick) unless one exists; a new one is logged
/// and sent to the job's webhook.
async fn raise_sla_alert(
    shared: &Arc<Shared>,
    job: &Job,
    settings: &SchedulerConfig,
    (tick, day): (DateTime<Utc>, NaiveDate),
    deadline: DateTime<Utc>,
    state: String,
    now: DateTime<Utc>,
) -> Result<()> {
    let alert = Alert {
        job: job.name().to_owned(),
        tick,
        day,
        deadline,
        state,
        raised_at: now,
        webhook: job
            .config
            .webhook
            .clone()
            .or_else(|| settings.webhook.clone()),
        delivered_at: None,
        delivery_error: None,
    };
    if shared.store.raise(&alert).await? {
        tracing::error!(
            job = %alert.job,
            day = %alert.day,
            deadline = %alert.deadline,
            state = %alert.state,
            "SLA missed: job `{}` did not finish day {} by {} ({})",
            alert.job,
            alert.day,
            alert.deadline,
            alert.state
        );
        if alert.webhook.is_some() {
            spawn_delivery(shared, alert, settings.webhook_attempts);
        }
    }
    Ok(())
}

fn spawn_delivery(shared: &Arc<Shared>, mut alert: Alert, attempts: usize) {
    let task_shared = Arc::clone(shared);
    let task = async move {
        let shared = task_shared;
        let Some(url) = alert.webhook.clone() else {
            return;
        };
        match super::alert::deliver(&url, &alert, attempts).await {
            Ok(()) => {
                alert.delivered_at = Some(Utc::now());
                alert.delivery_error = None;
            }
            Err(e) => {
                tracing::error!(job = %alert.job, day = %alert.day, "SLA alert not delivered: {e}");
                alert.delivery_error = Some(e);
            }
        }
        if let Err(e) = shared.store.save_alert(&alert).await {
            tracing::error!("cannot record the alert's delivery: {e}");
        }
    };
    match shared.deliveries.try_lock() {
        Ok(mut set) => {
            set.spawn(task);
        }
        Err(_) => {
            tokio::spawn(task);
        }
    }
}
