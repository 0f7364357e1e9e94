//! A scripted in-memory [`Driver`] for tests of the layers above drivers
//! (task runner, alloc runner, agent): no process, no root. Each `start`
//! takes the next [`FakeRun`] from the script (or the default one), and
//! every call is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corral_types::DriverKind;
use tokio::sync::watch;

use super::{
    AllocContext, Driver, DriverError, ExecOutput, ExitResult, TaskContext, TaskHandle, now_unix_ms,
};

/// What one started task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeRun {
    /// Runs until stopped (`stop` makes it exit with SIGTERM).
    Forever,
    /// Exits by itself after `after`.
    Exit { after: Duration, exit: ExitResult },
    /// `start` fails with this reason.
    StartError(String),
    /// `start` never returns (an image pull that hangs).
    StartHangs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    PrepareAlloc { alloc_id: String },
    CleanupAlloc { alloc_id: String },
    Start { task: String, id: String },
    StartFailed { task: String },
    Stop { id: String, timeout: Duration },
    Destroy { id: String },
    Recover { id: String },
    ClearTask { alloc_id: String, task: String },
    Exec { id: String, command: Vec<String> },
}

/// What one [`Driver::exec`] of the fake gives: the output, or an error
/// with this reason.
pub type FakeExec = Result<ExecOutput, String>;

#[derive(Debug)]
pub struct FakeDriver {
    kind: DriverKind,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    script: VecDeque<FakeRun>,
    default: FakeRun,
    recover_alive: bool,
    calls: Vec<FakeCall>,
    tasks: HashMap<String, Arc<watch::Sender<Option<ExitResult>>>>,
    next_id: u64,
    exec_script: VecDeque<FakeExec>,
    exec_default: FakeExec,
}

impl Default for FakeDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeDriver {
    /// An `exec`-kind fake whose tasks run forever unless scripted.
    pub fn new() -> Self {
        Self::with_kind(DriverKind::Exec)
    }

    pub fn with_kind(kind: DriverKind) -> Self {
        FakeDriver {
            kind,
            inner: Mutex::new(Inner {
                script: VecDeque::new(),
                default: FakeRun::Forever,
                recover_alive: true,
                calls: Vec::new(),
                tasks: HashMap::new(),
                next_id: 0,
                exec_script: VecDeque::new(),
                exec_default: Ok(ExecOutput {
                    exit_code: 0,
                    output: "ok".into(),
                }),
            }),
        }
    }

    /// Appends to the script: the next start without a script entry left
    /// uses the default.
    pub fn push(&self, run: FakeRun) -> &Self {
        self.lock().script.push_back(run);
        self
    }

    pub fn set_default(&self, run: FakeRun) {
        self.lock().default = run;
    }

    /// What `recover` answers (default: true, the task still runs).
    pub fn set_recover_alive(&self, alive: bool) {
        self.lock().recover_alive = alive;
    }

    /// Appends to the exec script: each `exec` takes the next entry, then
    /// the default (exit code 0, output "ok", unless set).
    pub fn push_exec(&self, result: FakeExec) -> &Self {
        self.lock().exec_script.push_back(result);
        self
    }

    pub fn set_exec_default(&self, result: FakeExec) {
        self.lock().exec_default = result;
    }

