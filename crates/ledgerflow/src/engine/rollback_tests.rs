//! The Ballista scheduler's graph after an executor is lost mid-job: a
//! stage rolled back and run again must publish each output once. Without
//! the patch in `vendor/ballista-scheduler` the outputs of tasks that had
//! finished on the surviving executor were listed twice, and a job then
//! succeeded with those rows read twice (a day's unique senders 7,076
//! against 4,758).
//!
//! Driven through the scheduler's own graph with status updates as
//! executors send them; no executor runs, so no timing decides the outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::{self, task_status, RunningTask, ShuffleWritePartition};
use ballista_core::serde::scheduler::{
    ExecutorMetadata, ExecutorOperatingSystemSpecification, ExecutorSpecification, TaskKey,
};
use ballista_scheduler::planner::DefaultDistributedPlanner;
use ballista_scheduler::state::execution_graph::{
    ExecutionGraph, StaticExecutionGraph, TaskDescription,
};
use ballista_scheduler::state::execution_stage::{ExecutionStage, TaskInfo};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

fn executor(id: &str) -> ExecutorMetadata {
    ExecutorMetadata {
        id: id.to_string(),
        host: "127.0.0.1".to_string(),
        port: 50051,
        grpc_port: 50052,
        specification: ExecutorSpecification::default().with_vcores(1),
        os_info: ExecutorOperatingSystemSpecification::default(),
    }
}

/// The next ready task, bound to `on` as the scheduler binds one (a task
/// per input partition).
fn bind(graph: &mut StaticExecutionGraph, on: &ExecutorMetadata) -> Option<TaskDescription> {
    graph.revive();
    let stage = graph.fetch_running_stage(&[])?;
    let slice = stage.pending.next_slice(1);
    if slice.is_empty() {
        return None;
    }
    let task_id = stage.task_infos.len();
    stage.task_infos.push(TaskInfo {
        task_id,
        scheduled_time: 0,
        launch_time: 0,
        start_exec_time: 0,
        end_exec_time: 0,
        finish_time: 0,
        task_status: task_status::Status::Running(RunningTask {
            executor_id: on.id.clone(),
        }),
        global_input_partition_ids: slice.clone(),
        vcores_consumed: 1,
    });
    Some(TaskDescription {
        session_id: "session".into(),
        key: TaskKey {
            job_id: "job".into(),
            stage_id: stage.stage_id,
            task_id,
        },
        stage_attempt_num: stage.stage_attempt_num,
        task_attempt: 0,
        global_input_partition_ids: slice,
        vcores_consumed: 1,
        plan: stage.plan.clone(),
        session_config: stage.session_config.clone(),
    })
}

/// What an executor reports for a task that finished: one shuffle file per
/// output partition.
fn finished(task: TaskDescription, on: &ExecutorMetadata) -> protobuf::TaskStatus {
    successful(
        &on.id,
        task.key.job_id.as_ref(),
        task.key.stage_id as u32,
        task.stage_attempt_num as u32,
        task.key.task_id as u32,
        task.get_output_partition_number() as u64,
    )
}

/// The status of a task that finished on `executor`, with one shuffle file
/// for each of `outputs` partitions.
fn successful(
    executor: &str,
    job_id: &str,
    stage_id: u32,
    stage_attempt_num: u32,
    task_id: u32,
    outputs: u64,
) -> protobuf::TaskStatus {
    protobuf::TaskStatus {
        task_id,
        job_id: job_id.to_string(),
        stage_id,
        stage_attempt_num,
        launch_time: 0,
        start_exec_time: 0,
        end_exec_time: 0,
        metrics: vec![],
        status: Some(task_status::Status::Successful(protobuf::SuccessfulTask {
            executor_id: executor.to_string(),
            partitions: (0..outputs)
                .map(|p| ShuffleWritePartition {
                    partition_id: p,
                    num_batches: 1,
                    num_rows: 1,
                    num_bytes: 1,
                    file_id: Some(u64::from(task_id)),
                    is_sort_shuffle: false,
                })
                .collect(),
            runtime_stats: vec![],
            task_column_stats: vec![],
            window_state: vec![],
        })),
    }
}

/// `count(*)` over a grouped aggregate, the shape of
/// `block_daily_metrics` reading `user_activity_agg`: three stages (the
/// partial aggregate, the final aggregate, the count).
const COUNT_OF_GROUPS: &str =
    "SELECT count(*) FROM (SELECT address, sum(value) FROM t GROUP BY address)";
/// A grouped aggregate: two stages, the final one of four partitions.
const GROUPS: &str = "SELECT address, sum(value) FROM t GROUP BY address";

