//! `qatc build --nproc N`: a local launcher in the manner of torchrun's elastic agent.
//! It hosts the rendezvous store, starts N copies of this qatc with torchrun's
//! variables, and watches them: when one fails, the others get a grace period to fail
//! on their own (they do at their next collective), then are killed; the exit status
//! names every rank that failed and how.

use std::process::{Child, Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use super::CliError;
use crate::train::distributed::{DistError, StoreHost, DEFAULT_TIMEOUT_S};

/// How long the other ranks may take to stop once one has failed.
const GRACE: Duration = Duration::from_secs(15);

pub(super) fn launch(world: usize) -> Result<ExitCode, CliError> {
    if !crate::train::distributed::AVAILABLE {
        return Err(DistError::Unavailable.into());
    }
    let timeout_s = match std::env::var("QATC_DIST_TIMEOUT") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                format!("QATC_DIST_TIMEOUT={v:?} is not a positive number of seconds")
            })?,
        Err(_) => DEFAULT_TIMEOUT_S,
    };
    let port = match std::env::var("MASTER_PORT") {
        Ok(p) => p
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("MASTER_PORT={p:?} is not a port number"))?,
        // Any free port: two builds on one machine do not collide.
        Err(_) => 0,
    };
    let store = StoreHost::start(port, world, Duration::from_secs(timeout_s))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find qatc's own path: {e}"))?;
    let args = worker_args(std::env::args_os().skip(1));
    // As torchrun does: workers share the cores instead of each taking all of them.
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / world).max(1).to_string()
    });
    let mut children: Vec<Option<Child>> = Vec::with_capacity(world);
    for rank in 0..world {
        let child = Command::new(&exe)
            .args(&args)
            .env("OMP_NUM_THREADS", &threads)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("GROUP_RANK", "0")
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", store.port.to_string())
            .env("TORCHELASTIC_USE_AGENT_STORE", "True")
            .env("QATC_DIST_TIMEOUT", timeout_s.to_string())
            .spawn();
        match child {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                kill_all(&mut children);
                return Err(format!("cannot start rank {rank} ({}): {e}", exe.display()).into());
            }
        }
    }
    let failures = watch(&mut children);
    drop(store);
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(format!(
        "data-parallel build failed: {}",
        failures
            .iter()
            .map(|(rank, why)| format!("rank {rank} {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    )
    .into())
}

/// This command line without `--nproc N`: what each worker runs.
fn worker_args(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some("--nproc") => skip_value = true,
            Some(a) if a.starts_with("--nproc=") => {}
            _ => out.push(arg),
        }
    }
    out
}

/// Waits for every worker; returns the failed ones (first failure first) and why.
fn watch(children: &mut [Option<Child>]) -> Vec<(usize, String)> {
    let mut failures = Vec::new();
    let mut first_failure: Option<Instant> = None;
    loop {
        let mut running = 0;
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        failures.push((rank, describe(status)));
                        first_failure.get_or_insert_with(Instant::now);
                    }
                    *slot = None;
                }
                Ok(None) => running += 1,
                Err(e) => {
                    failures.push((rank, format!("could not be watched: {e}")));
                    *slot = None;
                }
            }
        }
        if running == 0 {
            return failures;
        }
        if first_failure.is_some_and(|t| t.elapsed() > GRACE) {
            for (rank, slot) in children.iter_mut().enumerate() {
                if let Some(mut child) = slot.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push((
                        rank,
                        format!(
                            "was still running {} s after rank {} failed, and was stopped",
                            GRACE.as_secs(),
                            failures[0].0
                        ),
                    ));
                }
            }
            return failures;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL: killed, perhaps for memory)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGSEGV => " (SIGSEGV: a crash)",
                libc::SIGABRT => " (SIGABRT: aborted)",
                _ => "",
            };
            return format!("was killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended without an exit status".to_string(),
    }
}

fn kill_all(children: &mut [Option<Child>]) {
    for mut child in children.iter_mut().filter_map(Option::take) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::distributed::Rendezvous;

    #[test]
    fn workers_run_the_command_without_nproc() {
        let args = ["build", "m.qat", "--nproc", "2", "--quiet", "--nproc=3"]
            .map(std::ffi::OsString::from);
        let out = worker_args(args.into_iter());
        assert_eq!(
            out,
            ["build", "m.qat", "--quiet"].map(std::ffi::OsString::from)
        );
    }

    #[test]
    fn the_variables_set_for_a_worker_are_read_back() {
        let vars = |name: &str| {
            Some(
                match name {
                    "RANK" => "1",
                    "LOCAL_RANK" => "1",
                    "WORLD_SIZE" => "2",
                    "MASTER_ADDR" => "127.0.0.1",
                    "MASTER_PORT" => "29400",
                    "TORCHELASTIC_USE_AGENT_STORE" => "True",
                    "QATC_DIST_TIMEOUT" => "7",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let rv = Rendezvous::from_vars(vars).unwrap().unwrap();
        assert_eq!((rv.rank, rv.world, rv.master_port), (1, 2, 29400));
        assert!(rv.agent_store);
        assert_eq!(rv.timeout, Duration::from_secs(7));
    }
}
