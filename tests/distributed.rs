#![cfg(feature = "train")]
//! Data-parallel training over PyTorch's c10d on loopback: two ranks train the same
//! parameters as one process with the same global batch; rank 0 alone writes; a killed
//! rank, a rank that never comes and a rank with another recipe all end every rank with
//! a clear error within the timeout. Tiny model, tiny data: seconds per build.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, write};
use qatc::train::distributed::{no_nccl_why, StoreHost, AVAILABLE, NCCL};

/// No batch norm: per-rank batch statistics would differ from one process's (as with
/// PyTorch's DDP without SyncBatchNorm); everything else must match.
const MODEL: &str = "
model Tiny {
    input image: f32[784]
    let x = dense(image, units = 16)
    let x = relu(x)
    let logits = dense(x, units = 10)
    output logits
}
";

/// Seconds a rendezvous or collective may wait in these tests: between stages rank 1
/// waits for rank 0's evaluation, which a loaded machine (`make test`) slows down.
const TIMEOUT_S: u64 = 20;

fn recipe(float_epochs: usize, seed: u64, learn_ranges: bool) -> String {
    format!(
        "data:\n  dir: {}\n  train_limit: 200\n  test_limit: 32\ntrain:\n  epochs: {float_epochs}\n  batch_size: 32\n  learning_rate: 0.01\n  seed: {seed}\nqat:\n  epochs: 1\n  learning_rate: 0.001\n  learn_ranges: {learn_ranges}\nptq:\n  calibration_samples: 32\n",
        data_dir().display()
    )
}

fn skip() -> bool {
    if !AVAILABLE {
        eprintln!("skipped: this qatc was built without the c10d shim");
    }
    !AVAILABLE
}

fn qatc_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(common::qatc_bin());
    cmd.args(args)
        .env("QATC_DIST_TIMEOUT", TIMEOUT_S.to_string())
        .env_remove("WORLD_SIZE")
        .env_remove("RANK")
        .env_remove("MASTER_PORT");
    cmd
}

fn build_args<'a>(model: &'a str, recipe: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["build", model, "--recipe", recipe, "--out", out, "-q"]
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Starts rank `rank` of `world` as torchrun's agent would (the agent hosts the store).
fn worker(args: &[&str], rank: usize, world: usize, port: u16) -> Child {
    qatc_cmd(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("TORCHELASTIC_USE_AGENT_STORE", "True")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qatc starts")
}

/// Waits for `child`, failing the test if it outlives `limit`.
fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(name, t)| {
            let values = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The same tensors, equal within float rounding (sums split over ranks round differently).
fn assert_close(one: &Path, two: &Path) {
    let (a, b) = (tensors(one), tensors(two));
    assert!(!a.is_empty(), "{} has no tensors", one.display());
    let names = |v: &[(String, Vec<f32>)]| v.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&b),
        "{} vs {}",
        one.display(),
        two.display()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len(), "{name}");
        let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "{name} in {} differs by {worst} (values up to {scale})",
            two.display()
        );
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    model: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let model = write(&dir, "tiny.qat", MODEL).display().to_string();
    Setup {
        _tmp: tmp,
        dir,
        model,
    }
}

impl Setup {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn recipe(&self, name: &str, text: &str) -> String {
        write(&self.dir, name, text).display().to_string()
    }
}

#[test]
fn two_local_ranks_train_the_parameters_of_one_process() {
    if skip() {
        return;
    }
    let s = setup();
    // 200 images in batches of 32: the last batch (8) is split unevenly weighted, too.
    let recipe = s.recipe("r.yaml", &recipe(2, 5, false));
    let (one, two) = (s.path("one"), s.path("two"));
    ok(qatc_cmd(&build_args(&s.model, &recipe, &one))
        .output()
        .unwrap());
    let mut args = build_args(&s.model, &recipe, &two);
    args.extend(["--nproc", "2"]);
    ok(qatc_cmd(&args).output().unwrap());
    for file in ["float.safetensors", "qat.safetensors"] {
        assert_close(&Path::new(&one).join(file), &Path::new(&two).join(file));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&two).join("report.json")).unwrap())
            .unwrap();
    let history = report["float"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{report}");
}