/// Table `t` (address, value): one row per partition, addressed as given.
fn table(addresses: &[&str]) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("address", DataType::Utf8, false),
        Field::new("value", DataType::Int64, false),
    ]));
    let partition = |a: &&str| {
        vec![RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![*a])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap()]
    };
    MemTable::try_new(schema.clone(), addresses.iter().map(partition).collect()).unwrap()
}

async fn graph(sql: &str) -> StaticExecutionGraph {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    ctx.register_table("t", Arc::new(table(&["a", "b"])))
        .unwrap();
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    StaticExecutionGraph::new(
        "scheduler",
        &"job".into(),
        "",
        "session",
        plan,
        0,
        Arc::new(SessionConfig::new_with_ballista()),
        &mut DefaultDistributedPlanner::new(),
        None,
    )
    .unwrap()
}

/// Binds the next ready task to `on` and reports it finished there; false
/// when no task is ready.
fn run_one(graph: &mut StaticExecutionGraph, on: &ExecutorMetadata) -> bool {
    let Some(task) = bind(graph, on) else {
        return false;
    };
    let status = finished(task, on);
    graph.update_task_status(on, vec![status], 1, 1).unwrap();
    true
}

/// Finishes every task ready now on `on`; how many there were.
fn finish_ready(graph: &mut StaticExecutionGraph, on: &ExecutorMetadata) -> usize {
    let mut n = 0;
    while run_one(graph, on) {
        n += 1;
    }
    n
}

/// Runs the first stage's tasks on `on` in turn; how many there were.
fn finish_first_stage(graph: &mut StaticExecutionGraph, on: &[&ExecutorMetadata]) -> usize {
    graph.revive();
    let first = graph
        .fetch_running_stage(&[])
        .expect("a first stage")
        .stage_id;
    let mut n = 0;
    while graph
        .fetch_running_stage(&[])
        .is_some_and(|s| s.stage_id == first)
    {
        assert!(run_one(graph, on[n % on.len()]), "a first-stage task");
        n += 1;
    }
    n
}

/// How many locations each stage was given for each input partition, and
/// how many the job's result lists.
fn published(graph: &StaticExecutionGraph) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (id, stage) in graph.stages() {
        let inputs = match stage {
            ExecutionStage::UnResolved(s) => &s.inputs,
            ExecutionStage::Resolved(s) => &s.inputs,
            ExecutionStage::Running(s) => &s.inputs,
            ExecutionStage::Successful(s) => &s.inputs,
            ExecutionStage::Failed(_) => continue,
        };
        for (input, output) in inputs {
            for (partition, locations) in &output.partition_locations {
                counts.insert(
                    format!("stage {id} input {input} partition {partition}"),
                    locations.len(),
                );
            }
        }
    }
    counts.insert("job result".into(), graph.output_locations().len());
    counts
}

#[tokio::test]
async fn a_stage_run_again_after_an_executor_is_lost_publishes_each_output_once() {
    let (e1, e2) = (executor("e1"), executor("e2"));
    // The same job with no executor lost: what it publishes.
    let mut plain = graph(COUNT_OF_GROUPS).await;
    while finish_ready(&mut plain, &e1) > 0 {}
    assert!(plain.is_successful());
    let expected = published(&plain);

    let mut lost = graph(COUNT_OF_GROUPS).await;
    // The first stage runs on both executors.
    let n = finish_first_stage(&mut lost, &[&e1, &e2]);
    assert!(
        n >= 2,
        "the first stage ran {n} task(s), not on both executors"
    );
    // The second stage (it reads e1's outputs): one task finishes on e2
    // and publishes its output, then e1 is lost.
    assert!(run_one(&mut lost, &e2), "a second-stage task");
    let (reset, _) = lost.reset_stages_on_lost_executor(&e1.id).unwrap();
    assert!(!reset.is_empty(), "nothing was rolled back");
    // Everything runs again on e2, to the end.
    while finish_ready(&mut lost, &e2) > 0 {}
    assert!(lost.is_successful());
    assert_eq!(published(&lost), expected);
}

#[tokio::test]
async fn the_final_stage_run_again_after_an_executor_is_lost_returns_each_partition_once() {
    let (e1, e2) = (executor("e1"), executor("e2"));
    let mut plain = graph(GROUPS).await;
    while finish_ready(&mut plain, &e1) > 0 {}
    let expected = published(&plain);

    let mut lost = graph(GROUPS).await;
    finish_first_stage(&mut lost, &[&e1]);
    // A final task finishes on e2 (its output is the job's result), then
    // e1, whose outputs the final stage reads, is lost.
    assert!(run_one(&mut lost, &e2), "a final task");
    lost.reset_stages_on_lost_executor(&e1.id).unwrap();
    while finish_ready(&mut lost, &e2) > 0 {}
    assert!(lost.is_successful());
    assert_eq!(published(&lost), expected);
}

