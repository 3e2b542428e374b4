//! Where each model of one day's run is, for the models that read it. A
//! dependent's query may run once its upstreams' outputs exist (not once
//! they are written: the write is PostgreSQL's time, which the next query
//! can use); its write waits until their runs are over, and it is skipped
//! if one of them failed. An output is let go as soon as every model that
//! reads it is past its reads (its query and checks), so a day holds an
//! output only as long as it is needed.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::models::ModelSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Started,
    OutputReady,
    Over { failed: bool },
}

#[derive(Debug)]
pub struct DayProgress {
    state: Mutex<State>,
    changed: Notify,
    /// Each model's upstreams in this run.
    upstreams: HashMap<String, Vec<String>>,
    /// Each model's upstreams in this run and theirs: what its plan and
    /// its SQL checks find in the session.
    reads: HashMap<String, Vec<String>>,
}

#[derive(Debug, Default)]
struct State {
    stages: HashMap<String, Stage>,
    /// Models past their reads of their upstreams' outputs.
    past_reads: HashSet<String>,
    /// Outputs already let go.
    released: HashSet<String>,
}

impl DayProgress {
    pub fn new(models: &[ModelSpec]) -> DayProgress {
        let in_run: HashSet<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let upstreams: HashMap<String, Vec<String>> = models
            .iter()
            .map(|m| {
                let ups = m
                    .depends_on
                    .iter()
                    .filter(|d| in_run.contains(d.as_str()))
                    .cloned()
                    .collect();
                (m.name.clone(), ups)
            })
            .collect();
        let stages = models
            .iter()
            .map(|m| (m.name.clone(), Stage::Started))
            .collect();
        let reads = models
            .iter()
            .map(|m| {
                let mut seen: Vec<String> = Vec::new();
                let mut next: Vec<&String> = upstreams[&m.name].iter().collect();
                while let Some(up) = next.pop() {
                    if !seen.contains(up) {
                        seen.push(up.clone());
                        next.extend(upstreams[up].iter());
                    }
                }
                (m.name.clone(), seen)
            })
            .collect();
        DayProgress {
            state: Mutex::new(State {
                stages,
                ..State::default()
            }),
            changed: Notify::new(),
            upstreams,
            reads,
        }
    }

    /// Whether `model` reads another model of the run.
    pub fn reads_any(&self, model: &str) -> bool {
        self.upstreams.get(model).is_some_and(|ups| !ups.is_empty())
    }

    /// A model on a dependency cycle within the run, if there is one (its
    /// models would wait for each other forever).
    pub fn cycle(&self) -> Option<String> {
        let mut left: HashMap<&str, &Vec<String>> = self
            .upstreams
            .iter()
            .map(|(m, ups)| (m.as_str(), ups))
            .collect();
        loop {
            let ready: Vec<&str> = left
                .iter()
                .filter(|(_, ups)| ups.iter().all(|u| !left.contains_key(u.as_str())))
                .map(|(m, _)| *m)
                .collect();
            if ready.is_empty() {
                let mut stuck: Vec<&str> = left.keys().copied().collect();
                stuck.sort_unstable();
                return stuck.first().map(|m| m.to_string());
            }
            for m in ready {
                left.remove(m);
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, model: &str, stage: Stage) {
        let mut state = self.state();
        let now = state.stages.entry(model.to_string()).or_insert(stage);
        // An output ready after the run is over changes nothing.
        if !matches!(*now, Stage::Over { .. }) {
            *now = stage;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// `model`'s output can be read (kept, or recomputable by a view).
    pub fn output_ready(&self, model: &str) {
        self.set(model, Stage::OutputReady);
    }

    /// `model`'s run is over; `failed` skips its dependents.
    pub fn over(&self, model: &str, failed: bool) {
        self.set(model, Stage::Over { failed });
    }

    /// Waits until `done` holds for each of `model`'s upstreams, then
    /// returns the first of them that failed.
    async fn wait(&self, model: &str, done: impl Fn(Stage) -> bool) -> Option<String> {
        let ups = self.upstreams.get(model)?;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.state();
                let stage = |up: &String| state.stages.get(up).copied().unwrap_or(Stage::Started);
                if let Some(up) = ups
                    .iter()
                    .find(|up| stage(up) == Stage::Over { failed: true })
                {
                    return Some(up.clone());
                }
                if ups.iter().all(|up| done(stage(up))) {
                    return None;
                }
            }
            changed.await;
        }
    }

    /// Waits until `model`'s upstreams can be read; the first that failed.
    pub async fn readable(&self, model: &str) -> Option<String> {
        self.wait(model, |s| s != Stage::Started).await
    }

    /// Waits until `model`'s upstreams' runs are over; the first that
    /// failed.
    pub async fn upstreams_over(&self, model: &str) -> Option<String> {
        self.wait(model, |s| matches!(s, Stage::Over { .. })).await
    }

    /// `model` reads its upstreams no more; returns the outputs no model
    /// of the run will read now (each once). An output not yet made is
    /// its maker's to let go ([`unread`](Self::unread)): its own checks
    /// may have it in the session.
    pub fn past_reads(&self, model: &str) -> Vec<String> {
        let mut state = self.state();
        state.past_reads.insert(model.to_string());
        let mut free = Vec::new();
        for up in self.reads.get(model).into_iter().flatten() {
            if state.stages.get(up) == Some(&Stage::Started) {
                continue;
            }
            if !self.still_read(&state, up) && state.released.insert(up.clone()) {
                free.push(up.clone());
            }
        }
        free
    }

    /// Whether `model`'s output, just made, has no reader left (each that
    /// had one was skipped before its read): then it goes at once, once.
    pub fn unread(&self, model: &str) -> bool {
        let mut state = self.state();
        let read_by_any = self
            .reads
            .values()
            .any(|ups| ups.iter().any(|u| u == model));
        read_by_any && !self.still_read(&state, model) && state.released.insert(model.to_string())
    }

    fn still_read(&self, state: &State, output: &str) -> bool {
        self.reads.iter().any(|(reader, ups)| {
            ups.iter().any(|u| u == output) && !state.past_reads.contains(reader)
        })
    }
}

/// Marks its model's run over as failed when dropped without
/// [`Over::set`]: a run that ended in an error still frees its dependents.
pub struct Over<'a> {
    progress: &'a DayProgress,
    model: &'a str,
    set: bool,
}

impl<'a> Over<'a> {
    pub fn new(progress: &'a DayProgress, model: &'a str) -> Over<'a> {
        Over {
            progress,
            model,
            set: false,
        }
    }