#[test]
fn torchrun_style_ranks_learn_the_same_ranges_and_only_rank_0_writes() {
    if skip() {
        return;
    }
    let s = setup();
    let recipe = s.recipe("r.yaml", &recipe(1, 7, true));
    let one = s.path("one");
    ok(qatc_cmd(&build_args(&s.model, &recipe, &one))
        .output()
        .unwrap());
    // The test is torchrun's agent: it hosts the store; each rank has its own --out.
    let store = StoreHost::start(0, 2, Duration::from_secs(TIMEOUT_S)).unwrap();
    let outs = [s.path("rank0"), s.path("rank1")];
    let ranks: Vec<Child> = (0..2)
        .map(|r| worker(&build_args(&s.model, &recipe, &outs[r]), r, 2, store.port))
        .collect();
    for child in ranks {
        ok(finish(child, Duration::from_secs(120)));
    }
    for file in ["float.safetensors", "qat.safetensors"] {
        assert_close(&Path::new(&one).join(file), &Path::new(&outs[0]).join(file));
    }
    let learned = tensors(&Path::new(&outs[0]).join("qat.safetensors"));
    assert!(
        learned.iter().any(|(n, _)| n.contains("scale")),
        "no learned scales in {:?}",
        learned.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for file in ["report.json", "report.html", "float.safetensors", "int8"] {
        assert!(
            Path::new(&outs[0]).join(file).exists(),
            "rank 0 lacks {file}"
        );
    }
    assert!(!Path::new(&outs[1]).exists(), "rank 1 wrote {}", outs[1]);
}

/// The pids of `parent`'s children, in the order it started them.
fn children_of(parent: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_killed_rank_stops_the_build_with_its_name_and_resume_finishes_it() {
    if skip() {
        return;
    }
    let s = setup();
    let recipe = s.recipe("r.yaml", &recipe(30, 5, false));
    let out = s.path("out");
    let mut args = build_args(&s.model, &recipe, &out);
    args.extend(["--nproc", "2"]);
    let launcher = qatc_cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once rank 0 has checkpointed a float epoch, kill rank 1 (the second child).
    let progress = Path::new(&out).join("checkpoints/progress.json");
    let started = Instant::now();
    let workers = loop {
        let workers = children_of(launcher.id());
        if workers.len() == 2 && progress.exists() {
            break workers;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: a plain kill(2) of a process this test started (through the launcher).
    assert_eq!(unsafe { libc::kill(workers[1], libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let run = finish(launcher, Duration::from_secs(TIMEOUT_S + 30));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rank 1 was killed by signal 9"),
        "launcher does not name rank 1:\n{stderr}"
    );
    assert!(
        stderr.contains("error: rank 0: "),
        "rank 0 does not say why it stopped:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        killed.elapsed() < Duration::from_secs(TIMEOUT_S + 5),
        "rank 0 took {:?} to stop",
        killed.elapsed()
    );
    assert!(!Path::new(&out).join("report.json").exists());
    // The checkpoints are intact: one process resumes where the two stopped.
    let done = std::fs::read_to_string(&progress).unwrap();
    let resumed = ok(qatc_cmd(&[
        "build",
        &s.model,
        "--recipe",
        &recipe,
        "--out",
        &out,
        "--resume",
        "--log-format",
        "text",
    ])
    .output()
    .unwrap());
    assert!(resumed.contains("resuming: float"), "{resumed}\n{done}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&out).join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["float"]["history"].as_array().unwrap().len(), 30);
}

#[test]
fn ranks_with_different_recipes_are_refused_at_rendezvous() {
    if skip() {
        return;
    }
    let s = setup();
    let (r0, r1) = (
        s.recipe("a.yaml", &recipe(1, 5, false)),
        s.recipe("b.yaml", &recipe(1, 6, false)),
    );
    let store = StoreHost::start(0, 2, Duration::from_secs(TIMEOUT_S)).unwrap();
    let out = s.path("out");
    let a = worker(&build_args(&s.model, &r0, &out), 0, 2, store.port);
    let b = worker(&build_args(&s.model, &r1, &out), 1, 2, store.port);
    let limit = Duration::from_secs(TIMEOUT_S + 30);
    let (a, b) = (finish(a, limit), finish(b, limit));
    for (rank, run) in [(0, &a), (1, &b)] {
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "rank {rank}: {stderr}");
        assert!(
            stderr.contains("rank 1 builds a different model or recipe than rank 0"),
            "rank {rank}: {stderr}"
        );
    }
    assert!(!Path::new(&out).join("float.safetensors").exists());
}

#[test]
fn a_rank_that_never_comes_ends_the_others_after_the_timeout() {
    if skip() {
        return;
    }
    let s = setup();
    let recipe = s.recipe("r.yaml", &recipe(1, 5, false));
    let store = StoreHost::start(0, 2, Duration::from_secs(3)).unwrap();
    let out = s.path("out");
    // Rank 1 is never started.
    let lonely = qatc_cmd(&build_args(&s.model, &recipe, &out))
        .env("QATC_DIST_TIMEOUT", "3")
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", store.port.to_string())
        .env("TORCHELASTIC_USE_AGENT_STORE", "True")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let run = finish(lonely, Duration::from_secs(40));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rank 0: cannot join the 2 ranks"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{stderr}");
}

#[test]
fn several_ranks_on_cuda_are_refused_with_the_reason_when_they_cannot_run() {
    if skip() {
        return;
    }
    let s = setup();
    let recipe = s.recipe("r.yaml", &recipe(1, 5, false));
    let out = s.path("out");
    let mut args = build_args(&s.model, &recipe, &out);
    args.extend(["--device", "cuda", "--nproc", "2"]);
    let devices = tch::Cuda::device_count();
    if NCCL && devices >= 2 {
        eprintln!("skipped: this machine could train on 2 GPUs (this test is about refusals)");
        return;
    }
    let run = qatc_cmd(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    if NCCL {
        // Built with NCCL, but this machine has fewer than 2 GPUs.
        assert!(stderr.contains("CUDA"), "{stderr}");
    } else {
        // Without NCCL: said before anything else, with build.rs's reason.
        assert!(
            stderr.contains("data-parallel training on CUDA devices needs NCCL"),
            "{stderr}"
        );
        assert!(stderr.contains(no_nccl_why()), "{stderr}");
        assert!(stderr.contains("setup-libtorch.sh --cuda"), "{stderr}");
    }
    assert!(!Path::new(&out).exists(), "{stderr}");
}

/// The real launcher: PyTorch's own `torchrun --no-python qatc build` (torch from the cache
/// venv) starts workers that train the parameters of one process.
#[test]
fn pytorchs_torchrun_launches_workers_that_train_like_one_process() {
    if skip() {
        return;
    }
    let Some(python) = common::torch_python() else {
        return;
    };
    let torchrun = python.with_file_name("torchrun");
    if !torchrun.is_file() {
        let why = format!("no torchrun beside {}", python.display());
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let s = setup();
    let recipe = s.recipe("r.yaml", &recipe(2, 5, true));
    let (one, launched) = (s.path("one"), s.path("torchrun"));
    ok(qatc_cmd(&build_args(&s.model, &recipe, &one))
        .output()
        .unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let mut cmd = Command::new(&torchrun);
    cmd.args(["--nnodes", "1", "--nproc-per-node", "2"])
        .args(["--master-addr", "127.0.0.1", "--master-port", &port])
        .arg("--no-python")
        .arg(common::qatc_bin())
        .args(build_args(&s.model, &recipe, &launched))
        .env("QATC_DIST_TIMEOUT", TIMEOUT_S.to_string());
    ok(cmd.output().unwrap());
    for file in ["float.safetensors", "qat.safetensors"] {
        assert_close(
            &Path::new(&one).join(file),
            &Path::new(&launched).join(file),
        );
    }
}
