//! `qatc run`: classify images with an int8 artifact (integer runtime, no libtorch) or
//! with a `.qat` model and a checkpoint (libtorch), and print what each image is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::{CliError, RunArgs, RunFormat};
use crate::data::inputs::{self, Inputs, Truth};

/// What a runner gives for a batch of images: each output of each image, as floats.
struct Scores {
    /// `[images, outputs]`, row-major: logits, or the int8 outputs dequantized.
    values: Vec<f32>,
    outputs: usize,
    /// The name printed for each output.
    names: Vec<String>,
    /// The dataset label of each output (for `--labels` numbers).
    labels: Vec<u8>,
    /// `int8`, `float` or `fake-quant`.
    runner: &'static str,
    model: String,
}

/// How a batch of images is scored: see [`int8`] and [`checkpoint`].
type Runner = fn(&RunArgs, &[PathBuf]) -> Result<(Scores, Inputs), CliError>;

/// `qatc run ARTIFACT`: the int8 artifact on the integer runtime, without libtorch.
pub(super) fn int8(args: RunArgs) -> Result<ExitCode, CliError> {
    run(args, run_int8)
}

/// `qatc run MODEL.qat --weights CHECKPOINT`: through libtorch, so only `qatc-train` calls it.
#[cfg(feature = "train")]
pub(super) fn checkpoint(args: RunArgs) -> Result<ExitCode, CliError> {
    run(args, run_checkpoint)
}

