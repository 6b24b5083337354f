//! Training with libtorch: float training, post-training calibration (PTQ),
//! quantization-aware fine-tuning (QAT) and the control run, as `qatc build` does them.

mod augment;
mod checkpoint;
mod dataset;
pub mod distributed;
mod fake_quant;
pub mod infer;
pub mod mapping;
mod network;
mod observer;
mod preflight;
pub mod pretrained;
mod profile;
pub mod progress;
pub mod sensitivity;
mod session;

pub use network::{
    expand_layers, images_to_tensor, normalized_images_to_tensor, Mode, Network, QuantState,
    RANGE_GROUP,
};
pub use observer::{fake_quant_weights, weight_params, Observer, WeightRange};

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::data::{self, DataError, Images};
use crate::ir::ops::format_shape;
use crate::ir::Graph;
use crate::recipe::{Optimizer, RangeMethod, Recipe, WeightRangeKind};
use crate::report::{self, DataSummary, Environment, Epoch, Stage};
use checkpoint::{Checkpoints, StageProgress};
pub use dataset::normalize;
use dataset::{batches, prepare, Batches, Prepared};
pub use preflight::check_before_training;
use profile::Phase;
use progress::{Log, Progress};
pub use session::{Session, Trained};

/// Why training could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("model `{model}` takes input {expected} but the data has {rows}x{cols} images with {channels} channel(s)\n  hint: declare `input image: f32[{channels}, {rows}, {cols}]` (images of other sizes are resized to a [C, H, W] input), or f32[{flat}] for a flat vector")]
    InputShape {
        model: String,
        expected: String,
        channels: usize,
        rows: usize,
        cols: usize,
        flat: usize,
    },
    #[error("model `{model}` outputs {shape}, but the data has {classes} classes\n  hint: make the last layer `dense(x, units = {classes})`")]
    OutputShape {
        model: String,
        shape: String,
        classes: usize,
    },
    #[error("{}: the recipe's classes {classes:?} (and limits) leave none of its {split} images", dir.display())]
    NoData {
        split: &'static str,
        dir: PathBuf,
        classes: Vec<u8>,
    },
    #[error("{stage}: the loss became {value} at epoch {epoch}, step {step}; stopping\n  hint: lower the learning rate; the last good weights are in {last_good}")]
    NonFinite {
        stage: &'static str,
        value: f64,
        epoch: usize,
        step: usize,
        last_good: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Transfer(String),
    /// A checkpoint `qatc run --weights` cannot use.
    #[error("cannot read weights {}: {source}", path.display())]
    UnreadableWeights {
        path: PathBuf,
        source: tch::TchError,
    },
    #[error("weights {} do not fit model `{model}`: {why}", path.display())]
    MismatchedWeights {
        path: PathBuf,
        model: String,
        why: String,
    },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Distributed(#[from] distributed::DistError),
    #[error("CUDA was requested but libtorch finds no CUDA device (the libtorch qatc was built against has no CUDA, or this machine has no GPU or driver)\n  hint: use --device cpu, or build qatc against a CUDA libtorch 2.13 (LIBTORCH=$(scripts/setup-libtorch.sh --cuda)) and run it where there is a GPU")]
    NoCuda,
}

/// Where and how training runs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Where weights and checkpoints are written.
    pub out_dir: PathBuf,
    pub device: Device,
    /// How progress is shown on stderr.
    pub log: Log,
    /// Continue from the checkpoints of an interrupted build in `out_dir`.
    pub resume: bool,
    /// The group of processes training data-parallel, when there are several; rank 0
    /// alone evaluates and writes checkpoints, weights, artifacts and reports.
    pub group: Option<std::sync::Arc<distributed::Group>>,
}

impl TrainOptions {
    /// Whether this process writes files (single-process, or rank 0 of a group).
    pub fn writes(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.rank() == 0)
    }
}

pub fn device(name: &str) -> Result<Device, TrainError> {
    match name {
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err(TrainError::NoCuda),
        _ => Ok(Device::Cpu),
    }
}

struct Run<'a> {
    recipe: &'a Recipe,
    progress: Progress,
    opts: &'a TrainOptions,
    /// Per-epoch checkpoints (builds have them, sensitivity analysis does not).
    checkpoints: Option<std::cell::RefCell<Checkpoints>>,
}

