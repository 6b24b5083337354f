//! What a build checks and makes before its first training step: the output directory,
//! the layers the recipe names, and (built first, when missing) the pretrained weights.

use super::*;

/// What can be checked without training: the output directory, and that the recipe's
/// layer lists name layers of the model. (Data and weights are checked as they are read,
/// which is also before the first training step.)
pub(super) fn check_before_training(
    graph: &Graph,
    recipe: &Recipe,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    let out = &opts.out_dir;
    let not_dir = |why: String| BuildError::Write {
        path: out.clone(),
        source: std::io::Error::other(why),
    };
    match std::fs::metadata(out) {
        Ok(meta) if !meta.is_dir() => {
            return Err(not_dir(
                "it exists and is not a directory (--out names the directory the build writes)"
                    .into(),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(not_dir(e.to_string())),
    }
    std::fs::create_dir_all(out).map_err(|e| not_dir(e.to_string()))?;
    // Writable: a probe file, written and removed the way every artifact is written.
    let probe = out.join(".qatc-write-probe");
    report::write_atomic_bytes(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| not_dir(format!("it is not writable ({e})")))?;
    if let Some(transfer) = &recipe.transfer {
        network::expand_layers(graph, "transfer.freeze", &transfer.freeze)
            .and_then(|_| network::expand_layers(graph, "transfer.skip", &transfer.skip))
            .map_err(BuildError::Transfer)?;
    }
    Ok(())
}

/// Builds the pretrained model first when its weights are missing and the recipe says how.
pub(super) fn ensure_pretrained(
    transfer: &crate::recipe::TransferConfig,
    opts: &BuildOptions,
    chain: &[PathBuf],
) -> Result<(), BuildError> {
    if transfer.weights.is_file() {
        return Ok(());
    }
    let Some(model) = &transfer.build else {
        return Err(BuildError::Transfer(format!(
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
        return Err(BuildError::Transfer(format!(
            "transfer.build is a cycle: {}\n  hint: a pretrained model cannot be built from itself; point `transfer.weights` at existing weights",
            shown(chain)
        )));
    }
    if chain.len() >= MAX_TRANSFER_CHAIN {
        return Err(BuildError::Transfer(format!(
            "transfer.build chains more than {MAX_TRANSFER_CHAIN} pretrained models: {}",
            shown(chain)
        )));
    }
    let chain: Vec<PathBuf> = chain.iter().cloned().chain([canonical.clone()]).collect();
    let fail = |why: String| {
        BuildError::Transfer(format!(
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
    let graph = crate::passes::run(
        checked.graphs.into_iter().next().expect("one graph"),
        crate::passes::Stage::Quantized,
    );
    let out_dir = transfer
        .weights
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let progress = Progress { log: opts.log };
    progress.message(&format!(
        "{} is missing: building {} first",
        transfer.weights.display(),
        model.display()
    ));
    let report = build_in_chain(
        &graph,
        &recipe,
        &BuildOptions {
            out_dir,
            ..opts.clone()
        },
        &chain,
    )?;
    progress.message(&report.table());
    if transfer.weights.is_file() {
        Ok(())
    } else {
        Err(fail(format!(
            "its build did not write {} (it writes float.safetensors and qat.safetensors)",
            transfer.weights.display()
        )))
    }
}
