//! Loading pretrained weights (safetensors, or a PyTorch `state_dict` from `torch.save`)
//! into a network by layer name and mapping rules, for transfer learning and PTQ of
//! pretrained models, with every problem reported at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::Tensor;

use super::mapping::{natural_cmp, Mapping};
use super::Network;

/// Tensors in a weight file that are not model parameters and never count as "extra".
fn is_bookkeeping(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
        || name.ends_with(".min")
        || name.ends_with(".max")
        || name.ends_with(".weight_scale")
}

/// Reads a weight file: safetensors, or a PyTorch `state_dict` saved by `torch.save`
/// (`.pt`, `.pth`, `.bin`; the zip format PyTorch writes by default).
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    if !path.exists() {
        return Err(format!(
            "pretrained weights {} do not exist",
            path.display()
        ));
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tensors = match extension {
        "pt" | "pth" | "bin" => Tensor::loadz_multi(path)
            .or_else(|_| Tensor::load_multi(path))
            .map_err(|e| format!("cannot read pretrained weights {}: {e}\n  hint: save a state_dict with `torch.save(model.state_dict(), path)`, or as safetensors", path.display()))?,
        _ => Tensor::read_safetensors(path)
            .map_err(|e| format!("cannot read pretrained weights {}: {e}\n  hint: is it a complete safetensors file? `qatc build` writes float.safetensors; PyTorch files need a .pt extension", path.display()))?,
    };
    Ok(tensors.into_iter().collect())
}

/// How a model's tensors line up with a weight file's under the mapping rules.
pub struct Comparison {
    /// (ours, theirs, shape) of tensors found with the same shape.
    pub matched: Vec<(String, String, Vec<i64>)>,
    /// (ours, theirs looked for, our shape) of tensors the file lacks.
    pub missing: Vec<(String, String, Vec<i64>)>,
    /// (ours, theirs, our shape, their shape).
    pub mis_shaped: Vec<(String, String, Vec<i64>, Vec<i64>)>,
    /// (name, shape) of the file's tensors nothing of the model uses, in module order.
    pub extra: Vec<(String, Vec<i64>)>,
}

impl Comparison {
    /// Whether every tensor of the model has its counterpart and nothing is left over.
    pub fn fits(&self) -> bool {
        self.missing.is_empty() && self.mis_shaped.is_empty() && self.extra.is_empty()
    }

    /// Rules that would fill the missing tensors from the extra ones: each missing tensor
    /// takes the first unused extra one with the same shape and last name part
    /// (`weight`, `running_var`), both in order (the model's order, the file's module order).
    pub fn proposed_map(&self) -> Vec<(String, String)> {
        let last = |n: &str| n.rsplit('.').next().unwrap_or(n).to_string();
        let mut taken = vec![false; self.extra.len()];
        let mut out = Vec::new();
        for (ours, _, shape) in &self.missing {
            let found = self
                .extra
                .iter()
                .enumerate()
                .find(|(k, (name, s))| !taken[*k] && s == shape && last(name) == last(ours));
            if let Some((k, (name, _))) = found {
                taken[k] = true;
                out.push((ours.clone(), name.clone()));
            }
        }
        out
    }
}