/// The shuffling seed of one epoch of one stage.
fn epoch_seed(seed: u64, stage: &str, epoch: usize) -> i64 {
    let stage_id = stage
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    (seed.wrapping_mul(1_000_003) ^ stage_id.wrapping_mul(7919) ^ epoch as u64) as i64 & i64::MAX
}

/// Whether the recipe unfreezes transferred layers for the control and QAT stages.
fn unfreezes_for_qat(recipe: &Recipe) -> bool {
    recipe.transfer.as_ref().is_some_and(|t| t.unfreeze_for_qat)
}

/// Post-training quantization as the recipe's `ptq` section says.
fn calibrate(net: &mut Network, data: &Batches, recipe: &Recipe) {
    net.quant.weight_range = weight_range(recipe.ptq.weight_range);
    calibrate_with(net, data, recipe.ptq.range_method());
}

/// Observes the activation ranges on `data` afresh and narrows them as `method` says.
fn calibrate_with(net: &mut Network, data: &Batches, method: RangeMethod) {
    net.reset_observers();
    net.quant.calibration = method;
    tch::no_grad(|| {
        for (xs, _) in batches(data, 256, None) {
            let _ = net.forward(&xs, Mode::Calibrate, false);
        }
    });
    net.finish_calibration(method);
}

fn weight_range(kind: WeightRangeKind) -> WeightRange {
    match kind {
        WeightRangeKind::MinMax => WeightRange::MinMax,
        WeightRangeKind::Mse => WeightRange::Mse,
    }
}

/// Accuracy on `data` and the predicted class index of every image, in batches of
/// 1000; `on_batch` sees each batch's size. Changes nothing in `net`.
fn predict(
    net: &mut Network,
    data: &Batches,
    mode: Mode,
    mut on_batch: impl FnMut(i64),
) -> (f64, Vec<i64>) {
    let mut predictions = Vec::with_capacity(data.len() as usize);
    let correct: i64 = tch::no_grad(|| {
        batches(data, 1000, None)
            .map(|(xs, ys)| {
                let predicted = net.forward(&xs, mode, false).argmax(-1, false);
                let hits = predicted.eq_tensor(&ys).sum(Kind::Int64).int64_value(&[]);
                predictions.extend(
                    Vec::<i64>::try_from(&predicted.to_device(Device::Cpu)).unwrap_or_default(),
                );
                on_batch(xs.size()[0]);
                hits
            })
            .sum()
    });
    (correct as f64 / data.len().max(1) as f64, predictions)
}

/// `counts[true][predicted]` over the test set.
fn confusion(test: &Batches, predictions: &[i64], classes: usize) -> Vec<Vec<u64>> {
    let labels = Vec::<i64>::try_from(&test.labels.to_device(Device::Cpu)).unwrap_or_default();
    let mut counts = vec![vec![0u64; classes]; classes];
    for (&truth, &predicted) in labels.iter().zip(predictions) {
        if let Some(cell) = counts
            .get_mut(truth as usize)
            .and_then(|row| row.get_mut(predicted as usize))
        {
            *cell += 1;
        }
    }
    counts
}

/// How far the activation ranges moved between two snapshots: the mean over nodes of
/// (|Δmin| + |Δmax|) / width at the start.
fn range_movement(before: &[(f32, f32)], after: &[(f32, f32)]) -> f64 {
    let moved: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(&(lo0, hi0), &(lo1, hi1))| {
            let width = ((hi0 - lo0) as f64).max(1e-12);
            ((lo1 - lo0).abs() as f64 + (hi1 - hi0).abs() as f64) / width
        })
        .collect();
    moved.iter().sum::<f64>() / moved.len().max(1) as f64
}

/// The software and machine of this build, for report.json.
pub fn environment(device: Device) -> Environment {
    Environment {
        qatc_version: env!("CARGO_PKG_VERSION").to_string(),
        libtorch_version: option_env!("QATC_LIBTORCH_VERSION")
            .unwrap_or("unknown")
            .to_string(),
        threads: tch::get_num_threads().max(0) as usize,
        cpu_features: cpu_features(),
        device: format!("{device:?}").to_lowercase(),
        omp_wait_policy: std::env::var("OMP_WAIT_POLICY").ok(),
    }
}

