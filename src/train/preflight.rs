//! What training checks and makes before its first step: the output directory and the
//! layers the recipe names.

use super::*;

/// What can be checked without training: the output directory, and that the recipe's
/// layer lists name layers of the model. (Data and weights are checked as they are read,
/// which is also before the first training step.)
pub fn check_before_training(
    graph: &Graph,
    recipe: &Recipe,
    opts: &TrainOptions,
) -> Result<(), TrainError> {
    let out = &opts.out_dir;
    let not_dir = |why: String| TrainError::Write {
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
    // Only the process that writes makes the directory (other ranks of a group write nothing).
    if opts.writes() {
        std::fs::create_dir_all(out).map_err(|e| not_dir(e.to_string()))?;
        // Writable: a probe file, written and removed the way every artifact is written.
        let probe = out.join(".qatc-write-probe");
        report::write_atomic_bytes(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| not_dir(format!("it is not writable ({e})")))?;
    }
    if let Some(transfer) = &recipe.transfer {
        network::expand_layers(graph, "transfer.freeze", &transfer.freeze)
            .and_then(|_| network::expand_layers(graph, "transfer.skip", &transfer.skip))
            .map_err(TrainError::Transfer)?;
    }
    Ok(())
}
