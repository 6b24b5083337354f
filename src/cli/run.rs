//! `qatc run`: an int8 artifact on images, without libtorch.

use std::path::Path;
use std::process::ExitCode;

/// `qatc run`: predictions (one class per line) or, with labels, the accuracy.
pub(super) fn run_int8(
    artifact: &Path,
    images: &Path,
    labels: Option<&Path>,
    threads: Option<usize>,
) -> Result<ExitCode, String> {
    // Thousands of threads only thrash the machine: refuse them before loading anything big.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_threads = cores * crate::limits::THREADS_PER_CORE;
    if let Some(t) = threads.filter(|&t| t > max_threads) {
        return Err(format!(
            "--threads {t} is too many: at most {max_threads} ({} per core, {cores} cores here)",
            crate::limits::THREADS_PER_CORE
        ));
    }
    let model = crate::runtime::load(artifact).map_err(|e| e.to_string())?;
    let (pixels, count, rows, cols) =
        crate::data::read_images(images).map_err(|e| e.to_string())?;
    let input = &model.graph().input.shape;
    // Images are one channel, `rows` × `cols`: an [1, H, W] input takes exactly that
    // geometry, a vector input any of its size.
    let fits = match input[..] {
        [1, h, w] => (rows, cols) == (h, w),
        [f] => rows * cols == f,
        _ => false,
    };
    if !fits {
        return Err(format!(
            "{} has {rows}x{cols} images; model `{}` takes {input:?}",
            images.display(),
            model.graph().model,
        ));
    }
    let labels = match labels {
        Some(path) => {
            let l = crate::data::read_labels(path).map_err(|e| e.to_string())?;
            if l.len() != count {
                return Err(format!(
                    "{} has {count} images but {} has {} labels",
                    images.display(),
                    path.display(),
                    l.len()
                ));
            }
            // A label the model cannot predict would only count as wrong, silently.
            let outputs = crate::int8::graph::output_count(model.graph());
            let known = |label: u8| match &model.graph().classes {
                Some(classes) => classes.contains(&label),
                None => (label as usize) < outputs,
            };
            if let Some(at) = l.iter().position(|&x| !known(x)) {
                let classes = match &model.graph().classes {
                    Some(c) => format!("{c:?}"),
                    None => format!("0 to {}", outputs.saturating_sub(1)),
                };
                return Err(format!(
                    "{}: label {at} is {}, but model `{}` classifies {classes}",
                    path.display(),
                    l[at],
                    model.graph().model
                ));
            }
            Some(l)
        }
        None => None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let outputs = pool
        .install(|| model.run_pixels(&pixels))
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let class = |i: usize| {
        model
            .graph()
            .classes
            .as_ref()
            .and_then(|c| c.get(i).copied())
            .map_or(i, usize::from)
    };
    let predicted: Vec<usize> = model.argmax(&outputs).into_iter().map(class).collect();
    match labels {
        Some(labels) => {
            let correct = predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| **p == **l as usize)
                .count();
            println!(
                "accuracy: {:.2}% ({correct}/{count})",
                correct as f64 / count.max(1) as f64 * 100.0
            );
            eprintln!(
                "{count} images in {seconds:.3} s ({:.0} images/s, {} kernels, {} threads)",
                count as f64 / seconds.max(1e-9),
                model.isa().name(),
                pool.current_num_threads()
            );
        }
        None => {
            let mut out = String::with_capacity(predicted.len() * 3);
            for p in predicted {
                out.push_str(&format!("{p}\n"));
            }
            print!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
