//! `qatc weights diff`: how a weight file's tensors line up with a model's.

use std::path::Path;
use std::process::ExitCode;

/// Prints matched, missing, mis-shaped and extra tensors and proposed `transfer.map` rules;
/// exits 0 when the file fits the model, 1 when it does not.
pub(super) fn diff(
    file: &Path,
    weights: &Path,
    model: Option<&str>,
    recipe: Option<&Path>,
) -> Result<ExitCode, String> {
    use crate::train::pretrained;

    let graph = super::checked_graph(file, model, None, super::Color::Never)?;
    let graph = crate::passes::run(graph, crate::passes::Stage::Quantized);
    let beside = crate::recipe::Recipe::path_for(file);
    let recipe = match recipe {
        Some(path) => Some(crate::recipe::Recipe::load(path)),
        None if beside.exists() => Some(crate::recipe::Recipe::load(&beside)),
        None => None,
    }
    .transpose()
    .map_err(|e| e.rendered.trim_end().to_string())?;
    let transfer = recipe.and_then(|r| r.transfer);
    let (map, skip) = match &transfer {
        Some(t) => (t.map.clone(), t.skip.clone()),
        None => Default::default(),
    };
    let net = crate::train::Network::new(&graph, tch::Device::Cpu);
    let skip = crate::train::expand_layers(&graph, "transfer.skip", &skip)?;
    let skipped = |name: &str| {
        skip.iter()
            .any(|layer| name.starts_with(&format!("{layer}.")))
    };
    let tensors = pretrained::read(weights)?;
    let shapes = tensors.iter().map(|(k, t)| (k.clone(), t.size())).collect();
    let c = pretrained::compare(&pretrained::model_tensors(&net), &shapes, &map, skipped)?;
    let shape = |s: &[i64]| format!("{s:?}");
    println!(
        "{} against {}: {} matched, {} missing, {} with other shapes, {} extra",
        graph.name,
        weights.display(),
        c.matched.len(),
        c.missing.len(),
        c.mis_shaped.len(),
        c.extra.len()
    );
    if !c.matched.is_empty() {
        println!("\nmatched (model  file  shape):");
        for (ours, theirs, s) in &c.matched {
            println!("  {ours:<32} {theirs:<40} {}", shape(s));
        }
    }
    if !c.missing.is_empty() {
        println!("\nmissing from the file (model  looked for  shape):");
        for (ours, theirs, s) in &c.missing {
            println!("  {ours:<32} {theirs:<40} {}", shape(s));
        }
    }
    if !c.mis_shaped.is_empty() {
        println!("\ndifferent shapes (model  file  model shape  file shape):");
        for (ours, theirs, a, b) in &c.mis_shaped {
            println!("  {ours:<32} {theirs:<40} {:<18} {}", shape(a), shape(b));
        }
    }
    if !c.extra.is_empty() {
        println!("\nin the file but not in the model (name  shape):");
        for (name, s) in &c.extra {
            println!("  {name:<40} {}", shape(s));
        }
    }
    // Every tensor's name in the file once the proposals apply: what folded patterns must give.
    let proposed_one_by_one = c.proposed_map();
    let proposed_for: std::collections::HashMap<&str, &str> = (proposed_one_by_one.iter())
        .map(|(ours, theirs)| (ours.as_str(), theirs.as_str()))
        .collect();
    let expected: Vec<(String, String)> = (c.matched.iter().map(|(o, t, _)| (o, t)))
        .chain(c.missing.iter().map(|(o, t, _)| (o, t)))
        .chain(c.mis_shaped.iter().map(|(o, t, _, _)| (o, t)))
        .map(|(ours, theirs)| {
            let theirs = proposed_for
                .get(ours.as_str())
                .map_or(theirs.as_str(), |p| p);
            (ours.clone(), theirs.to_string())
        })
        .collect();
    let proposed = crate::train::mapping::fold_into_patterns(&proposed_one_by_one, &map, &expected);
    if !proposed.is_empty() {
        println!(
            "\nproposed rules (by shape and order; check them), for the recipe:\ntransfer:\n  map:"
        );
        for (ours, theirs) in &proposed {
            // Patterns start with `*` sometimes; YAML needs them quoted.
            println!("    \"{ours}\": \"{theirs}\"");
        }
    }
    Ok(if c.fits() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