/// Records what the scheduler launches (nothing runs: the test reports each
/// task as its executor would) and fails launches onto executors marked
/// dead, as a SIGKILLed executor's connection fails.
#[derive(Default)]
struct Launches {
    launched: std::sync::Mutex<Vec<(String, protobuf::MultiTaskDefinition)>>,
    dead: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[async_trait::async_trait]
impl ballista_scheduler::state::task_manager::TaskLauncher for Launches {
    async fn launch_tasks(
        &self,
        executor: &ExecutorMetadata,
        tasks: Vec<protobuf::MultiTaskDefinition>,
        _: &ballista_scheduler::state::executor_manager::ExecutorManager,
    ) -> ballista_core::error::Result<std::collections::HashSet<ballista_core::JobId>> {
        if self.dead.lock().unwrap().contains(&executor.id) {
            return Err(ballista_core::error::BallistaError::General(
                "transport error: connection reset".into(),
            ));
        }
        let mut launched = self.launched.lock().unwrap();
        launched.extend(tasks.into_iter().map(|t| (executor.id.clone(), t)));
        Ok(Default::default())
    }
}

impl Launches {
    /// Waits (up to 5 s) for a launch not yet taken that `wanted` accepts,
    /// and takes it.
    async fn take(
        &self,
        wanted: impl Fn(&str, &protobuf::MultiTaskDefinition) -> bool,
    ) -> Option<(String, protobuf::MultiTaskDefinition)> {
        for _ in 0..500 {
            {
                let mut launched = self.launched.lock().unwrap();
                if let Some(i) = launched.iter().position(|(e, t)| wanted(e, t)) {
                    return Some(launched.remove(i));
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        None
    }
}

/// What `executor` reports for a launched task set: each task finished,
/// one shuffle file per output partition (of `outputs`).
fn finished_set(
    executor: &str,
    set: &protobuf::MultiTaskDefinition,
    outputs: u64,
) -> Vec<protobuf::TaskStatus> {
    set.task_ids
        .iter()
        .map(|t| {
            successful(
                executor,
                &set.job_id,
                set.stage_id,
                set.stage_attempt_num,
                t.task_id,
                outputs,
            )
        })
        .collect()
}

/// The hang an executor SIGKILLed mid-backfill once caused: the scheduler
/// learns of the loss when a launch onto it fails, rolls back the stage
/// reading its outputs and cancels that stage's task on the survivor. The
/// cancelled task's status then reached a stage that no longer knew it, so
/// the vcores it held were never given back; the survivor's whole budget
/// was gone and no task (of this job or any other) was launched again.
/// Now they are refunded at the cancel, exactly once.
#[tokio::test]
async fn a_task_cancelled_by_an_executor_loss_gives_its_vcores_back_once() {
    use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpc;
    use ballista_scheduler::config::SchedulerConfig;
    use ballista_scheduler::scheduler_server::SchedulerServer;
    use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

    let config = SchedulerConfig::default()
        .with_scheduler_policy(ballista_core::config::TaskSchedulingPolicy::PushStaged);
    let cluster = ballista_scheduler::cluster::BallistaCluster::new_from_config(&config)
        .await
        .unwrap();
    // Registered in the cluster state directly: the executor manager's
    // registration first dials the executor, and none runs here.
    let executors = cluster.cluster_state();
    let launches = Arc::new(Launches::default());
    let mut server: SchedulerServer<LogicalPlanNode, PhysicalPlanNode> =
        SchedulerServer::new_with_task_launcher(
            "localhost:50050".into(),
            cluster,
            Default::default(),
            Arc::new(config),
            Arc::new(ballista_scheduler::metrics::NoopMetricsCollector::default()),
            launches.clone(),
        );
    server.init().await.unwrap();
    let (lost, survivor) = ("lost", "survivor");
    for id in [lost, survivor] {
        let mut meta = executor(id);
        meta.specification = ExecutorSpecification::default().with_vcores(2);
        let data = ballista_core::serde::scheduler::ExecutorData {
            executor_id: id.into(),
            total_vcores: 2,
            available_vcores: 2,
        };
        executors.register_executor(meta, data).await.unwrap();
    }
    let report = |executor: &str, statuses: Vec<protobuf::TaskStatus>| {
        let server = server.clone();
        let executor = executor.to_string();
        async move {
            server
                .update_task_status(tonic::Request::new(protobuf::UpdateTaskStatusParams {
                    executor_id: executor,
                    task_status: statuses,
                }))
                .await
                .unwrap();
        }
    };
    let session = SessionConfig::new_with_ballista()
        .with_target_partitions(4)
        .with_ballista_adaptive_query_planner(false);
    let ctx = server
        .state
        .session_manager
        .create_or_update_session("session", &session)
        .await
        .unwrap();
    ctx.register_table("t", Arc::new(table(&["a", "b", "c", "d"])))
        .unwrap();
    let submit = |name: &'static str| {
        let (server, ctx) = (server.clone(), ctx.clone());
        async move {
            let plan = ctx.sql(GROUPS).await.unwrap().logical_plan().clone();
            server.submit_job(name, ctx, &plan, None).await.unwrap()
        }
    };
    let job = submit("first").await;

    // The first stage (the partial aggregate over 4 partitions) runs on
    // both executors; the lost one dies before the second stage is
    // launched onto it.
    let first = |_: &str, t: &protobuf::MultiTaskDefinition| t.stage_id == 1;
    let a = launches.take(first).await.expect("a first-stage launch");
    let b = launches
        .take(first)
        .await
        .expect("a second first-stage launch");
    assert_ne!(a.0, b.0, "the first stage ran on one executor only");
    launches.dead.lock().unwrap().insert(lost.into());
    for (executor, set) in [a, b] {
        report(&executor, finished_set(&executor, &set, 4)).await;
    }
    // The final stage's task on the survivor, launched beside the failed
    // launch onto the lost executor, holds the survivor's 2 vcores.
    let cancelled = launches
        .take(|e, t| e == survivor && t.stage_id == 2)
        .await
        .expect("the final stage launched on the survivor");
    let held: u32 = cancelled.1.task_ids.iter().map(|t| t.vcores_consumed).sum();
    assert_eq!(held, 2, "{cancelled:?}");
    // Once the loss is handled, the lost first-stage outputs run again on
    // the survivor: only possible if the cancelled task's vcores came back.
    let rerun = launches
        .take(|e, t| e == survivor && t.stage_id == 1)
        .await
        .expect("no task launched after the loss: the survivor's vcores leaked");
    assert!(rerun.1.stage_attempt_num > 0, "{rerun:?}");
    report(survivor, finished_set(survivor, &rerun.1, 4)).await;
    // The final stage's new attempt starts on the survivor; only then does
    // the cancelled task's own status arrive. It must refund nothing (its
    // vcores came back at the cancel), though its task id may name a task
    // of the new attempt.
    let again = launches
        .take(|e, t| e == survivor && t.stage_id == 2)
        .await
        .expect("the final stage launched again");
    assert!(again.1.stage_attempt_num > cancelled.1.stage_attempt_num);
    report(survivor, finished_set(survivor, &cancelled.1, 4)).await;
    report(survivor, finished_set(survivor, &again.1, 4)).await;
    let succeeded = |status: Option<protobuf::JobStatus>| {
        matches!(
            status.and_then(|s| s.status),
            Some(protobuf::job_status::Status::Successful(_))
        )
    };
    // The rest of the job, reported as launched, until it has succeeded.
    let mut waited = 0;
    while !succeeded(
        server
            .state
            .task_manager
            .get_job_status(&job)
            .await
            .unwrap(),
    ) {
        let next = launches.launched.lock().unwrap().pop();
        match next {
            Some((executor, set)) => {
                assert_eq!(executor, survivor);
                report(&executor, finished_set(&executor, &set, 4)).await;
            }
            None => {
                waited += 1;
                assert!(
                    waited < 500,
                    "the job neither succeeded nor launched a task"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    // The survivor's budget is whole again, no more: a new job's first
    // launches onto it hold 2 vcores at most (4 after a double refund).
    submit("second").await;
    let mut held = 0;
    while let Some((_, set)) = launches.take(|e, t| e == survivor && t.stage_id == 1).await {
        held += set.task_ids.iter().map(|t| t.vcores_consumed).sum::<u32>();
        if held >= 2 {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    held += launches
        .launched
        .lock()
        .unwrap()
        .iter()
        .filter(|(e, _)| e == survivor)
        .flat_map(|(_, t)| t.task_ids.iter().map(|t| t.vcores_consumed))
        .sum::<u32>();
    assert_eq!(held, 2);
}
