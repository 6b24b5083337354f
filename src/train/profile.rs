//! Where a training step's time goes. `QATC_PROFILE=1 qatc build ...` prints, after each
//! training stage, the mean milliseconds per step spent loading the batch, in the
//! forward pass, in fake quantization, in observers, in the loss, in the backward pass
//! and in the optimizer. Off, each timer costs one thread-local read.
//!
//! libtorch runs CPU operations synchronously, so wall-clock timers around them are
//! exact there; on CUDA a phase's time lands wherever the next synchronization is.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One part of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Gathering (and augmenting) the batch.
    Data,
    /// The whole forward pass, fake quantization and observers included.
    Forward,
    /// Fake quantization of weights (with their ranges) and activations, in the forward.
    FakeQuant,
    /// Observer updates from the batch's activations, in the forward.
    Observers,
    /// Loss, accuracy and reading them back.
    Loss,
    /// The backward pass (fake quantization's gradients included).
    Backward,
    /// Zeroing gradients, the optimizer step, clamping learned ranges.
    Optimizer,
}

const PHASES: usize = 7;

impl Phase {
    fn index(self) -> usize {
        match self {
            Phase::Data => 0,
            Phase::Forward => 1,
            Phase::FakeQuant => 2,
            Phase::Observers => 3,
            Phase::Loss => 4,
            Phase::Backward => 5,
            Phase::Optimizer => 6,
        }
    }
}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("QATC_PROFILE").is_some_and(|v| !v.is_empty() && v != "0"))
}

thread_local! {
    static TOTALS: RefCell<[Duration; PHASES]> = const { RefCell::new([Duration::ZERO; PHASES]) };
}

/// Runs `f`, adding its time to `phase` when profiling.
pub fn time<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let started = Instant::now();
    let out = f();
    let spent = started.elapsed();
    TOTALS.with(|t| t.borrow_mut()[phase.index()] += spent);
    out
}

/// Starts counting afresh (a new stage).
pub fn reset() {
    if enabled() {
        TOTALS.with(|t| *t.borrow_mut() = [Duration::ZERO; PHASES]);
    }
}

/// The breakdown per step since [`reset`], one line, or `None` when not profiling.
pub fn summary(stage: &str, steps: i64, seconds: f64) -> Option<String> {
    if !enabled() || steps <= 0 {
        return None;
    }
    let t = TOTALS.with(|t| *t.borrow());
    let ms = |phase: Phase| t[phase.index()].as_secs_f64() * 1e3 / steps as f64;
    let forward = ms(Phase::Forward) - ms(Phase::FakeQuant) - ms(Phase::Observers);
    let step = seconds * 1e3 / steps as f64;
    let timed: f64 = [
        Phase::Data,
        Phase::Forward,
        Phase::Loss,
        Phase::Backward,
        Phase::Optimizer,
    ]
    .into_iter()
    .map(ms)
    .sum();
    Some(format!(
        "profile {stage}: {step:.2} ms/step over {steps} steps: data {:.2}, forward {forward:.2}, \
         fake-quant {:.2}, observers {:.2}, loss {:.2}, backward {:.2}, optimizer {:.2}, other {:.2}",
        ms(Phase::Data),
        ms(Phase::FakeQuant),
        ms(Phase::Observers),
        ms(Phase::Loss),
        ms(Phase::Backward),
        ms(Phase::Optimizer),
        step - timed,
    ))
}
