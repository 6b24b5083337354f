//! Loading pretrained weights (safetensors) into a network by layer name, for
//! transfer learning, with every problem reported at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::Tensor;

use super::Network;

/// Tensors in a weight file that are not model parameters and never count as "extra".
fn is_bookkeeping(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
        || name.ends_with(".min")
        || name.ends_with(".max")
        || name.ends_with(".weight_scale")
}

/// Copies the tensors of `path` into `net`. `map` renames: our name → name in the file.
/// Layers listed in `skip` (e.g. a new head) keep their fresh initialization.
/// Returns the names loaded, or a message listing every missing, extra and mis-shaped tensor.
pub fn load(
    net: &mut Network,
    path: &Path,
    map: &BTreeMap<String, String>,
    skip: &[String],
) -> Result<Vec<String>, String> {
    let file: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| format!("cannot read pretrained weights {}: {e}\n  hint: is it a complete safetensors file? `qatc build` writes float.safetensors", path.display()))?
        .into_iter()
        .collect();
    let skipped = |name: &str| {
        skip.iter().any(|layer| {
            name.split('.').next() == Some(layer.as_str()) || name.starts_with(&format!("{layer}."))
        })
    };
    super::network::check_layers(&net.graph, "transfer.skip", skip)?;
    let ours = net.vs.variables();
    if let Some(unknown) = map.keys().find(|k| !ours.contains_key(k.as_str())) {
        let mut tensors: Vec<&str> = ours.keys().map(String::as_str).collect();
        tensors.sort_unstable();
        let hint = crate::diagnostics::did_you_mean(unknown, tensors.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(format!(
            "transfer.map renames `{unknown}`, which is not a tensor of the model{hint}\n  tensors: {}",
            tensors.join(", ")
        ));
    }
    let mut names: Vec<&String> = ours.keys().filter(|n| !skipped(n)).collect();
    names.sort();
    let mut missing = Vec::new();
    let mut mis_shaped = Vec::new();
    let mut used = std::collections::HashSet::new();
    for name in &names {
        let theirs = map.get(*name).unwrap_or(name);
        match file.get(theirs) {
            None => missing.push(if theirs == *name {
                name.to_string()
            } else {
                format!("{name} (looked for `{theirs}`)")
            }),
            Some(t) if t.size() != ours[*name].size() => {
                mis_shaped.push(format!(
                    "{name:<28} model {:<16} file {:?}",
                    format!("{:?}", ours[*name].size()),
                    t.size()
                ));
                used.insert(theirs.clone());
            }
            Some(_) => {
                used.insert(theirs.clone());
            }
        }
    }
    let mut extra: Vec<&String> = file
        .keys()
        .filter(|k| !used.contains(*k) && !is_bookkeeping(k) && !skipped(k))
        .collect();
    extra.sort();
    if !missing.is_empty() || !mis_shaped.is_empty() || !extra.is_empty() {
        let mut msg = format!(
            "pretrained weights {} do not fit model `{}`:",
            path.display(),
            net.graph.name
        );
        let mut section = |title: &str, items: Vec<String>| {
            if !items.is_empty() {
                msg.push_str(&format!("\n  {title}:\n"));
                msg.push_str(
                    &items
                        .iter()
                        .map(|i| format!("    {i}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
        };
        section("missing from the file", missing);
        section("different shapes", mis_shaped);
        section(
            "in the file but not in the model",
            extra.into_iter().cloned().collect(),
        );
        msg.push_str("\n  hint: name layers as in the file, map names with `transfer.map`, or list new layers in `transfer.skip`");
        return Err(msg);
    }
    tch::no_grad(|| {
        for name in &names {
            let theirs = map.get(*name).unwrap_or(name);
            ours[*name].shallow_clone().copy_(
                &file[theirs]
                    .to_kind(ours[*name].kind())
                    .to_device(ours[*name].device()),
            );
        }
    });
    Ok(names.into_iter().cloned().collect())
}