/// Lines up the model's tensors (`ours`: name, shape, in model order) with `file`'s.
pub fn compare(
    ours: &[(String, Vec<i64>)],
    file: &HashMap<String, Vec<i64>>,
    map: &BTreeMap<String, String>,
    skipped: impl Fn(&str) -> bool,
) -> Result<Comparison, String> {
    let mapping = Mapping::new(map)?;
    if let Some(unused) = mapping.unused(ours.iter().map(|(n, _)| n.as_str())).first() {
        let mut tensors: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
        tensors.sort_unstable();
        let hint = crate::diagnostics::did_you_mean(unused, tensors.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(format!(
            "transfer.map renames `{unused}`, which is not a tensor of the model{hint}\n  tensors: {}",
            tensors.join(", ")
        ));
    }
    let mut c = Comparison {
        matched: Vec::new(),
        missing: Vec::new(),
        mis_shaped: Vec::new(),
        extra: Vec::new(),
    };
    let mut used = std::collections::HashSet::new();
    for (name, shape) in ours.iter().filter(|(n, _)| !skipped(n)) {
        let theirs = mapping.theirs(name);
        match file.get(&theirs) {
            None => c.missing.push((name.clone(), theirs, shape.clone())),
            Some(s) if s != shape => {
                c.mis_shaped
                    .push((name.clone(), theirs.clone(), shape.clone(), s.clone()));
                used.insert(theirs);
            }
            Some(_) => {
                c.matched
                    .push((name.clone(), theirs.clone(), shape.clone()));
                used.insert(theirs);
            }
        }
    }
    let mut extra: Vec<(String, Vec<i64>)> = file
        .iter()
        .filter(|(k, _)| !used.contains(*k) && !is_bookkeeping(k) && !skipped(k))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    extra.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    c.extra = extra;
    Ok(c)
}

/// The model's tensors in graph order (a Network's variables are a map).
pub fn model_tensors(net: &Network) -> Vec<(String, Vec<i64>)> {
    let vars = net.vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    let order = |n: &str| {
        net.graph
            .nodes
            .iter()
            .position(|node| {
                n.starts_with(&format!("{}.", node.name))
                    || matches!(&node.op, crate::ir::Op::Conv2d { epilogue, .. } | crate::ir::Op::Dense { epilogue, .. }
                        if epilogue.batch_norm.as_ref().is_some_and(|b| n.starts_with(&format!("{}.", b.name))))
            })
            .unwrap_or(usize::MAX)
    };
    names.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.cmp(b)));
    names
        .into_iter()
        .map(|n| (n.clone(), vars[n].size()))
        .collect()
}

/// Copies the tensors of `path` into `net`. `map` renames: our name → name in the file,
/// exactly or by `*` patterns. Layers listed in `skip` (e.g. a new head; patterns allowed)
/// keep their fresh initialization.
/// Returns the names loaded, or a message listing every missing, extra and mis-shaped tensor.
pub fn load(
    net: &mut Network,
    path: &Path,
    map: &BTreeMap<String, String>,
    skip: &[String],
) -> Result<Vec<String>, String> {
    let file = read(path)?;
    let skip = super::network::expand_layers(&net.graph, "transfer.skip", skip)?;
    let skipped = |name: &str| {
        skip.iter().any(|layer| {
            name.split('.').next() == Some(layer.as_str()) || name.starts_with(&format!("{layer}."))
        })
    };
    let shapes: HashMap<String, Vec<i64>> =
        file.iter().map(|(k, t)| (k.clone(), t.size())).collect();
    let c = compare(&model_tensors(net), &shapes, map, skipped)?;
    if !c.fits() {
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
        section(
            "missing from the file",
            c.missing
                .iter()
                .map(|(ours, theirs, _)| {
                    if theirs == ours {
                        ours.clone()
                    } else {
                        format!("{ours} (looked for `{theirs}`)")
                    }
                })
                .collect(),
        );
        section(
            "different shapes",
            c.mis_shaped
                .iter()
                .map(|(ours, _, a, b)| {
                    format!("{ours:<28} model {:<16} file {b:?}", format!("{a:?}"))
                })
                .collect(),
        );
        section(
            "in the file but not in the model",
            c.extra.iter().map(|(n, _)| n.clone()).collect(),
        );
        msg.push_str("\n  hint: name layers as in the file, map names with `transfer.map` (`*` patterns allowed; `qatc weights diff` proposes rules), or list new layers in `transfer.skip`");
        return Err(msg);
    }
    let ours = net.vs.variables();
    tch::no_grad(|| {
        for (name, theirs, _) in &c.matched {
            ours[name].shallow_clone().copy_(
                &file[theirs]
                    .to_kind(ours[name].kind())
                    .to_device(ours[name].device()),
            );
        }
    });
    Ok(c.matched.into_iter().map(|(n, _, _)| n).collect())
}