    /// Commands run through `exec` so far.
    pub fn execs(&self) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, FakeCall::Exec { .. }))
            .count()
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Successful starts so far.
    pub fn starts(&self) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, FakeCall::Start { .. }))
            .count()
    }

    /// Tasks started or recovered, not exited and not destroyed.
    pub fn running(&self) -> usize {
        self.lock()
            .tasks
            .values()
            .filter(|tx| tx.borrow().is_none())
            .count()
    }

    /// Makes task `id` exit now with `exit` (if it still runs).
    pub fn exit(&self, id: &str, exit: ExitResult) {
        if let Some(tx) = self.lock().tasks.get(id) {
            set_exit(tx, exit);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sender(
        &self,
        h: &TaskHandle,
    ) -> Result<Arc<watch::Sender<Option<ExitResult>>>, DriverError> {
        self.lock()
            .tasks
            .get(&h.id)
            .cloned()
            .ok_or_else(|| DriverError::UnknownHandle {
                driver: self.kind,
                alloc_id: h.alloc_id.clone(),
                task: h.task.clone(),
                id: h.id.clone(),
            })
    }
}

fn set_exit(tx: &watch::Sender<Option<ExitResult>>, exit: ExitResult) {
    tx.send_if_modified(|v| {
        if v.is_none() {
            *v = Some(exit);
            true
        } else {
            false
        }
    });
}

#[async_trait]
impl Driver for FakeDriver {
    fn kind(&self) -> DriverKind {
        self.kind
    }

    async fn fingerprint(&self) -> Result<(), DriverError> {
        Ok(())
    }

    async fn prepare_alloc(&self, alloc: &AllocContext) -> Result<(), DriverError> {
        self.lock().calls.push(FakeCall::PrepareAlloc {
            alloc_id: alloc.alloc_id.clone(),
        });
        Ok(())
    }

    async fn cleanup_alloc(&self, alloc: &AllocContext) -> Result<(), DriverError> {
        self.lock().calls.push(FakeCall::CleanupAlloc {
            alloc_id: alloc.alloc_id.clone(),
        });
        Ok(())
    }

    async fn clear_task(&self, alloc: &AllocContext, task: &str) -> Result<(), DriverError> {
        let mut g = self.lock();
        g.calls.push(FakeCall::ClearTask {
            alloc_id: alloc.alloc_id.clone(),
            task: task.to_string(),
        });
        let prefix = format!("fake-{}-{task}-", alloc.alloc_id);
        g.tasks.retain(|id, _| !id.starts_with(&prefix));
        Ok(())
    }

    async fn start(&self, ctx: &TaskContext) -> Result<TaskHandle, DriverError> {
        let run = {
            let mut g = self.lock();
            g.script.pop_front().unwrap_or_else(|| g.default.clone())
        };
        if matches!(run, FakeRun::StartHangs) {
            return std::future::pending().await;
        }
        let mut g = self.lock();
        if let FakeRun::StartError(reason) = run {
            g.calls.push(FakeCall::StartFailed {
                task: ctx.task.name.clone(),
            });
            return Err(DriverError::Failed {
                alloc_id: ctx.alloc.alloc_id.clone(),
                task: ctx.task.name.clone(),
                reason,
            });
        }
        g.next_id += 1;
        let id = format!(
            "fake-{}-{}-{}",
            ctx.alloc.alloc_id, ctx.task.name, g.next_id
        );
        let tx = Arc::new(watch::channel(None).0);
        if let FakeRun::Exit { after, exit } = run {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                set_exit(&tx, exit);
            });
        }
        g.tasks.insert(id.clone(), tx);
        g.calls.push(FakeCall::Start {
            task: ctx.task.name.clone(),
            id: id.clone(),
        });
        Ok(TaskHandle {
            driver: self.kind,
            task: ctx.task.name.clone(),
            alloc_id: ctx.alloc.alloc_id.clone(),
            id,
            started_at_ms: now_unix_ms(),
            state: serde_json::json!({}),
        })
    }

    async fn wait(&self, handle: &TaskHandle) -> Result<ExitResult, DriverError> {
        let mut rx = self.sender(handle)?.subscribe();
        let r = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| DriverError::failed(handle, "fake task dropped"))?;
        r.clone()
            .ok_or_else(|| DriverError::failed(handle, "no exit result"))
    }

    async fn stop(&self, handle: &TaskHandle, timeout: Duration) -> Result<(), DriverError> {
        self.lock().calls.push(FakeCall::Stop {
            id: handle.id.clone(),
            timeout,
        });
        if let Ok(tx) = self.sender(handle) {
            set_exit(&tx, ExitResult::from_status(None, Some(15), false));
        }
        Ok(())
    }

    async fn destroy(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        let mut g = self.lock();
        g.calls.push(FakeCall::Destroy {
            id: handle.id.clone(),
        });
        g.tasks.remove(&handle.id);
        Ok(())
    }

    async fn recover(&self, handle: &TaskHandle) -> Result<bool, DriverError> {
        let mut g = self.lock();
        g.calls.push(FakeCall::Recover {
            id: handle.id.clone(),
        });
        if !g.recover_alive {
            return Ok(false);
        }
        g.tasks
            .entry(handle.id.clone())
            .or_insert_with(|| Arc::new(watch::channel(None).0));
        Ok(true)
    }

    /// The next scripted result, for a task that runs; an error otherwise.
    async fn exec(
        &self,
        handle: &TaskHandle,
        command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        let mut g = self.lock();
        g.calls.push(FakeCall::Exec {
            id: handle.id.clone(),
            command: command.to_vec(),
        });
        let running = g
            .tasks
            .get(&handle.id)
            .is_some_and(|tx| tx.borrow().is_none());
        if !running {
            return Err(DriverError::failed(handle, "the task is not running"));
        }
        let r = g
            .exec_script
            .pop_front()
            .unwrap_or_else(|| g.exec_default.clone());
        r.map_err(|reason| DriverError::failed(handle, reason))
    }
}
