//! `qatc build` and `qatc sensitivity`: the commands that train (libtorch).

use std::path::PathBuf;
use std::process::ExitCode;

use super::{checked_graph, model_summary, read_source, ExportFormat, LogFormat, ModelArgs};
use super::{BuildArgs, CliError, SensitivityArgs};
use crate::diagnostics::render_terminal;
use crate::driver::{BuildOptions, Feasibility};
use crate::ir::Graph;
use crate::passes::{self, Stage};

/// Checks the model, loads its recipe and runs the passes: what training starts from.
fn prepared(args: &ModelArgs) -> Result<(Graph, crate::recipe::Recipe, BuildOptions), CliError> {
    let graph = checked_graph(&args.file, args.model.as_deref(), args.quant, args.color)?;
    let summary = model_summary(graph.clone());
    let log = match (args.quiet, args.log_format) {
        (true, _) => crate::train::progress::Log::Quiet,
        (false, LogFormat::Auto) => crate::train::progress::Log::auto(),
        (false, LogFormat::Text) => crate::train::progress::Log::Lines,
        (false, LogFormat::Json) => crate::train::progress::Log::Json,
    };
    let progress = crate::train::progress::Progress { log };
    let beside = crate::recipe::Recipe::path_for(&args.file);
    let recipe = match &args.recipe {
        // Only the recipe that goes with the model is optional; one named must exist.
        None if !beside.exists() => {
            progress.message(&format!(
                "no recipe at {}: using the default recipe (see it with `qatc recipe`; `qatc recipe --out {}` writes it there to edit)",
                beside.display(),
                beside.display()
            ));
            crate::recipe::Recipe::default()
        }
        path => crate::recipe::Recipe::load(path.as_ref().unwrap_or(&beside))?,
    };
    // Refuse before libtorch allocates anything.
    if let Some(d) = crate::ir::memory::check_training_memory(&graph, recipe.train.batch_size) {
        let file = read_source(&args.file)?;
        eprint!("{}", render_terminal(&file, &[d], args.color.enabled()));
        return Err(format!(
            "{}: one training batch would not fit in memory; nothing was built",
            args.file.display()
        )
        .into());
    }
    let quantized = passes::run(graph, Stage::Quantized);
    let opts = BuildOptions {
        train: crate::train::TrainOptions {
            out_dir: PathBuf::from("build").join(&quantized.name),
            device: crate::train::device(&args.device)?,
            log,
            resume: false,
            group: None,
        },
        emit_onnx: false,
        emit_tflite: false,
        summary: Some(summary),
    };
    Ok((quantized, recipe, opts))
}

pub(super) fn build(args: BuildArgs) -> Result<ExitCode, CliError> {
    let rendezvous = crate::train::distributed::Rendezvous::from_env()?;
    let nproc = args.nproc.filter(|&n| n > 1);
    let cuda = args.model.device == "cuda";
    // Why not, before "no CUDA device" (a libtorch without CUDA has neither).
    if cuda && (nproc.is_some() || rendezvous.is_some()) && !crate::train::distributed::NCCL {
        return Err(crate::train::distributed::DistError::NoNccl {
            why: crate::train::distributed::no_nccl_why(),
        }
        .into());
    }
    if let Some(n) = nproc {
        if rendezvous.is_some() {
            return Err("--nproc starts its own workers, but this process is already one (WORLD_SIZE is set, as torchrun does)\n  hint: give either --nproc or torchrun's variables".into());
        }
        // Errors in the model or recipe once, before any worker starts.
        prepared(&args.model)?;
        let devices = tch::Cuda::device_count().max(0) as u64;
        if cuda && (n as u64) > devices {
            return Err(format!("--nproc {n} --device cuda starts one rank per GPU, and this machine has {devices}\n  hint: --nproc {devices} at most (torchrun's --nproc-per-node on several machines)").into());
        }
        return super::launch::launch(n as usize);
    }
    let (graph, recipe, mut opts) = prepared(&args.model)?;
    if let Some(out) = args.out {
        opts.train.out_dir = out;
    }
    opts.train.resume = args.resume;
    opts.emit_onnx = args.emit.contains(&ExportFormat::Onnx);
    opts.emit_tflite = args.emit.contains(&ExportFormat::Tflite);
    // Before any training: what has no int8 form would only show at the end.
    let Feasibility { problems, refused } = crate::driver::feasibility(&graph, &opts);
    if !problems.is_empty() {
        let file = read_source(&args.model.file)?;
        eprint!(
            "{}",
            render_terminal(&file, &problems, args.model.color.enabled())
        );
        if let Some(format) = refused {
            return Err(format!(
                "{} cannot be exported to {format} ({} problem{}); nothing was built",
                args.model.file.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )
            .into());
        }
    }
    if let Some(rv) = &rendezvous {
        // Gloo on the CPU; NCCL on the GPU numbered by LOCAL_RANK.
        opts.train.device = crate::train::distributed::rank_device(rv, opts.train.device)?;
        let group = crate::train::distributed::Group::connect(rv, opts.train.device)?;
        if rv.rank > 0 {
            // Rank 0 tells the progress; the others speak only to fail.
            opts.train.log = crate::train::progress::Log::Quiet;
        }
        opts.train.group = Some(std::sync::Arc::new(group));
    }
    // The summary once the model is known to build (a refused one gets only its errors).
    if let Some(summary) = &opts.summary {
        crate::train::progress::Progress {
            log: opts.train.log,
        }
        .summary(summary);
    }
    let rank = rendezvous.as_ref().map(|rv| rv.rank);
    let built = crate::driver::build(&graph, &recipe, &opts).map_err(|e| match rank {
        // Which worker says it, unless the message already does.
        Some(rank) if !e.to_string().starts_with("rank ") => {
            CliError::from(format!("rank {rank}: {e}"))
        }
        _ => CliError::from(e),
    })?;
    let Some(report) = built else {
        return Ok(ExitCode::SUCCESS);
    };
    println!("{}", report.table());
    let a = &report.artifacts;
    let written: Vec<&str> = [&a.qat, &a.ptq, &a.int8, &a.onnx, &a.tflite, &a.html]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    println!("wrote {}, {}, {}", a.float, written.join(", "), a.report);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn sensitivity(args: SensitivityArgs) -> Result<ExitCode, CliError> {
    let (graph, recipe, mut opts) = prepared(&args.model)?;
    if let Some(out) = args.out {
        opts.train.out_dir = out;
    }
    let result = crate::train::sensitivity::analyze(
        &graph,
        &recipe,
        &opts.train,
        args.weights.as_deref(),
        args.all_but_one,
    )?;
    print!("{}", result.table());
    let path = opts.train.out_dir.join("sensitivity.json");
    let json = serde_json::to_string_pretty(&result).expect("results serialize");
    crate::report::write_atomic_bytes(&path, json.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
