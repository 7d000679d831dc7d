//! Supervised tasks: every long-running task of the hub is started here
//! with a name and a way to start it again. A task that ends before
//! shutdown — by panicking or returning an error — is logged, counted
//! (`sensor_hub_task_failures_total{task}`), and shown as down on
//! `/healthz` (503 naming it) until it runs again. It is restarted at most
//! [`RESTARTS_PER_MINUTE`] times a minute; a task that cannot be restarted
//! (no factory, or its budget is spent) stops the hub with an error naming
//! it, so the process exits non-zero and systemd can start it afresh.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::{labeled_counters, Collector, DescriptorEncoder};

/// Restarts allowed per task in any 60-second window.
pub const RESTARTS_PER_MINUTE: usize = 3;

/// How a task ends: `Err` with a message is a failure.
pub type TaskResult = Result<(), String>;
type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send>>;
type Factory = Box<dyn Fn() -> TaskFuture + Send + Sync>;

/// Which tasks are down, and how often each failed; shared with `/healthz`
/// and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<HealthState>>);

#[derive(Debug, Default)]
struct HealthState {
    down: BTreeSet<&'static str>,
    failures: HashMap<&'static str, u64>,
}

impl Health {
    /// Names of the tasks that are down now, sorted.
    pub fn failed(&self) -> Vec<&'static str> {
        self.lock().down.iter().copied().collect()
    }

    /// Failures of each task so far.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self.lock().failures.iter().map(|(&k, &v)| (k, v)).collect();
        v.sort_unstable();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed_now(&self, task: &'static str) {
        let mut s = self.lock();
        s.down.insert(task);
        *s.failures.entry(task).or_insert(0) += 1;
    }

    fn running(&self, task: &'static str) {
        self.lock().down.remove(task);
    }
}

/// `sensor_hub_task_failures_total` on `/metrics`.
#[derive(Debug)]
pub struct HealthCollector(pub Health);

impl Collector for HealthCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let failures = self.0.failures();
        labeled_counters(
            &mut e,
            (
                "sensor_hub_task_failures",
                "Hub tasks that ended unexpectedly (panicked or failed), by task.",
            ),
            "task",
            failures.iter().map(|&(task, n)| (task, n)),
        )
    }
}

struct Task {
    factory: Option<Factory>,
    restarts: VecDeque<tokio::time::Instant>,
}

/// Starts and watches the hub's tasks.
pub struct Supervisor {
    health: Health,
    cancel: CancellationToken,
    tasks: HashMap<&'static str, Task>,
    running: JoinSet<TaskResult>,
    /// Which task each running future is (a panic loses its output).
    names: HashMap<tokio::task::Id, &'static str>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor whose tasks stop when `cancel` fires.
    pub fn new(health: Health, cancel: CancellationToken) -> Supervisor {
        Supervisor {
            health,
            cancel,
            tasks: HashMap::new(),
            running: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// Starts `name` from `factory`, which can start it again after a
    /// failure.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, factory: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        let factory: Factory = Box::new(move || Box::pin(factory()));
        self.start(name, &factory);
        self.tasks.insert(
            name,
            Task {
                factory: Some(factory),
                restarts: VecDeque::new(),
            },
        );
    }

    /// Starts `name` once; if it fails it is not restarted and the hub stops.
    pub fn spawn_once<Fut>(&mut self, name: &'static str, task: Fut)
    where
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        let id = self.running.spawn(task).id();
        self.names.insert(id, name);
        self.tasks.insert(
            name,
            Task {
                factory: None,
                restarts: VecDeque::new(),
            },
        );
    }

    fn start(&mut self, name: &'static str, factory: &Factory) {
        let id = self.running.spawn(factory()).id();
        self.names.insert(id, name);
    }

    /// Watches the tasks until shutdown (`Ok`) or until a task fails and
    /// cannot be restarted (`Err` naming it and why).
    pub async fn watch(&mut self) -> Result<(), String> {
        loop {
            let joined = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                joined = self.running.join_next_with_id() => joined,
            };
            let Some(joined) = joined else {
                // Nothing left to watch: wait for shutdown.
                self.cancel.cancelled().await;
                return Ok(());
            };
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let (id, why) = match joined {
                Ok((id, Ok(()))) => (id, "ended unexpectedly".to_string()),
                Ok((id, Err(e))) => (id, format!("failed: {e}")),
                Err(e) if e.is_panic() => (e.id(), "panicked".to_string()),
                Err(e) => (e.id(), "was cancelled".to_string()),
            };
            let name = self.names.remove(&id).unwrap_or("unknown");
            self.health.failed_now(name);
            tracing::error!(task = name, "hub task {why}");
            self.restart(name, &why)?;
        }
    }

    /// Waits for every task to end (after shutdown was signalled).
    pub async fn join_all(&mut self) {
        while self.running.join_next().await.is_some() {}
    }

    fn restart(&mut self, name: &'static str, why: &str) -> Result<(), String> {
        let now = tokio::time::Instant::now();
        let Some(task) = self.tasks.get_mut(name) else {
            return Err(format!("the hub's {name} task {why}"));
        };
        while task
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t).as_secs() >= 60)
        {
            task.restarts.pop_front();
        }
        let Some(factory) = task.factory.take() else {
            return Err(format!(
                "the hub's {name} task {why} and cannot be restarted; the hub stops"
            ));
        };
        if task.restarts.len() >= RESTARTS_PER_MINUTE {
            task.factory = Some(factory);
            return Err(format!(
                "the hub's {name} task {why} {RESTARTS_PER_MINUTE} times within a minute; the hub stops"
            ));
        }
        task.restarts.push_back(now);
        self.start(name, &factory);
        if let Some(task) = self.tasks.get_mut(name) {
            task.factory = Some(factory);
        }
        tracing::warn!(task = name, "hub task restarted");
        self.health.running(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