fn cpu_features() -> Vec<String> {
    #[allow(unused_mut)]
    let mut found: Vec<String> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(
                if std::is_x86_feature_detected!($f) {
                    found.push($f.to_string());
                }
            )*};
        }
        detect!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "avx512f",
            "avx512bw",
            "avx512vnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon".to_string());
        }
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            found.push("dotprod".to_string());
        }
    }
    found
}

/// Writes the weights of `net` to `path` (safetensors), atomically.
pub fn save(net: &Network, path: &Path) -> Result<(), TrainError> {
    let tensors = net.named_tensors();
    report::write_atomic(path, |tmp| {
        Tensor::write_safetensors(&tensors, tmp).map_err(|e| std::io::Error::other(e.to_string()))
    })
    .map_err(|source| TrainError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl Run<'_> {
    /// A fresh network, or the pretrained one when the recipe transfers; layers marked
    /// `@frozen` in the model and those in `transfer.freeze` are frozen.
    fn initial_network(&self, graph: &Graph) -> Result<Network, TrainError> {
        let mut net = Network::new(graph, self.opts.device);
        let mut frozen = graph.frozen_layers();
        if let Some(transfer) = &self.recipe.transfer {
            let loaded =
                pretrained::load(&mut net, &transfer.weights, &transfer.map, &transfer.skip)
                    .map_err(TrainError::Transfer)?;
            self.say(&format!(
                "loaded {} tensors from {}",
                loaded.len(),
                transfer.weights.display()
            ));
            let listed = network::expand_layers(graph, "transfer.freeze", &transfer.freeze)
                .map_err(TrainError::Transfer)?;
            frozen.extend(
                listed
                    .iter()
                    .filter(|n| !frozen.contains(n))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        net.freeze(&frozen).map_err(TrainError::Transfer)?;
        if !frozen.is_empty() {
            self.say(&format!("frozen: {}", frozen.join(", ")));
        }
        Ok(net)
    }

    fn say(&self, line: &str) {
        self.progress.message(line);
    }

    /// Trains `net` for `epochs` in `mode`, checkpointing after every epoch and, on
    /// `--resume`, continuing after the last checkpointed epoch of this stage.
    #[allow(clippy::too_many_arguments)]
    fn train(
        &self,
        stage: &'static str,
        net: &mut Network,
        data: &Batches,
        validation: &Batches,
        mode: Mode,
        epochs: usize,
        lr: f64,
    ) -> Result<Stage, TrainError> {
        let mut done = StageProgress {
            epochs_done: 0,
            images: 0,
            seconds: 0.0,
            history: Vec::new(),
        };
        // Load-calibrate-evaluate builds (PTQ of a pretrained model) train nothing; a
        // network whose every parameter is frozen has nothing to step (libtorch would
        // refuse the backward pass).
        if epochs == 0 {
            self.say(&format!("{stage}: no training (epochs: 0)"));
            return Ok(checkpoint::stage_from(&done, 0));
        }
        if net.trainable_count() == 0 {
            self.say(&format!(
                "{stage}: skipped, nothing to train (every parameter is frozen)"
            ));
            return Ok(checkpoint::stage_from(&done, 0));
        }
        if let Some(cp) = &self.checkpoints {
            if let Some(restored) = cp.borrow().restore(stage, net)? {
                done = restored;
            }
        }
        let group = self.opts.group.clone();
        if let Some(g) = &group {
            // Every rank continues from rank 0's state: the same epoch, the same weights.
            let epochs_done = done.epochs_done as i64;
            if g.max_i64(epochs_done)? != -g.max_i64(-epochs_done)? {
                return Err(distributed::DistError::ResumeMismatch {
                    rank: g.rank(),
                    stage,
                    epochs_done: done.epochs_done,
                    checkpoints: self.opts.out_dir.join("checkpoints"),
                }
                .into());
            }
            distributed::broadcast_variables(g, &net.vs)?;
        }
        if done.epochs_done >= epochs {
            return Ok(checkpoint::stage_from(&done, epochs));
        }
        let batch = self.recipe.train.batch_size as i64;
        let mut opt = match self.recipe.train.optimizer {
            Optimizer::Adam => nn::Adam::default().build(&net.vs, lr)?,
            Optimizer::Sgd => nn::Sgd {
                momentum: 0.9,
                ..Default::default()
            }
            .build(&net.vs, lr)?,
        };
        if net.has_learned_ranges() {
            opt.set_lr_group(RANGE_GROUP, self.recipe.qat.range_learning_rate);
        }
        let steps = (data.len() + batch - 1) / batch;
        // Freeze points of QAT, in steps from the start of this stage.
        let at_step = |epochs: f64| (epochs * steps as f64).round() as i64;
        let freeze_bn = (mode == Mode::Quantized).then(|| at_step(self.recipe.qat.freeze_bn_after));
        let freeze_observers = self
            .recipe
            .qat
            .freeze_observers_after
            .filter(|_| mode == Mode::Quantized)
            .map(at_step);
        let mut total_steps = done.epochs_done as i64 * steps;
        let done_before_steps = total_steps;
        // A resumed stage may already be past its freeze points.
        net.quant.bn_frozen |= freeze_bn.is_some_and(|s| total_steps >= s);
        net.quant.observers_frozen |= freeze_observers.is_some_and(|s| total_steps >= s);
        // Data-parallel: what is averaged over the ranks after every backward pass.
        let params: Vec<Tensor> = net
            .vs
            .trainable_variables()
            .into_iter()
            .filter(Tensor::requires_grad)
            .collect();
        let statistics = net.running_statistics();
        let in_collectives_before = group.as_ref().map(|g| g.collective_seconds());
        let stage_started = Instant::now();
        net.range_reduce = group.clone().map(|g| {
            std::rc::Rc::new(move |lo: f32, hi: f32| g.min_max(lo, hi).unwrap_or((lo, hi)))
                as std::rc::Rc<network::RangeReduce>
        });
        profile::reset();
        let mut training_seconds = 0.0;
        for epoch in done.epochs_done + 1..=epochs {
            // Seeded per epoch, so that a resumed run shuffles as an uninterrupted one would.
            tch::manual_seed(epoch_seed(self.recipe.train.seed, stage, epoch));
            let started = Instant::now();
            let order = Tensor::randperm(data.len(), (Kind::Int64, data.images.device()));
            let mut bar = self.progress.epoch(stage, epoch, epochs, steps as u64);
            let ranges_before = (mode == Mode::Quantized).then(|| net.activation_ranges());
            let (mut loss_sum, mut correct, mut images) = (0.0, 0i64, 0i64);
            let mut batch_iter = batches(data, batch, Some(&order)).enumerate();
            while let Some((step, (xs, ys))) = profile::time(Phase::Data, || {
                let (step, (xs, ys)) = batch_iter.next()?;
                // Training batches only: calibration and evaluation never come here.
                let xs = match &self.recipe.train.augment {
                    Some(a) if augment::active(a) => {
                        let seed = epoch_seed(self.recipe.train.seed, stage, epoch) as u64;
                        augment::apply(a, &xs, seed ^ (step as u64).wrapping_mul(0x9e37_79b9))
                    }
                    _ => xs,
                };
                Some((step, (xs, ys)))
            }) {
                let n = xs.size()[0];
                // Each rank trains on its shard of the same global batch.
                let (xs, ys, weight) = match &group {
                    Some(g) => {
                        let (start, len, weight) = distributed::shard(n, g.rank(), g.world());
                        (xs.narrow(0, start, len), ys.narrow(0, start, len), weight)
                    }
                    None => (xs, ys, 1.0),
                };
                let logits = profile::time(Phase::Forward, || net.forward(&xs, mode, true));
                let (loss, hits) = profile::time(Phase::Loss, || {
                    let loss = logits.cross_entropy_for_logits(&ys);
                    let hits = logits
                        .argmax(-1, false)
                        .eq_tensor(&ys)
                        .sum(Kind::Int64)
                        .int64_value(&[]);
                    (loss, hits)
                });
                let (value, hits) = match &group {
                    Some(g) => {
                        if let Some(e) = g.failure() {
                            return Err(e.into());
                        }
                        profile::time(Phase::Optimizer, || opt.zero_grad());
                        profile::time(Phase::Backward, || loss.backward());
                        // A batch smaller than the group is trained whole on every rank.
                        let hits = if xs.size()[0] == n {
                            hits as f64 * weight
                        } else {
                            hits as f64
                        };
                        let sums = distributed::average_step(
                            g,
                            &params,
                            weight,
                            &statistics,
                            &[loss.double_value(&[]) * weight, hits],
                        )?;
                        (sums[0], sums[1].round() as i64)
                    }
                    None => (profile::time(Phase::Loss, || loss.double_value(&[])), hits),
                };
                if !value.is_finite() {
                    bar.abandon();
                    let last_good = match &self.checkpoints {
                        Some(cp) => cp.borrow().last_good(stage),
                        None => "none (no checkpoints in this run)".to_string(),
                    };
                    return Err(TrainError::NonFinite {
                        stage,
                        value,
                        epoch,
                        step: step + 1,
                        last_good,
                    });
                }
                match &group {
                    // The gradients are the whole batch's, averaged over the ranks.
                    Some(_) => profile::time(Phase::Optimizer, || opt.step()),
                    None => {
                        profile::time(Phase::Optimizer, || opt.zero_grad());
                        profile::time(Phase::Backward, || loss.backward());
                        profile::time(Phase::Optimizer, || opt.step());
                    }
                }
                profile::time(Phase::Optimizer, || net.clamp_learned_ranges());
                total_steps += 1;
                if freeze_bn == Some(total_steps) {
                    net.quant.bn_frozen = true;
                }
                if freeze_observers == Some(total_steps) {
                    net.quant.observers_frozen = true;
                }
                loss_sum += value;
                correct += hits;
                images += n;
                done.images += n;
                bar.step(value, n as u64);
            }
            let seconds = started.elapsed().as_secs_f64();
            training_seconds += seconds;
            bar.validating();
            // Only rank 0 reports it.
            let val_accuracy = if self.opts.writes() {
                predict(net, validation, mode, |_| {}).0
            } else {
                0.0
            };
            let record = Epoch {
                epoch,
                train_loss: loss_sum / steps as f64,
                train_accuracy: correct as f64 / images.max(1) as f64,
                val_accuracy,
                learning_rate: lr,
                images_per_second: images as f64 / seconds.max(1e-9),
                seconds,
                range_movement: ranges_before
                    .map(|before| range_movement(&before, &net.activation_ranges())),
            };
            self.progress.epoch_done(stage, epochs, bar, &record);
            done.history.push(record);
            done.seconds += seconds;
            done.epochs_done = epoch;
            if let Some(cp) = self.checkpoints.as_ref().filter(|_| self.opts.writes()) {
                cp.borrow_mut().save(stage, net, done.clone())?;
            }
        }
        net.range_reduce = None;
        if let Some(line) =
            profile::summary(stage, total_steps - done_before_steps, training_seconds)
        {
            eprintln!("{line}");
        }
        if let (Some(g), Some(before)) = (&group, in_collectives_before) {
            let waited = g.collective_seconds() - before;
            let steps_run = (total_steps - done_before_steps).max(1);
            self.say(&format!(
                "{stage}: {waited:.2} s of {:.2} s in collectives over {} ranks ({:.2} ms per step)",
                stage_started.elapsed().as_secs_f64(),
                g.world(),
                waited * 1e3 / steps_run as f64
            ));
        }
        Ok(checkpoint::stage_from(&done, epochs))
    }

    /// Test accuracy, and the predicted class index of every test image.
    fn evaluate(
        &self,
        stage: &str,
        net: &mut Network,
        data: &Batches,
        mode: Mode,
        seconds: &mut f64,
    ) -> (f64, Vec<i64>) {
        let started = Instant::now();
        let bar = self
            .progress
            .evaluation(stage, ((data.len() + 999) / 1000) as u64);
        let (accuracy, predictions) = predict(net, data, mode, |_| bar.inc(1));
        *seconds = started.elapsed().as_secs_f64();
        self.progress
            .evaluation_done(stage, bar, data.len() as usize, accuracy, *seconds);
        (accuracy, predictions)
    }
}