fn run(args: RunArgs, runner: Runner) -> Result<ExitCode, CliError> {
    // Thousands of threads only thrash the machine: refuse them before loading anything big.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_threads = cores * crate::limits::THREADS_PER_CORE;
    if let Some(t) = args.threads.filter(|&t| t > max_threads) {
        return Err(format!(
            "--threads {t} is too many: at most {max_threads} ({} per core, {cores} cores here)",
            crate::limits::THREADS_PER_CORE
        )
        .into());
    }
    if args.top == 0 {
        return Err("--top must be at least 1".into());
    }
    let mut paths: Vec<PathBuf> = args.inputs.clone();
    paths.extend(args.images.clone());
    if paths.is_empty() {
        return Err(
            "name the images to run: files, folders, IDX or .npy (or --images FILE)".into(),
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let started = std::time::Instant::now();
    let (scores, inputs) = pool.install(|| runner(&args, &paths))?;
    let seconds = started.elapsed().as_secs_f64();
    let truth = truth_indices(&inputs, &scores, args.labels.as_deref())?;
    let report = Report::new(&scores, &inputs, &truth, args.top, args.logits);
    match args.format {
        RunFormat::Text => print!("{}", report.text()),
        RunFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialize")
        ),
        RunFormat::Csv => print!("{}", report.csv(&scores.names)),
    }
    eprintln!(
        "{} images in {seconds:.3} s ({} on {} threads){}",
        inputs.names.len(),
        scores.runner,
        pool.current_num_threads(),
        if inputs.skipped > 0 {
            format!(
                "; {} files that are not images were skipped",
                inputs.skipped
            )
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The int8 artifact on the images, with the integer runtime.
fn run_int8(args: &RunArgs, paths: &[PathBuf]) -> Result<(Scores, Inputs), CliError> {
    refuse_exported_file(&args.artifact)?;
    let model = crate::runtime::load(&args.artifact)?;
    let graph = model.graph();
    let inputs = inputs::read(paths, &graph.input.shape, args.labels.as_deref())?;
    let outputs = model.output_len();
    let labels: Vec<u8> = match &graph.classes {
        Some(classes) => classes.clone(),
        None => (0..outputs).map(|i| i as u8).collect(),
    };
    let names = match &graph.class_names {
        Some(names) => names.clone(),
        None => labels.iter().map(u8::to_string).collect(),
    };
    let q = model.output_quant();
    let values = model
        .run_pixels(&inputs.images.pixels)?
        .into_iter()
        .map(|v| q.dequantize(v))
        .collect();
    let scores = Scores {
        values,
        outputs,
        names,
        labels,
        runner: "int8",
        model: graph.model.clone(),
    };
    Ok((scores, inputs))
}

/// The `.qat` model with a checkpoint, through libtorch.
#[cfg(feature = "train")]
fn run_checkpoint(args: &RunArgs, paths: &[PathBuf]) -> Result<(Scores, Inputs), CliError> {
    let weights = args
        .weights
        .as_deref()
        .ok_or("a checkpoint run needs --weights")?;
    let graph = super::checked_graph(
        &args.artifact,
        args.model.as_deref(),
        None,
        super::Color::Auto,
    )?;
    let graph = crate::passes::run(graph, crate::passes::Stage::Quantized);
    let shape = graph.node(graph.inputs[0]).shape.clone();
    // The recipe the checkpoint was trained with says how its inputs were normalized.
    let beside = crate::recipe::Recipe::path_for(&args.artifact);
    let recipe = match &args.recipe {
        None if !beside.exists() => crate::recipe::Recipe::default(),
        path => crate::recipe::Recipe::load(path.as_ref().unwrap_or(&beside))?,
    };
    let channels = crate::preprocess::channels(&shape);
    let normalize = match recipe.data.normalize {
        Some(n) => {
            n.check(channels)
                .map_err(|why| format!("data.normalize of the recipe: {why}"))?;
            n
        }
        None => crate::preprocess::Normalize::identity(channels),
    };
    let mut checkpoint = crate::train::infer::Checkpoint::load(&graph, weights, normalize)?;
    let inputs = inputs::read(paths, &shape, args.labels.as_deref())?;
    let outputs: usize = graph.node(graph.output).shape.iter().product();
    let values = checkpoint.logits(&inputs.images.pixels);
    // The build that wrote the checkpoint knows the classes: its report.json is beside it.
    let data = weights
        .parent()
        .map(|dir| dir.join("report.json"))
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str::<crate::report::Report>(&text).ok())
        .map(|report| report.data)
        .filter(|data| data.classes.len() == outputs);
    let labels: Vec<u8> = match &data {
        Some(data) => data.classes.clone(),
        None => (0..outputs).map(|i| i as u8).collect(),
    };
    let names = match data {
        Some(data) if data.class_names.len() == outputs => data.class_names,
        _ => labels.iter().map(u8::to_string).collect(),
    };
    let scores = Scores {
        values,
        outputs,
        names,
        labels,
        runner: checkpoint.mode_name(),
        model: graph.name.clone(),
    };
    Ok((scores, inputs))
}

/// The output index of each image's true class, where it is known; an error names the
/// first image whose class the model does not have.
fn truth_indices(
    inputs: &Inputs,
    scores: &Scores,
    label_file: Option<&std::path::Path>,
) -> Result<Vec<Option<usize>>, String> {
    inputs
        .truth
        .iter()
        .zip(&inputs.names)
        .map(|(truth, name)| {
            let found = match truth {
                Truth::Unknown => return Ok(None),
                Truth::Label(l) => scores.labels.iter().position(|x| x == l),
                Truth::Name(n) => scores.names.iter().position(|x| x == n),
            };
            found.map(Some).ok_or_else(|| {
                let class = match truth {
                    Truth::Label(l) => format!(
                        "label {l} in {}",
                        label_file.map_or(String::new(), |f| f.display().to_string())
                    ),
                    Truth::Name(n) => format!("class `{n}`"),
                    Truth::Unknown => unreachable!("returned above"),
                };
                format!(
                    "{name}: {class}, but model `{}` classifies {}",
                    scores.model,
                    scores.names.join(", ")
                )
            })
        })
        .collect()
}

/// Softmax of one row, in f64 for a stable sum.
fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[derive(Serialize)]
struct Ranked {
    class: String,
    probability: f64,
}

#[derive(Serialize)]
struct Prediction {
    path: String,
    top: Vec<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<Vec<f32>>,
}

#[derive(Serialize)]
struct Accuracy {
    correct: usize,
    total: usize,
    accuracy: f64,
    /// `confusion[true][predicted]`, in the order of `classes`.
    confusion: Vec<Vec<usize>>,
}

/// Everything `qatc run` prints, in the order printed.
#[derive(Serialize)]
struct Report {
    model: String,
    runner: &'static str,
    classes: Vec<String>,
    predictions: Vec<Prediction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<Accuracy>,
    skipped_files: usize,
    #[serde(skip)]
    show_logits: bool,
}

impl Report {
    fn new(
        scores: &Scores,
        inputs: &Inputs,
        truth: &[Option<usize>],
        top: usize,
        show_logits: bool,
    ) -> Report {
        let k = scores.outputs;
        let mut confusion = vec![vec![0usize; k]; k];
        let (mut correct, mut total) = (0, 0);
        let predictions = scores
            .values
            .chunks(k)
            .zip(&inputs.names)
            .zip(truth)
            .map(|((row, path), truth)| {
                let p = softmax(row);
                let mut order: Vec<usize> = (0..k).collect();
                // Most probable first; the first output on ties, as argmax.
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                if let Some(t) = *truth {
                    confusion[t][order[0]] += 1;
                    total += 1;
                    correct += usize::from(order[0] == t);
                }
                Prediction {
                    path: path.clone(),
                    top: order
                        .iter()
                        .take(top)
                        .map(|&i| Ranked {
                            class: scores.names[i].clone(),
                            probability: p[i],
                        })
                        .collect(),
                    truth: truth.map(|t| scores.names[t].clone()),
                    logits: show_logits.then(|| row.to_vec()),
                }
            })
            .collect();
        Report {
            model: scores.model.clone(),
            runner: scores.runner,
            classes: scores.names.clone(),
            predictions,
            accuracy: (total > 0).then(|| Accuracy {
                correct,
                total,
                accuracy: correct as f64 / total as f64,
                confusion,
            }),
            skipped_files: inputs.skipped,
            show_logits,
        }
    }

    /// `path  class  probability` per image (more pairs with `--top`), or the logits;
    /// then the accuracy and confusion matrix when classes are known.
    fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let width = self
            .predictions
            .iter()
            .map(|p| p.path.len())
            .max()
            .unwrap_or(0);
        let class_width = self.classes.iter().map(String::len).max().unwrap_or(1);
        for p in &self.predictions {
            let _ = write!(out, "{:<width$}", p.path);
            match &p.logits {
                Some(logits) => {
                    for v in logits {
                        let _ = write!(out, "  {v:e}");
                    }
                }
                None => {
                    for r in &p.top {
                        let _ = write!(out, "  {:<class_width$}  {:.4}", r.class, r.probability);
                    }
                }
            }
            out.push('\n');
        }
        if let Some(a) = &self.accuracy {
            let _ = writeln!(
                out,
                "accuracy: {:.2}% ({}/{})",
                a.accuracy * 100.0,
                a.correct,
                a.total
            );
            out.push_str(&confusion_text(&self.classes, &a.confusion));
        }
        out
    }

    /// `path,rank,class,probability,truth` rows, or `path,<class>...` with the logits.
    fn csv(&self, names: &[String]) -> String {
        let field = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        if self.show_logits {
            let header: Vec<String> = names.iter().map(|n| field(n)).collect();
            out.push_str(&format!("path,{}\n", header.join(",")));
            for p in &self.predictions {
                let values: Vec<String> = p
                    .logits
                    .iter()
                    .flatten()
                    .map(|v| format!("{v:e}"))
                    .collect();
                out.push_str(&format!("{},{}\n", field(&p.path), values.join(",")));
            }
            return out;
        }
        out.push_str("path,rank,class,probability,truth\n");
        for p in &self.predictions {
            for (rank, r) in p.top.iter().enumerate() {
                out.push_str(&format!(
                    "{},{},{},{:.6},{}\n",
                    field(&p.path),
                    rank + 1,
                    field(&r.class),
                    r.probability,
                    p.truth.as_deref().map(field).unwrap_or_default()
                ));
            }
        }
        out
    }
}

/// The confusion matrix as a table: a row per true class, a column per prediction.
fn confusion_text(classes: &[String], confusion: &[Vec<usize>]) -> String {
    use std::fmt::Write;
    let seen: Vec<usize> = (0..classes.len())
        .filter(|&i| confusion[i].iter().sum::<usize>() > 0 || confusion.iter().any(|r| r[i] > 0))
        .collect();
    let label = seen
        .iter()
        .map(|&i| classes[i].len())
        .max()
        .unwrap_or(0)
        .max(4);
    let cell = seen
        .iter()
        .map(|&i| classes[i].len())
        .chain(confusion.iter().flatten().map(|n| n.to_string().len()))
        .max()
        .unwrap_or(1);
    let mut out = format!(
        "confusion (rows: true class, columns: predicted)\n{:label$}",
        ""
    );
    for &j in &seen {
        let _ = write!(out, "  {:>cell$}", classes[j]);
    }
    out.push('\n');
    for &i in &seen {
        let _ = write!(out, "{:<label$}", classes[i]);
        for &j in &seen {
            let _ = write!(out, "  {:>cell$}", confusion[i][j]);
        }
        out.push('\n');
    }
    out
}

/// The runtime runs int8 artifact directories; a `.tflite` or `.onnx` given instead gets
/// a precise refusal, pointing at the artifact it was exported from when it lies beside it.
fn refuse_exported_file(path: &Path) -> Result<(), CliError> {
    use crate::export::inspect::{detect, ModelFile};
    if !path.is_file() {
        return Ok(());
    }
    let format = match detect(path) {
        Ok(ModelFile::Tflite) => "TFLite",
        Ok(ModelFile::Onnx) => "ONNX",
        Ok(ModelFile::Int8Artifact(_)) | Err(_) => return Ok(()),
    };
    let beside = path.parent().map(|dir| dir.join("int8"));
    let hint = match beside.filter(|d| d.join(crate::int8::artifact::GRAPH_FILE).is_file()) {
        Some(int8) => format!(
            "it was exported from the artifact beside it: `qatc run {}`",
            int8.display()
        ),
        None => "run it in its own runtime (LiteRT: scripts/litert.py; ONNX Runtime), or give the int8 artifact directory it was exported from".into(),
    };
    Err(format!(
        "{} is a {format} model: `qatc run` executes qatc's int8 artifact directories (graph.json); reading a {format} file back into the runtime is not supported yet\n  hint: {hint}",
        path.display()
    )
    .into())
}