    pub fn set(mut self, failed: bool) {
        self.progress.over(self.model, failed);
        self.set = true;
    }
}

impl Drop for Over<'_> {
    fn drop(&mut self) {
        if !self.set {
            self.progress.over(self.model, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn model(name: &str, depends_on: &[&str]) -> ModelSpec {
        let header = if depends_on.is_empty() {
            String::new()
        } else {
            format!("-- depends_on: {}\n", depends_on.join(", "))
        };
        ModelSpec::parse(
            &format!("models/{name}.sql"),
            &format!("-- key: day\n-- grain: day\n-- write: replace_day\n{header}SELECT 1"),
        )
        .unwrap()
    }

    fn models() -> Vec<ModelSpec> {
        vec![
            model("ua", &[]),
            model("bdm", &["ua"]),
            model("both", &["ua", "bdm"]),
            model("rt", &[]),
        ]
    }

    async fn pending<T>(f: impl std::future::Future<Output = T>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_dependent_reads_once_the_output_exists_and_writes_once_the_run_is_over() {
        let p = DayProgress::new(&models());
        assert!(p.reads_any("bdm") && !p.reads_any("rt"));
        assert_eq!(p.readable("rt").await, None, "no upstreams in the run");
        assert!(pending(p.readable("bdm")).await);
        p.output_ready("ua");
        assert_eq!(p.readable("bdm").await, None);
        assert!(
            pending(p.upstreams_over("bdm")).await,
            "ua is being written"
        );
        assert!(pending(p.readable("both")).await, "bdm has no output yet");
        p.over("ua", false);
        assert_eq!(p.upstreams_over("bdm").await, None);
        p.output_ready("ua");
        assert!(pending(p.upstreams_over("both")).await, "over stays over");
    }

    #[tokio::test]
    async fn a_failed_upstream_is_named_whether_read_or_written() {
        let p = DayProgress::new(&models());
        p.output_ready("ua");
        p.over("ua", true);
        assert_eq!(p.readable("bdm").await.as_deref(), Some("ua"));
        assert_eq!(p.upstreams_over("both").await.as_deref(), Some("ua"));
        // A run ended by an error without saying so fails too.
        let p = DayProgress::new(&models());
        drop(Over::new(&p, "ua"));
        assert_eq!(p.readable("bdm").await.as_deref(), Some("ua"));
        let p = DayProgress::new(&models());
        Over::new(&p, "ua").set(false);
        assert_eq!(p.readable("bdm").await, None);
    }

    #[test]
    fn a_cycle_within_the_run_is_found() {
        assert_eq!(DayProgress::new(&models()).cycle(), None);
        // An upstream outside the run is no cycle.
        assert_eq!(DayProgress::new(&[model("b", &["a"])]).cycle(), None);
        let looped = [
            model("a", &["c"]),
            model("b", &["a"]),
            model("c", &["b"]),
            model("d", &[]),
        ];
        assert_eq!(DayProgress::new(&looped).cycle().as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn an_output_is_let_go_when_its_last_reader_is_past_its_reads() {
        let p = DayProgress::new(&models());
        p.output_ready("ua");
        p.output_ready("bdm");
        assert!(p.past_reads("rt").is_empty());
        assert!(p.past_reads("bdm").is_empty(), "`both` reads ua too");
        let mut free = p.past_reads("both");
        free.sort();
        assert_eq!(free, vec!["bdm".to_string(), "ua".to_string()]);
        assert!(p.past_reads("both").is_empty(), "each once");
        assert!(!p.unread("ua"), "already let go");
    }

    /// A reader of a reader finds the first output in the session too
    /// (its plan binds upstreams transitively); an output not made yet is
    /// let go by its maker, after its own checks.
    #[tokio::test]
    async fn transitive_readers_hold_an_output_and_a_skipped_reader_leaves_it_to_its_maker() {
        let chain = [
            model("a", &[]),
            model("b", &["a"]),
            model("c", &["b"]),
            model("e", &["a"]),
        ];
        let p = DayProgress::new(&chain);
        p.output_ready("a");
        p.output_ready("b");
        assert!(p.past_reads("e").is_empty(), "c reads a through b");
        assert!(p.past_reads("b").is_empty(), "c reads b and a");
        let mut free = p.past_reads("c");
        free.sort();
        assert_eq!(free, vec!["a".to_string(), "b".to_string()]);

        let p = DayProgress::new(&[model("a", &[]), model("f", &[]), model("d", &["a", "f"])]);
        // d is skipped (f failed) while a is still being checked.
        assert!(p.past_reads("d").is_empty(), "a is not made yet");
        p.output_ready("a");
        assert!(p.unread("a"), "its only reader is gone");
        assert!(!p.unread("a"), "once");
    }
}
