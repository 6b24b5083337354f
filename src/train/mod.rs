//! Training with libtorch: float training, post-training calibration (PTQ),
//! quantization-aware fine-tuning (QAT) and the control run, as `qatc build` does them.

mod augment;
mod checkpoint;
mod dataset;
pub mod infer;
pub mod mapping;
mod network;
mod observer;
mod preflight;
pub mod pretrained;
pub mod progress;
pub mod sensitivity;

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
use crate::report::{self, Artifacts, DataSummary, Environment, Epoch, Report, Stage};
use checkpoint::{Checkpoints, StageProgress};
use dataset::{batches, prepare, Batches, Prepared};
use preflight::{check_before_training, ensure_pretrained};
use progress::{Log, Progress};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
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
    #[error(transparent)]
    Lower(#[from] crate::lower::LowerError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Artifact(#[from] crate::int8::ArtifactError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error(transparent)]
    Tflite(#[from] crate::export::tflite::ExportError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("CUDA was requested but this libtorch has no CUDA device\n  hint: use --device cpu, or point LIBTORCH at a CUDA build of libtorch 2.13")]
    NoCuda,
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub device: Device,
    /// How progress is shown on stderr.
    pub log: Log,
    /// Continue from the checkpoints of an interrupted build in `out_dir`.
    pub resume: bool,
    /// Also write `model.onnx` (the QAT int8 model as ONNX).
    pub emit_onnx: bool,
    /// Also write `model.tflite` (the QAT int8 model as TensorFlow Lite).
    pub emit_tflite: bool,
    /// The model summary, kept in report.json and report.html.
    pub summary: Option<crate::summary::Summary>,
}

pub fn device(name: &str) -> Result<Device, BuildError> {
    match name {
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err(BuildError::NoCuda),
        _ => Ok(Device::Cpu),
    }
}

struct Run<'a> {
    recipe: &'a Recipe,
    progress: Progress,
    opts: &'a BuildOptions,
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

/// Trains, calibrates and fine-tunes the quantized-stage `graph` as the recipe says,
/// writes the weights and report.json to `opts.out_dir`, and returns the report.
pub fn build(graph: &Graph, recipe: &Recipe, opts: &BuildOptions) -> Result<Report, BuildError> {
    build_in_chain(graph, recipe, opts, &[])
}

/// How many pretrained models `transfer.build` may chain (a model built from one built from ...).
const MAX_TRANSFER_CHAIN: usize = 8;

/// [`build`], from within the builds of the pretrained models in `chain` (outermost first).
fn build_in_chain(
    graph: &Graph,
    recipe: &Recipe,
    opts: &BuildOptions,
    chain: &[PathBuf],
) -> Result<Report, BuildError> {
    let started = Instant::now();
    check_before_training(graph, recipe, opts)?;
    if let Some(transfer) = &recipe.transfer {
        ensure_pretrained(transfer, opts, chain)?;
    }
    tch::manual_seed(recipe.train.seed as i64);
    let fingerprint = (
        crate::ir::dump::text(graph),
        serde_json::to_string(recipe).expect("recipes serialize"),
    );
    let (checkpoints, note) = Checkpoints::open(&opts.out_dir, fingerprint, opts.resume);
    let run = Run {
        recipe,
        progress: Progress { log: opts.log },
        opts,
        checkpoints: Some(std::cell::RefCell::new(checkpoints)),
    };
    if let Some(note) = note {
        run.say(&note);
    }
    for dir in [opts.out_dir.clone(), opts.out_dir.join("checkpoints")] {
        let removed = report::clean_stale(&dir);
        if !removed.is_empty() {
            run.say(&format!(
                "removed what an interrupted build left in {}: {}",
                dir.display(),
                removed.join(", ")
            ));
        }
    }
    let Prepared {
        train,
        test,
        test_set,
        calibration,
        classes,
        class_names,
        dir,
        notes: data_notes,
    } = prepare(graph, recipe, opts.device)?;
    for note in &data_notes {
        run.say(note);
    }

    let float_path = opts.out_dir.join("float.safetensors");
    let ptq_path = opts.out_dir.join("ptq.safetensors");
    let qat_path = opts.out_dir.join("qat.safetensors");
    let int8_dir = opts.out_dir.join("int8");
    let report_path = opts.out_dir.join("report.json");

    // 1. Float training, from pretrained weights with frozen layers when transferring.
    let mut float = run.initial_network(graph)?;
    run.say(&format!(
        "{}: {} parameters, {} training images",
        graph.name,
        float.trainable_count(),
        train.len()
    ));
    let mut float_stage = run.train(
        "float",
        &mut float,
        &train,
        &test,
        Mode::Float,
        recipe.train.epochs,
        recipe.train.learning_rate,
    )?;
    float_stage.accuracy = run
        .evaluate(
            "float",
            &mut float,
            &test,
            Mode::Float,
            &mut float_stage.eval_seconds,
        )
        .0;
    // From here on the artifacts of an earlier build are replaced one by one: its report
    // goes first, so that a build killed half-way never leaves a report beside files it
    // does not describe.
    match std::fs::remove_file(&report_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BuildError::Write {
                path: report_path,
                source,
            })
        }
    }
    save(&float, &float_path)?;

    // 2. PTQ: calibrate ranges on training images, then evaluate quantized.
    let mut ptq = float.duplicate();
    let mut ptq_stage = Stage::default();
    calibrate(&mut ptq, &calibration, recipe);
    let ptq_predictions;
    (ptq_stage.accuracy, ptq_predictions) = run.evaluate(
        "PTQ",
        &mut ptq,
        &test,
        Mode::Quantized,
        &mut ptq_stage.eval_seconds,
    );
    save(&ptq, &ptq_path)?;
    let mut notes = Vec::new();
    let ptq_int8 = run.int8(
        "PTQ",
        graph,
        &ptq.quantized_params(),
        &test_set,
        &classes,
        &ptq_predictions,
        &mut ptq_stage,
    );
    skip_unlowerable(ptq_int8, &mut notes)?;

    // 3. Control: the same extra epochs in float, then PTQ.
    let unfreeze = recipe.transfer.as_ref().is_some_and(|t| t.unfreeze_for_qat);
    let mut control = float.duplicate();
    if unfreeze {
        control.unfreeze();
    }
    let mut control_stage = run.train(
        "control",
        &mut control,
        &train,
        &test,
        Mode::Float,
        recipe.qat.epochs,
        recipe.qat.learning_rate,
    )?;
    calibrate(&mut control, &calibration, recipe);
    control_stage.accuracy = run
        .evaluate(
            "control",
            &mut control,
            &test,
            Mode::Quantized,
            &mut control_stage.eval_seconds,
        )
        .0;

    // 4. QAT: fine-tune with fake quantization, starting from the calibrated ranges.
    let mut qat = ptq.duplicate();
    if unfreeze {
        qat.unfreeze();
    }
    qat.quant = QuantState {
        weight_range: weight_range(recipe.qat.weight_range),
        bn_frozen: recipe.qat.freeze_bn_after == 0.0,
        observers_frozen: recipe.qat.freeze_observers_after == Some(0.0),
        calibration: RangeMethod::MinMax,
    };
    let init = recipe.qat.init_observer.method(recipe.ptq.percentile);
    if init != recipe.ptq.range_method() {
        calibrate_with(&mut qat, &calibration, init);
    }
    if recipe.qat.learn_ranges {
        qat.learn_ranges();
    }
    let mut qat_stage = run.train(
        "QAT",
        &mut qat,
        &train,
        &test,
        Mode::Quantized,
        recipe.qat.epochs,
        recipe.qat.learning_rate,
    )?;
    let qat_predictions;
    (qat_stage.accuracy, qat_predictions) = run.evaluate(
        "QAT",
        &mut qat,
        &test,
        Mode::Quantized,
        &mut qat_stage.eval_seconds,
    );
    save(&qat, &qat_path)?;
    let qat_int8 = run.int8(
        "QAT",
        graph,
        &qat.quantized_params(),
        &test_set,
        &classes,
        &qat_predictions,
        &mut qat_stage,
    );
    let (int8, onnx, tflite) = match skip_unlowerable(qat_int8, &mut notes)? {
        Some(int8_model) => {
            // The artifact and its exports say which class each output is by name.
            let outputs = crate::int8::graph::output_count(int8_model.graph());
            let int8_model = if class_names.len() == outputs {
                int8_model
                    .with_class_names(class_names.clone())
                    .map_err(crate::lower::LowerError::from)?
            } else {
                int8_model
            };
            crate::int8::artifact::save(&int8_dir, &int8_model)?;
            let onnx_path = opts.out_dir.join("model.onnx");
            let onnx = if opts.emit_onnx {
                crate::export::onnx::write(&onnx_path, &int8_model)?;
                Some(onnx_path.display().to_string())
            } else {
                None
            };
            let tflite_path = opts.out_dir.join("model.tflite");
            let tflite = if opts.emit_tflite {
                crate::export::tflite::write(&tflite_path, &int8_model)?;
                Some(tflite_path.display().to_string())
            } else {
                None
            };
            (Some(int8_dir.display().to_string()), onnx, tflite)
        }
        None if opts.emit_onnx || opts.emit_tflite => {
            return Err(BuildError::Transfer(format!(
                "cannot emit {}: {}",
                if opts.emit_onnx { "ONNX" } else { "TFLite" },
                notes.last().map_or("", String::as_str)
            )))
        }
        None => (None, None, None),
    };

    let html_path = opts.out_dir.join("report.html");
    let confusion = confusion(&test, &qat_predictions, classes.len());
    let report = Report {
        model: graph.name.clone(),
        quant: report::quant_label(graph),
        device: format!("{:?}", opts.device).to_lowercase(),
        data: DataSummary {
            dir: dir.display().to_string(),
            classes,
            class_names,
            train_images: train.len() as usize,
            test_images: test.len() as usize,
            calibration_images: calibration.len() as usize,
        },
        float: float_stage,
        ptq: ptq_stage,
        qat: qat_stage,
        control: control_stage,
        total_seconds: started.elapsed().as_secs_f64(),
        artifacts: Artifacts {
            float: float_path.display().to_string(),
            qat: qat_path.display().to_string(),
            report: report_path.display().to_string(),
            ptq: Some(ptq_path.display().to_string()),
            int8,
            onnx,
            tflite,
            html: Some(html_path.display().to_string()),
        },
        notes,
        summary: opts.summary.clone(),
        confusion: Some(confusion),
        environment: Some(environment(opts.device)),
    };
    report::write_atomic_bytes(&report_path, report.to_json().as_bytes()).map_err(|source| {
        BuildError::Write {
            path: report_path,
            source,
        }
    })?;
    // A sensitivity analysis run earlier into the same directory joins the page.
    let sensitivity = std::fs::read(opts.out_dir.join("sensitivity.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let page = report::html::build_page(&report, Some(graph), sensitivity.as_ref());
    report::write_atomic_bytes(&html_path, page.as_bytes()).map_err(|source| {
        BuildError::Write {
            path: html_path,
            source,
        }
    })?;
    Ok(report)
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

/// A model the int8 lowering does not support yet still gets its fake-quant results:
/// the lowering error becomes a note in the report instead of failing the build.
fn skip_unlowerable<T>(
    result: Result<T, BuildError>,
    notes: &mut Vec<String>,
) -> Result<Option<T>, BuildError> {
    match result {
        Ok(value) => Ok(Some(value)),
        // An invalid lowered graph is a bug in qatc, not a model without an int8 form.
        Err(BuildError::Lower(e)) if !matches!(e, crate::lower::LowerError::Invalid(_)) => {
            notes.push(format!(
                "no int8 model: {}",
                e.to_string().replace('\n', " ")
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
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
fn environment(device: Device) -> Environment {
    Environment {
        qatc_version: env!("CARGO_PKG_VERSION").to_string(),
        libtorch_version: option_env!("QATC_LIBTORCH_VERSION")
            .unwrap_or("unknown")
            .to_string(),
        threads: tch::get_num_threads().max(0) as usize,
        cpu_features: cpu_features(),
        device: format!("{device:?}").to_lowercase(),
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

fn save(net: &Network, path: &Path) -> Result<(), BuildError> {
    let tensors = net.named_tensors();
    report::write_atomic(path, |tmp| {
        Tensor::write_safetensors(&tensors, tmp).map_err(|e| std::io::Error::other(e.to_string()))
    })
    .map_err(|source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl Run<'_> {
    /// A fresh network, or the pretrained one when the recipe transfers; layers marked
    /// `@frozen` in the model and those in `transfer.freeze` are frozen.
    fn initial_network(&self, graph: &Graph) -> Result<Network, BuildError> {
        let mut net = Network::new(graph, self.opts.device);
        let mut frozen = graph.frozen_layers();
        if let Some(transfer) = &self.recipe.transfer {
            let loaded =
                pretrained::load(&mut net, &transfer.weights, &transfer.map, &transfer.skip)
                    .map_err(BuildError::Transfer)?;
            self.say(&format!(
                "loaded {} tensors from {}",
                loaded.len(),
                transfer.weights.display()
            ));
            let listed = network::expand_layers(graph, "transfer.freeze", &transfer.freeze)
                .map_err(BuildError::Transfer)?;
            frozen.extend(
                listed
                    .iter()
                    .filter(|n| !frozen.contains(n))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        net.freeze(&frozen).map_err(BuildError::Transfer)?;
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
    ) -> Result<Stage, BuildError> {
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
        // A resumed stage may already be past its freeze points.
        net.quant.bn_frozen |= freeze_bn.is_some_and(|s| total_steps >= s);
        net.quant.observers_frozen |= freeze_observers.is_some_and(|s| total_steps >= s);
        for epoch in done.epochs_done + 1..=epochs {
            // Seeded per epoch, so that a resumed run shuffles as an uninterrupted one would.
            tch::manual_seed(epoch_seed(self.recipe.train.seed, stage, epoch));
            let started = Instant::now();
            let order = Tensor::randperm(data.len(), (Kind::Int64, data.images.device()));
            let mut bar = self.progress.epoch(stage, epoch, epochs, steps as u64);
            let ranges_before = (mode == Mode::Quantized).then(|| net.activation_ranges());
            let (mut loss_sum, mut correct, mut images) = (0.0, 0i64, 0i64);
            for (step, (xs, ys)) in batches(data, batch, Some(&order)).enumerate() {
                // Training batches only: calibration and evaluation never come here.
                let xs = match &self.recipe.train.augment {
                    Some(a) if augment::active(a) => {
                        let seed = epoch_seed(self.recipe.train.seed, stage, epoch) as u64;
                        augment::apply(a, &xs, seed ^ (step as u64).wrapping_mul(0x9e37_79b9))
                    }
                    _ => xs,
                };
                let logits = net.forward(&xs, mode, true);
                let loss = logits.cross_entropy_for_logits(&ys);
                let value = loss.double_value(&[]);
                if !value.is_finite() {
                    bar.abandon();
                    let last_good = match &self.checkpoints {
                        Some(cp) => cp.borrow().last_good(stage),
                        None => "none (no checkpoints in this run)".to_string(),
                    };
                    return Err(BuildError::NonFinite {
                        stage,
                        value,
                        epoch,
                        step: step + 1,
                        last_good,
                    });
                }
                opt.backward_step(&loss);
                net.clamp_learned_ranges();
                total_steps += 1;
                if freeze_bn == Some(total_steps) {
                    net.quant.bn_frozen = true;
                }
                if freeze_observers == Some(total_steps) {
                    net.quant.observers_frozen = true;
                }
                loss_sum += value;
                let n = xs.size()[0];
                correct += logits
                    .argmax(-1, false)
                    .eq_tensor(&ys)
                    .sum(Kind::Int64)
                    .int64_value(&[]);
                images += n;
                done.images += n;
                bar.step(value, n as u64);
            }
            let seconds = started.elapsed().as_secs_f64();
            bar.validating();
            let val_accuracy = predict(net, validation, mode, |_| {}).0;
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
            if let Some(cp) = &self.checkpoints {
                cp.borrow_mut().save(stage, net, done.clone())?;
            }
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

    /// Lowers the quantized parameters to int8, evaluates the test set with the integer
    /// runtime, and records its accuracy and argmax agreement with fake quantization.
    #[allow(clippy::too_many_arguments)]
    fn int8(
        &self,
        stage: &str,
        graph: &Graph,
        params: &crate::quantized::QuantizedParams,
        test: &Images,
        classes: &[u8],
        fake_quant: &[i64],
        into: &mut Stage,
    ) -> Result<crate::int8::Model, BuildError> {
        let started = Instant::now();
        let keep = (classes.len() < 10
            || classes.iter().enumerate().any(|(i, &c)| c as usize != i))
        .then(|| classes.to_vec());
        // Built from images: the artifact takes raw pixels, normalized as in training.
        let int8_model = crate::lower::lower_params(graph, params, keep)?
            .with_normalize(dataset::normalize(self.recipe, graph)?)
            .map_err(crate::lower::LowerError::from)?;
        let model = crate::runtime::Model::new(&int8_model);
        let predicted = model.argmax(&model.run_pixels(&test.pixels)?);
        let n = test.len().max(1) as f64;
        let correct = predicted
            .iter()
            .zip(&test.labels)
            .filter(|(&p, l)| classes.get(p) == Some(l))
            .count();
        let agree = predicted
            .iter()
            .zip(fake_quant)
            .filter(|(&p, &f)| p as i64 == f)
            .count();
        into.int8_accuracy = Some(correct as f64 / n);
        into.int8_agreement = Some(agree as f64 / n);
        into.int8_eval_seconds = Some(started.elapsed().as_secs_f64());
        self.say(&format!(
            "{stage} int8 ({} kernels): accuracy {:.2}%, argmax agrees with fake-quant on {:.2}%",
            model.isa().name(),
            correct as f64 / n * 100.0,
            agree as f64 / n * 100.0
        ));
        Ok(int8_model)
    }
}
