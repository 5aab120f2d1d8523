//! Health for `/healthz` (liveness) and `/readyz` (readiness), kept in one process-wide
//! state that any task updates with a function call.
//!
//! - **Live** (`/healthz`): the process answers, no fatal error was recorded, and every
//!   task that sends heartbeats sent one within [`HEARTBEAT_TIMEOUT`]. A failing liveness
//!   probe means "restart me": a wedged task, not a slow dependency.
//! - **Ready** (`/readyz`): doing the job of its mode — copying in `snapshot_only`,
//!   streaming in the streaming modes — with no fatal error, no component stalled for
//!   longer than [`STALL_GRACE`] (e.g. ClickHouse refusing inserts), and a slot that is
//!   neither lost nor past the upper warning ratio. A failing readiness probe means
//!   "look at me": restarting would not help.
//!
//! Verdicts are computed from the state and an explicit `now`, so the rules are tested
//! without clocks.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A task whose last heartbeat is older than this is reported dead by `/healthz`. Tasks
/// should beat at least every half of it, retry loops included.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// A component stalled for longer than this makes `/readyz` fail; shorter hiccups
/// (one failed insert that the retry absorbs) do not.
pub const STALL_GRACE: Duration = Duration::from_secs(15);

/// What pgch is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Loading config, connecting, checking the slot.
    Starting,
    /// Copying tables.
    Snapshotting,
    /// Applying changes from the slot.
    Streaming,
    /// Shutting down: flushing and acknowledging.
    Stopping,
}

impl Phase {
    /// Every phase, for the labelled gauge.
    pub const ALL: [Phase; 4] = [
        Phase::Starting,
        Phase::Snapshotting,
        Phase::Streaming,
        Phase::Stopping,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Snapshotting => "snapshotting",
            Phase::Streaming => "streaming",
            Phase::Stopping => "stopping",
        }
    }
}

/// A health answer and the reasons for a negative one, one sentence each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reasons: Vec<String>,
}

impl Verdict {
    fn from_reasons(reasons: Vec<String>) -> Verdict {
        Verdict {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}

/// The health state; one global instance, plain instances in tests.
#[derive(Debug)]
pub struct HealthState {
    phase: Phase,
    /// The phase in which pgch is ready: `Snapshotting` for `snapshot_only`, else `Streaming`.
    ready_phase: Phase,
    fatal: Option<String>,
    stalled: BTreeMap<String, Instant>,
    heartbeats: BTreeMap<String, Instant>,
    slot_problem: Option<String>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// Starting, ready once streaming, nothing wrong yet.
    pub const fn new() -> HealthState {
        HealthState {
            phase: Phase::Starting,
            ready_phase: Phase::Streaming,
            fatal: None,
            stalled: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            slot_problem: None,
        }
    }

    /// Sets the current phase.
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Sets the phase in which pgch counts as ready (from the configured mode).
    pub fn set_ready_phase(&mut self, phase: Phase) {
        self.ready_phase = phase;
    }

    /// Records a fatal error (the first one wins: it is the cause).
    pub fn set_fatal(&mut self, msg: String) {
        self.fatal.get_or_insert(msg);
    }

    /// Marks `component` stalled since `now` (kept if already stalled) or recovered.
    pub fn set_stalled(&mut self, component: &str, stalled: bool, now: Instant) {
        if stalled {
            self.stalled.entry(component.to_string()).or_insert(now);
        } else {
            self.stalled.remove(component);
        }
    }

    /// Records a heartbeat of `task` at `now`.
    pub fn heartbeat(&mut self, task: &str, now: Instant) {
        self.heartbeats.insert(task.to_string(), now);
    }

    /// Forgets `task` (it ended on purpose).
    pub fn task_finished(&mut self, task: &str) {
        self.heartbeats.remove(task);
    }

    /// Sets or clears the slot's problem (lost, or past the upper ratio).
    pub fn set_slot_problem(&mut self, problem: Option<String>) {
        self.slot_problem = problem;
    }

    /// `/healthz`: no fatal error and every heartbeat fresh.
    pub fn liveness(&self, now: Instant) -> Verdict {
        let mut reasons = Vec::new();
        if let Some(f) = &self.fatal {
            reasons.push(format!("fatal error: {f}"));
        }
        for (task, at) in &self.heartbeats {
            let silent = now.saturating_duration_since(*at);
            if silent > HEARTBEAT_TIMEOUT {
                reasons.push(format!(
                    "task {task} sent no heartbeat for {}s",
                    silent.as_secs()
                ));
            }
        }
        Verdict::from_reasons(reasons)
    }

    /// `/readyz`: in the ready phase, no fatal error, nothing stalled past the grace,
    /// the slot healthy.
    pub fn readiness(&self, now: Instant) -> Verdict {
        let mut reasons = Vec::new();
        if let Some(f) = &self.fatal {
            reasons.push(format!("fatal error: {f}"));
        }
        if self.phase != self.ready_phase {
            reasons.push(format!(
                "phase is {}, ready when {}",
                self.phase.as_str(),
                self.ready_phase.as_str()
            ));
        }
        for (component, since) in &self.stalled {
            let stalled = now.saturating_duration_since(*since);
            if stalled > STALL_GRACE {
                reasons.push(format!("{component} stalled for {}s", stalled.as_secs()));
            }
        }
        if let Some(p) = &self.slot_problem {
            reasons.push(p.clone());
        }
        Verdict::from_reasons(reasons)
    }
}

static STATE: Mutex<HealthState> = Mutex::new(HealthState::new());

fn state() -> MutexGuard<'static, HealthState> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets the current phase (also exported as `pgch_phase`).
pub fn set_phase(phase: Phase) {
    state().set_phase(phase);
    super::global().phase(phase);
    tracing::debug!(phase = phase.as_str(), "phase");
}

/// Sets the phase in which pgch counts as ready: `Snapshotting` for `snapshot_only`,
/// `Streaming` for the streaming modes.
pub fn set_ready_phase(phase: Phase) {
    state().set_ready_phase(phase);
}

/// Records a fatal error: `/readyz` and `/healthz` fail from now on.
pub fn set_fatal(msg: impl Into<String>) {
    state().set_fatal(msg.into());
}

/// Marks `component` (e.g. `"clickhouse"` while inserts keep failing, `"postgres"`)
/// stalled or recovered; after [`STALL_GRACE`] a stall makes `/readyz` fail.
pub fn set_stalled(component: &str, stalled: bool) {
    state().set_stalled(component, stalled, Instant::now());
}

/// Records that `task` is alive; call at least every [`HEARTBEAT_TIMEOUT`] / 2 from each
/// long-running task's loop (its retry loops included), or `/healthz` fails.
pub fn heartbeat(task: &str) {
    state().heartbeat(task, Instant::now());
}

/// Forgets `task`: it ended on purpose and is no longer expected to beat.
pub fn task_finished(task: &str) {
    state().task_finished(task);
}

/// Sets or clears the slot's problem; the slot poller calls it.
pub(crate) fn set_slot_problem(problem: Option<String>) {
    state().set_slot_problem(problem);
}

/// The `/healthz` verdict now.
pub fn liveness() -> Verdict {
    state().liveness(Instant::now())
}

/// The `/readyz` verdict now.
pub fn readiness() -> Verdict {
    state().readiness(Instant::now())
}
