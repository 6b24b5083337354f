//! Training with libtorch: float training, post-training calibration (PTQ),
//! quantization-aware fine-tuning (QAT) and the control run, as `qatc build` does them.

mod network;
mod observer;

pub use network::{images_to_tensor, Mode, Network, QuantState, RANGE_GROUP};
pub use observer::{fake_quant_weights, weight_params, Observer, WeightRange};

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::data::{self, DataError, Images, Split};
use crate::ir::ops::format_shape;
use crate::ir::Graph;
use crate::recipe::{Optimizer, RangeMethod, Recipe, WeightRangeKind};
use crate::report::{self, Artifacts, DataSummary, Report, Stage};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("model `{model}` takes input {expected} but the data has {rows}x{cols} images\n  hint: declare `input image: f32[1, {rows}, {cols}]` (or f32[{flat}] for a flat vector)")]
    InputShape {
        model: String,
        expected: String,
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
    #[error("the recipe's class filter leaves no {split} images")]
    NoData { split: &'static str },
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
    #[error(transparent)]
    Lower(#[from] crate::lower::LowerError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
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
    /// Hide progress bars and stage messages.
    pub quiet: bool,
    /// Also write `model.onnx` (the QAT int8 model as ONNX).
    pub emit_onnx: bool,
}

pub fn device(name: &str) -> Result<Device, BuildError> {
    match name {
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err(BuildError::NoCuda),
        _ => Ok(Device::Cpu),
    }
}

/// A data split as tensors on the device, labels remapped to 0..classes.
struct Batches {
    images: Tensor,
    labels: Tensor,
}

impl Batches {
    fn new(set: &Images, shape: &[usize], classes: &[u8], device: Device) -> Batches {
        let labels: Vec<i64> = set
            .labels
            .iter()
            .map(|l| classes.iter().position(|c| c == l).expect("filtered") as i64)
            .collect();
        Batches {
            images: images_to_tensor(&set.pixels, shape, device),
            labels: Tensor::from_slice(&labels).to_device(device),
        }
    }

    fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    fn head(&self, n: i64) -> Batches {
        let n = n.min(self.len());
        Batches {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
        }
    }
}

struct Run<'a> {
    recipe: &'a Recipe,
    opts: &'a BuildOptions,
}

/// Trains, calibrates and fine-tunes the quantized-stage `graph` as the recipe says,
/// writes the weights and report.json to `opts.out_dir`, and returns the report.
pub fn build(graph: &Graph, recipe: &Recipe, opts: &BuildOptions) -> Result<Report, BuildError> {
    let started = Instant::now();
    tch::manual_seed(recipe.train.seed as i64);
    let run = Run { recipe, opts };

    let dir = recipe.data_dir();
    let classes: Vec<u8> = recipe
        .data
        .classes
        .clone()
        .unwrap_or_else(|| (0..10).collect());
    let train_set =
        data::load_split(&dir, Split::Train)?.select(Some(&classes), recipe.data.train_limit);
    let test_set =
        data::load_split(&dir, Split::Test)?.select(Some(&classes), recipe.data.test_limit);
    if train_set.is_empty() {
        return Err(BuildError::NoData { split: "training" });
    }
    if test_set.is_empty() {
        return Err(BuildError::NoData { split: "test" });
    }
    let shape = input_shape(graph, &train_set)?;
    let out_shape = &graph.node(graph.output).shape;
    if out_shape.len() != 1 || out_shape[0] < classes.len() {
        return Err(BuildError::OutputShape {
            model: graph.name.clone(),
            shape: format_shape(out_shape),
            classes: classes.len(),
        });
    }
    let train = Batches::new(&train_set, &shape, &classes, opts.device);
    let test = Batches::new(&test_set, &shape, &classes, opts.device);
    let calibration = train.head(recipe.ptq.calibration_samples as i64);

    let float_path = opts.out_dir.join("float.safetensors");
    let ptq_path = opts.out_dir.join("ptq.safetensors");
    let qat_path = opts.out_dir.join("qat.safetensors");
    let int8_dir = opts.out_dir.join("int8");

    // 1. Float training.
    let mut float = Network::new(graph, opts.device);
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
        Mode::Float,
        recipe.train.epochs,
        recipe.train.learning_rate,
        "no weights yet",
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
    run.int8(
        "PTQ",
        graph,
        &ptq_path,
        &test_set,
        &classes,
        &ptq_predictions,
        &mut ptq_stage,
    )?;

    // 3. Control: the same extra epochs in float, then PTQ.
    let mut control = float.duplicate();
    let last_good = float_path.display().to_string();
    let mut control_stage = run.train(
        "control",
        &mut control,
        &train,
        Mode::Float,
        recipe.qat.epochs,
        recipe.qat.learning_rate,
        &last_good,
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
    qat.quant = QuantState {
        weight_range: weight_range(recipe.qat.weight_range),
        bn_frozen: recipe.qat.freeze_bn_after == 0.0,
        observers_frozen: recipe.qat.freeze_observers_after == Some(0.0),
        calibration: RangeMethod::MinMax,
    };
    if recipe.qat.learn_ranges {
        qat.learn_ranges();
    }
    let mut qat_stage = run.train(
        "QAT",
        &mut qat,
        &train,
        Mode::Quantized,
        recipe.qat.epochs,
        recipe.qat.learning_rate,
        &last_good,
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
    let (int_graph, int_tensors) = run.int8(
        "QAT",
        graph,
        &qat_path,
        &test_set,
        &classes,
        &qat_predictions,
        &mut qat_stage,
    )?;
    crate::runtime::save(&int8_dir, &int_graph, &int_tensors)?;
    let onnx_path = opts.out_dir.join("model.onnx");
    let onnx = if opts.emit_onnx {
        crate::export::onnx::write(&onnx_path, &int_graph, &int_tensors)?;
        Some(onnx_path.display().to_string())
    } else {
        None
    };

    let report_path = opts.out_dir.join("report.json");
    let report = Report {
        model: graph.name.clone(),
        device: format!("{:?}", opts.device).to_lowercase(),
        data: DataSummary {
            dir: dir.display().to_string(),
            classes,
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
            int8: Some(int8_dir.display().to_string()),
            onnx,
        },
    };
    report::write_atomic_bytes(&report_path, report.to_json().as_bytes()).map_err(|source| {
        BuildError::Write {
            path: report_path,
            source,
        }
    })?;
    Ok(report)
}

fn input_shape(graph: &Graph, set: &Images) -> Result<Vec<usize>, BuildError> {
    let expected = &graph.node(graph.inputs[0]).shape;
    let (rows, cols) = (set.rows, set.cols);
    let fits = expected.as_slice() == [1, rows, cols] || expected.as_slice() == [rows * cols];
    if !fits {
        return Err(BuildError::InputShape {
            model: graph.name.clone(),
            expected: format_shape(expected),
            rows,
            cols,
            flat: rows * cols,
        });
    }
    Ok(expected.clone())
}

/// Post-training quantization as the recipe's `ptq` section says.
fn calibrate(net: &mut Network, data: &Batches, recipe: &Recipe) {
    let method = recipe.ptq.range_method();
    net.quant.weight_range = weight_range(recipe.ptq.weight_range);
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

fn batches<'a>(
    data: &'a Batches,
    size: i64,
    order: Option<&Tensor>,
) -> impl Iterator<Item = (Tensor, Tensor)> + 'a {
    let n = data.len();
    let order = order.map(Tensor::shallow_clone);
    (0..n).step_by(size as usize).map(move |start| {
        let len = size.min(n - start);
        match &order {
            Some(idx) => {
                let idx = idx.narrow(0, start, len);
                (
                    data.images.index_select(0, &idx),
                    data.labels.index_select(0, &idx),
                )
            }
            None => (
                data.images.narrow(0, start, len),
                data.labels.narrow(0, start, len),
            ),
        }
    })
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
    fn say(&self, line: &str) {
        if !self.opts.quiet {
            eprintln!("{line}");
        }
    }

    fn bar(&self, len: u64, label: String) -> ProgressBar {
        if self.opts.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label);
        bar
    }

    #[allow(clippy::too_many_arguments)]
    fn train(
        &self,
        stage: &'static str,
        net: &mut Network,
        data: &Batches,
        mode: Mode,
        epochs: usize,
        lr: f64,
        last_good: &str,
    ) -> Result<Stage, BuildError> {
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
        let started = Instant::now();
        let mut seen = 0i64;
        let mut total_steps = 0i64;
        for epoch in 1..=epochs {
            let order = Tensor::randperm(data.len(), (Kind::Int64, data.images.device()));
            let bar = self.bar(steps as u64, format!("{stage} {epoch}/{epochs}"));
            let mut loss_sum = 0.0;
            for (step, (xs, ys)) in batches(data, batch, Some(&order)).enumerate() {
                let loss = net.forward(&xs, mode, true).cross_entropy_for_logits(&ys);
                let value = loss.double_value(&[]);
                if !value.is_finite() {
                    bar.abandon();
                    return Err(BuildError::NonFinite {
                        stage,
                        value,
                        epoch,
                        step: step + 1,
                        last_good: last_good.to_string(),
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
                seen += xs.size()[0];
                bar.inc(1);
                if step % 20 == 0 {
                    bar.set_message(format!("loss {:.4}", loss_sum / (step + 1) as f64));
                }
            }
            bar.finish_with_message(format!("loss {:.4}", loss_sum / steps as f64));
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok(Stage {
            epochs,
            train_seconds: seconds,
            train_images_per_second: seen as f64 / seconds.max(1e-9),
            ..Default::default()
        })
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
        let bar = self.bar(((data.len() + 999) / 1000) as u64, format!("{stage} eval"));
        let mut predictions = Vec::with_capacity(data.len() as usize);
        let correct: i64 = tch::no_grad(|| {
            batches(data, 1000, None)
                .map(|(xs, ys)| {
                    let predicted = net.forward(&xs, mode, false).argmax(-1, false);
                    let hits = predicted.eq_tensor(&ys).sum(Kind::Int64).int64_value(&[]);
                    predictions.extend(
                        Vec::<i64>::try_from(&predicted.to_device(Device::Cpu)).unwrap_or_default(),
                    );
                    bar.inc(1);
                    hits
                })
                .sum()
        });
        let accuracy = correct as f64 / data.len() as f64;
        bar.finish_with_message(format!("accuracy {:.2}%", accuracy * 100.0));
        *seconds = started.elapsed().as_secs_f64();
        (accuracy, predictions)
    }

    /// Lowers the saved weights to int8, evaluates the test set with the integer
    /// runtime, and records its accuracy and argmax agreement with fake quantization.
    #[allow(clippy::too_many_arguments)]
    fn int8(
        &self,
        stage: &str,
        graph: &Graph,
        weights: &Path,
        test: &Images,
        classes: &[u8],
        fake_quant: &[i64],
        into: &mut Stage,
    ) -> Result<(crate::lower::IntGraph, crate::lower::IntTensors), BuildError> {
        let started = Instant::now();
        let tensors = crate::lower::read_f32_safetensors(weights)?;
        let keep = (classes.len() < 10
            || classes.iter().enumerate().any(|(i, &c)| c as usize != i))
        .then(|| classes.to_vec());
        let (int_graph, int_tensors) = crate::lower::lower(graph, &tensors, keep)?;
        let model = crate::runtime::Model::new(int_graph.clone(), &int_tensors)?;
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
        Ok((int_graph, int_tensors))
    }
}
