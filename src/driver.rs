//! The stage sequence of `qatc build`: the int8 feasibility check, then training (float,
//! PTQ, control, QAT), lowering each quantized network to int8 and evaluating it with the
//! integer runtime, the int8 artifact and its exports, and the report. `train` only
//! trains; this module decides what comes after what.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::codes;
use crate::data::DataError;
use crate::diagnostics::{Diagnostic, Severity};
use crate::ir::Graph;
use crate::recipe::Recipe;
use crate::report::{self, Artifacts, Report, Stage};
use crate::train::progress::Progress;
use crate::train::{Session, TrainError, TrainOptions};

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Data(#[from] DataError),
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
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An export was asked for, but the model has no int8 form (the report's note says why).
    #[error("cannot emit {format}: {why}")]
    NoInt8Export { format: &'static str, why: String },
    /// The pretrained model a transfer needs could not be built.
    #[error("{0}")]
    Pretrained(String),
}

/// What `qatc build` was asked to make, and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub train: TrainOptions,
    /// Also write `model.onnx` (the QAT int8 model as ONNX).
    pub emit_onnx: bool,
    /// Also write `model.tflite` (the QAT int8 model as TensorFlow Lite).
    pub emit_tflite: bool,
    /// The model summary, kept in report.json and report.html.
    pub summary: Option<crate::summary::Summary>,
}

/// What the int8 feasibility check found before training.
pub struct Feasibility {
    /// Errors when an export was asked for (it would fail), warnings otherwise (the build
    /// still trains and reports its fake-quant results).
    pub problems: Vec<Diagnostic>,
    /// The export format the problems rule out, if any: then nothing may be built.
    pub refused: Option<&'static str>,
}

/// Checks, before any training, that the quantized-stage `graph` has the int8 form that
/// `opts` asks for: what has none would otherwise only show at the end.
pub fn feasibility(graph: &Graph, opts: &BuildOptions) -> Feasibility {
    if opts.emit_tflite {
        Feasibility {
            problems: crate::export::tflite::check(graph),
            refused: Some("TFLite"),
        }
    } else if opts.emit_onnx {
        Feasibility {
            problems: crate::lower::check(graph, codes::NO_INT8_FORM),
            refused: Some("ONNX"),
        }
    } else {
        let problems = crate::lower::check(graph, codes::NO_INT8_MODEL)
            .into_iter()
            .map(|d| Diagnostic {
                severity: Severity::Warning,
                ..d
            })
            .collect();
        Feasibility {
            problems,
            refused: None,
        }
    }
}

/// Trains, calibrates and fine-tunes the quantized-stage `graph` as the recipe says,
/// lowers the result to int8, writes the weights, the artifact, the exports asked for and
/// report.json to `opts.train.out_dir`, and returns the report; on ranks other than 0 of
/// a data-parallel group, which write nothing, returns `None`.
pub fn build(
    graph: &Graph,
    recipe: &Recipe,
    opts: &BuildOptions,
) -> Result<Option<Report>, BuildError> {
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
) -> Result<Option<Report>, BuildError> {
    let started = Instant::now();
    crate::train::check_before_training(graph, recipe, &opts.train)?;
    let group = opts.train.group.as_deref();
    if let Some(group) = group {
        group
            .check_same_config(&config_fingerprint(graph, recipe))
            .map_err(TrainError::from)?;
    }
    if let Some(transfer) = &recipe.transfer {
        ensure_pretrained(transfer, opts, chain)?;
    }
    let session = Session::start(graph, recipe, &opts.train)?;
    let out_dir = &opts.train.out_dir;
    let float_path = out_dir.join("float.safetensors");
    let ptq_path = out_dir.join("ptq.safetensors");
    let qat_path = out_dir.join("qat.safetensors");
    let int8_dir = out_dir.join("int8");
    let report_path = out_dir.join("report.json");

    // In a data-parallel group every rank trains and calibrates (the same collectives in
    // the same order); rank 0 alone evaluates and writes.
    let writes = opts.train.writes();
    // 1. Float training.
    let float = session.float()?;
    if writes {
        // From here on the artifacts of an earlier build are replaced one by one: its report
        // goes first, so that a build killed half-way never leaves a report beside files it
        // does not describe.
        remove_if_present(&report_path)?;
        crate::train::save(&float.net, &float_path)?;
    }

    // QAT only when asked for: with no QAT epochs, control and QAT would repeat PTQ.
    let quantization_aware = recipe.qat.epochs > 0;
    let mut notes = Vec::new();
    if !quantization_aware {
        notes.push(
            "no QAT (qat.epochs is 0): the control and QAT stages are skipped; the int8 model is PTQ's"
                .to_string(),
        );
    }

    // 2. PTQ, and its int8 form.
    let mut ptq = session.ptq(&float.net);
    let mut ptq_int8 = None;
    if writes {
        crate::train::save(&ptq.net, &ptq_path)?;
        let lowered = int8(
            &session,
            "PTQ",
            graph,
            recipe,
            &ptq.net.quantized_params(),
            &ptq.predictions,
            &mut ptq.stage,
        );
        ptq_int8 = skip_unlowerable(lowered, &mut notes)?;
    }

    // 3. Control: the same extra epochs in float, then PTQ.
    // 4. QAT, and its int8 form: the model the build delivers.
    let (control, mut qat) = if quantization_aware {
        (
            Some(session.control(&float.net)?),
            Some(session.qat(&ptq.net)?),
        )
    } else {
        (None, None)
    };
    if !writes {
        // A pretrained model's other ranks go on only once rank 0 has written it.
        if let (Some(group), false) = (group, chain.is_empty()) {
            group.barrier().map_err(TrainError::from)?;
        }
        return Ok(None);
    }
    if !quantization_aware {
        // An earlier build's QAT weights would sit beside a report that does not name them.
        remove_if_present(&qat_path)?;
    }
    let delivered_int8 = match &mut qat {
        Some(qat) => {
            crate::train::save(&qat.net, &qat_path)?;
            let lowered = int8(
                &session,
                "QAT",
                graph,
                recipe,
                &qat.net.quantized_params(),
                &qat.predictions,
                &mut qat.stage,
            );
            skip_unlowerable(lowered, &mut notes)?
        }
        None => ptq_int8,
    };
    let (int8, onnx, tflite) = match delivered_int8 {
        Some(int8_model) => {
            // The artifact and its exports say which class each output is by name.
            let outputs = crate::int8::graph::output_count(int8_model.graph());
            let class_names = session.class_names();
            let int8_model = if class_names.len() == outputs {
                int8_model
                    .with_class_names(class_names.to_vec())
                    .map_err(crate::lower::LowerError::from)?
            } else {
                int8_model
            };
            crate::int8::artifact::save(&int8_dir, &int8_model)?;
            let onnx_path = out_dir.join("model.onnx");
            let onnx = if opts.emit_onnx {
                crate::export::onnx::write(&onnx_path, &int8_model)?;
                Some(onnx_path.display().to_string())
            } else {
                None
            };
            let tflite_path = out_dir.join("model.tflite");
            let tflite = if opts.emit_tflite {
                crate::export::tflite::write(&tflite_path, &int8_model)?;
                Some(tflite_path.display().to_string())
            } else {
                None
            };
            (Some(int8_dir.display().to_string()), onnx, tflite)
        }
        None if opts.emit_onnx || opts.emit_tflite => {
            return Err(BuildError::NoInt8Export {
                format: if opts.emit_onnx { "ONNX" } else { "TFLite" },
                why: notes.last().cloned().unwrap_or_default(),
            })
        }
        None => (None, None, None),
    };

    let html_path = out_dir.join("report.html");
    let delivered = qat.as_ref().unwrap_or(&ptq);
    let confusion = session.confusion(&delivered.predictions);
    let device = opts.train.device;
    let report = Report {
        model: graph.name.clone(),
        quant: report::quant_label(graph),
        device: format!("{device:?}").to_lowercase(),
        data: session.data_summary(),
        float: float.stage,
        ptq: ptq.stage,
        qat: qat.map(|q| q.stage),
        control,
        total_seconds: started.elapsed().as_secs_f64(),
        artifacts: Artifacts {
            float: float_path.display().to_string(),
            qat: quantization_aware.then(|| qat_path.display().to_string()),
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
        environment: Some(crate::train::environment(device)),
    };
    report::write_atomic_bytes(&report_path, report.to_json().as_bytes()).map_err(|source| {
        BuildError::Write {
            path: report_path,
            source,
        }
    })?;
    // A sensitivity analysis run earlier into the same directory joins the page.
    let sensitivity = std::fs::read(out_dir.join("sensitivity.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let page = report::html::build_page(&report, Some(graph), sensitivity.as_ref());
    report::write_atomic_bytes(&html_path, page.as_bytes()).map_err(|source| {
        BuildError::Write {
            path: html_path,
            source,
        }
    })?;
    if let (Some(group), false) = (group, chain.is_empty()) {
        group.barrier().map_err(TrainError::from)?;
    }
    Ok(Some(report))
}

/// Removes an earlier build's file; one that is not there is fine.
fn remove_if_present(path: &Path) -> Result<(), BuildError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BuildError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What every rank of a data-parallel group must build alike: the model and the recipe.
fn config_fingerprint(graph: &Graph, recipe: &Recipe) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(crate::ir::dump::text(graph));
    hash.update([0]);
    hash.update(serde_json::to_string(recipe).expect("recipes serialize"));
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// Lowers the quantized parameters to int8, evaluates the test set with the integer
/// runtime, and records its accuracy and argmax agreement with fake quantization.
fn int8(
    session: &Session,
    stage: &str,
    graph: &Graph,
    recipe: &Recipe,
    params: &crate::quantized::QuantizedParams,
    fake_quant: &[i64],
    into: &mut Stage,
) -> Result<crate::int8::Model, BuildError> {
    let started = Instant::now();
    let (test, classes) = (session.test_images(), session.classes());
    let keep = (classes.len() < 10 || classes.iter().enumerate().any(|(i, &c)| c as usize != i))
        .then(|| classes.to_vec());
    // Built from images: the artifact takes raw pixels, normalized as in training.
    let int8_model = crate::lower::lower_params(graph, params, keep)?
        .with_normalize(crate::train::normalize(recipe, graph)?)
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
    session.say(&format!(
        "{stage} int8 ({} kernels): accuracy {:.2}%, argmax agrees with fake-quant on {:.2}%",
        model.isa().name(),
        correct as f64 / n * 100.0,
        agree as f64 / n * 100.0
    ));
    Ok(int8_model)
}

/// Builds the pretrained model first when its weights are missing and the recipe says how.
fn ensure_pretrained(
    transfer: &crate::recipe::TransferConfig,
    opts: &BuildOptions,
    chain: &[PathBuf],
) -> Result<(), BuildError> {
    let mut missing = !transfer.weights.is_file();
    if let Some(group) = &opts.train.group {
        // Every rank builds it, or none does: their collectives must pair up.
        missing = group.max_i64(missing as i64).map_err(TrainError::from)? == 1;
    }
    if !missing {
        return Ok(());
    }
    let Some(model) = &transfer.build else {
        return Err(BuildError::Pretrained(format!(
            "pretrained weights {} do not exist\n  hint: build them first, or set `transfer.build` to the .qat file that makes them",
            transfer.weights.display()
        )));
    };
    // A model whose pretrained model is (eventually) itself would build forever.
    let canonical = model.canonicalize().unwrap_or_else(|_| model.clone());
    let shown = |chain: &[PathBuf]| {
        (chain.iter().chain([&canonical]))
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    };
    if chain.contains(&canonical) {
        return Err(BuildError::Pretrained(format!(
            "transfer.build is a cycle: {}\n  hint: a pretrained model cannot be built from itself; point `transfer.weights` at existing weights",
            shown(chain)
        )));
    }
    if chain.len() >= MAX_TRANSFER_CHAIN {
        return Err(BuildError::Pretrained(format!(
            "transfer.build chains more than {MAX_TRANSFER_CHAIN} pretrained models: {}",
            shown(chain)
        )));
    }
    let chain: Vec<PathBuf> = chain.iter().cloned().chain([canonical.clone()]).collect();
    let fail = |why: String| {
        BuildError::Pretrained(format!(
            "cannot build the pretrained model {}: {why}",
            model.display()
        ))
    };
    let text = std::fs::read_to_string(model).map_err(|e| fail(e.to_string()))?;
    let source = crate::diagnostics::SourceFile::new(model.display().to_string(), text);
    let checked = crate::check_source(&source);
    if checked.has_errors() || checked.graphs.len() != 1 {
        let rendered = crate::diagnostics::render_terminal(&source, &checked.diagnostics, false);
        return Err(fail(format!(
            "it must check clean and define one model\n{rendered}"
        )));
    }
    let recipe_path = Recipe::path_for(model);
    let recipe = Recipe::load(&recipe_path).map_err(|e| fail(e.rendered))?;
    let parsed = checked.graphs.into_iter().next().expect("one graph");
    let graph = crate::passes::run(parsed.clone(), crate::passes::Stage::Quantized);
    // Its own summary: the one in `opts` describes the model that transfers from it.
    let summary = crate::summary::summarize(&parsed, &graph);
    let out_dir = transfer
        .weights
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let progress = Progress {
        log: opts.train.log,
    };
    progress.message(&format!(
        "{} is missing: building {} first",
        transfer.weights.display(),
        model.display()
    ));
    let report = build_in_chain(
        &graph,
        &recipe,
        &BuildOptions {
            train: TrainOptions {
                out_dir,
                ..opts.train.clone()
            },
            summary: Some(summary),
            ..opts.clone()
        },
        &chain,
    )?;
    if let Some(report) = report {
        progress.message(&report.table());
    }
    if transfer.weights.is_file() {
        Ok(())
    } else {
        Err(fail(format!(
            "its build did not write {} (it writes float.safetensors and qat.safetensors)",
            transfer.weights.display()
        )))
    }
}
