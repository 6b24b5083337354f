//! What a build tells the person or the CI log watching it: live bars on a terminal,
//! one plain line per epoch and evaluation in a log, or JSON lines for tools.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::report::Epoch;

/// How training progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Nothing but errors.
    Quiet,
    /// Progress bars redrawn in place (a terminal).
    Bars,
    /// One human-readable line per epoch, evaluation and message (a log file).
    Lines,
    /// One JSON object per line with an `event` field (tools).
    Json,
}

impl Log {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn auto() -> Log {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Log::Bars
        } else {
            Log::Lines
        }
    }
}

/// Weight of the newest step in the smoothed loss; ~50 steps of memory.
const LOSS_SMOOTHING: f64 = 0.02;

/// Progress of one training epoch.
pub struct EpochProgress {
    log: Log,
    bar: ProgressBar,
    started: Instant,
    images: u64,
    /// Exponential moving average of the step losses, bias-corrected by `weight`.
    smoothed: f64,
    weight: f64,
}

impl EpochProgress {
    /// Records one training step: its loss and how many images it saw.
    pub fn step(&mut self, loss: f64, images: u64) {
        self.images += images;
        self.smoothed = (1.0 - LOSS_SMOOTHING) * self.smoothed + LOSS_SMOOTHING * loss;
        self.weight = (1.0 - LOSS_SMOOTHING) * self.weight + LOSS_SMOOTHING;
        self.bar.inc(1);
        if self.log == Log::Bars {
            let per_second = self.images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            self.bar.set_message(format!(
                "loss {:.4}  {per_second:.0} img/s",
                self.smoothed / self.weight
            ));
        }
    }

    /// Shown while the epoch's validation runs.
    pub fn validating(&self) {
        if self.log == Log::Bars {
            self.bar.set_message("validating…");
        }
    }

    /// Leaves the bar where it stopped (the build failed).
    pub fn abandon(self) {
        self.bar.abandon();
    }
}

/// Where a build's progress goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub log: Log,
}

impl Progress {
    /// A message about the build (what was loaded, frozen, resumed, ...).
    pub fn message(&self, text: &str) {
        match self.log {
            Log::Quiet => {}
            Log::Bars | Log::Lines => eprintln!("{text}"),
            Log::Json => json_line(serde_json::json!({ "event": "message", "text": text })),
        }
    }

    /// The model summary, before training starts.
    pub fn summary(&self, summary: &crate::summary::Summary) {
        match self.log {
            Log::Quiet => {}
            Log::Bars | Log::Lines => eprint!("{}", summary.text()),
            Log::Json => {
                let mut value = serde_json::to_value(summary).expect("summaries serialize");
                value["event"] = "summary".into();
                json_line(value);
            }
        }
    }

    /// Starts an epoch of `steps` batches.
    pub fn epoch(&self, stage: &str, epoch: usize, epochs: usize, steps: u64) -> EpochProgress {
        let bar = match self.log {
            Log::Bars => {
                let bar = ProgressBar::new(steps);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>14} [{bar:28}] {pos}/{len} {msg}  eta {eta} ({elapsed})",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{stage} {epoch}/{epochs}"));
                bar
            }
            Log::Quiet | Log::Lines | Log::Json => ProgressBar::hidden(),
        };
        EpochProgress {
            log: self.log,
            bar,
            started: Instant::now(),
            images: 0,
            smoothed: 0.0,
            weight: 0.0,
        }
    }

    /// Ends an epoch with what it measured.
    pub fn epoch_done(&self, stage: &str, epochs: usize, progress: EpochProgress, record: &Epoch) {
        let summary = format!(
            "loss {:.4}, train accuracy {:.2}%, test accuracy {:.2}%, {:.0} images/s, {:.1} s",
            record.train_loss,
            record.train_accuracy * 100.0,
            record.val_accuracy * 100.0,
            record.images_per_second,
            record.seconds
        );
        let moved = record.range_movement.map_or(String::new(), |m| {
            format!(", ranges moved {:.2}%", m * 100.0)
        });
        match self.log {
            Log::Quiet => {}
            Log::Bars => {
                progress.bar.set_style(
                    ProgressStyle::with_template("{prefix:>14} {msg}").expect("static template"),
                );
                progress
                    .bar
                    .finish_with_message(format!("{summary}{moved}"));
            }
            Log::Lines => eprintln!("{stage} epoch {}/{epochs}: {summary}{moved}", record.epoch),
            Log::Json => {
                let mut value = serde_json::to_value(record).expect("epochs serialize");
                value["event"] = "epoch".into();
                value["stage"] = stage.into();
                value["epochs"] = epochs.into();
                json_line(value);
            }
        }
    }

    /// A bar over `batches` evaluation batches (terminal only).
    pub fn evaluation(&self, stage: &str, batches: u64) -> ProgressBar {
        match self.log {
            Log::Bars => {
                let bar = ProgressBar::new(batches);
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>14} [{bar:28}] {pos}/{len} {msg}")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("{stage} test"));
                bar
            }
            Log::Quiet | Log::Lines | Log::Json => ProgressBar::hidden(),
        }
    }

    /// Ends a stage's test evaluation.
    pub fn evaluation_done(
        &self,
        stage: &str,
        bar: ProgressBar,
        images: usize,
        accuracy: f64,
        seconds: f64,
    ) {
        match self.log {
            Log::Quiet => {}
            Log::Bars => bar.finish_with_message(format!("accuracy {:.2}%", accuracy * 100.0)),
            Log::Lines => eprintln!(
                "{stage} test: accuracy {:.2}% on {images} images, {seconds:.1} s",
                accuracy * 100.0
            ),
            Log::Json => json_line(serde_json::json!({
                "event": "evaluation",
                "stage": stage,
                "images": images,
                "accuracy": accuracy,
                "seconds": seconds,
            })),
        }
    }
}

fn json_line(value: serde_json::Value) {
    eprintln!("{value}");
}
