//! Links the binaries, tests and benches with an rpath to libtorch, so `qatc`
//! runs without LD_LIBRARY_PATH (torch-sys sets the rpath only for its own C++ shim),
//! and compiles the bridge to PyTorch's distributed engine (shim/dist.cpp) when
//! libtorch's headers are there; without them qatc builds single-process only. The
//! bridge has NCCL (data-parallel on CUDA devices) when libtorch has CUDA and NCCL's and
//! CUDA's headers are found; otherwise Gloo only.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo::rustc-check-cfg=cfg(qatc_dist)");
    println!("cargo::rustc-check-cfg=cfg(qatc_nccl)");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        // Nothing in qatc's own code may name a libtorch_cuda symbol, and rustc links with
        // --as-needed: without this the library is dropped and CUDA is never registered
        // (tch::Cuda::is_available() would say false on a machine with GPUs).
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    // For report.json's environment.
    let version_file = Path::new(&lib).join("../build-version");
    println!("cargo:rerun-if-changed={}", version_file.display());
    if let Ok(version) = std::fs::read_to_string(&version_file) {
        println!("cargo:rustc-env=QATC_LIBTORCH_VERSION={}", version.trim());
    }
    build_dist_shim(Path::new(&lib));
}

/// c10d's TCPStore and ProcessGroupGloo live in libtorch_cpu; their headers are in
/// libtorch's include dir, except Gloo's own (vendored in shim/gloo-include).
fn build_dist_shim(lib: &Path) {
    println!("cargo:rerun-if-changed=shim");
    // To build (and check) the single-process qatc on a libtorch that has the headers.
    println!("cargo:rerun-if-env-changed=QATC_NO_DIST");
    if std::env::var_os("QATC_NO_DIST").is_some() {
        return;
    }
    let include = lib.join("../include");
    let gloo_header = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    if !gloo_header.exists() {
        println!(
            "cargo:warning=no {} : qatc is built without distributed training",
            gloo_header.display()
        );
        return;
    }
    let shim = PathBuf::from("shim");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(shim.join("dist.cpp"))
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(shim.join("gloo-include"))
        .flag("-std=c++17")
        // The wheel's libtorch uses the C++11 string ABI (TCPStore takes a std::string).
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // Without it ProcessGroupGloo.hpp declares nothing.
        .define("USE_C10D_GLOO", None)
        .warnings(false)
        .extra_warnings(false)
        .flag_if_supported("-w");
    let nccl = nccl_headers(lib, &include);
    match &nccl {
        Ok(dirs) => {
            for dir in dirs {
                build.include(dir);
            }
            // USE_C10D_NCCL: without it ProcessGroupNCCL.hpp declares nothing.
            build
                .define("USE_C10D_NCCL", None)
                .define("USE_CUDA", None)
                .define("QATC_NCCL", None);
        }
        Err(why) => {
            // Read by qatc's refusal of `--device cuda` with several ranks.
            println!("cargo:rustc-env=QATC_NO_NCCL_WHY={why}");
        }
    }
    build.compile("qatc_dist");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-cfg=qatc_dist");
    if nccl.is_ok() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-cfg=qatc_nccl");
    }
}

/// The headers CUDA's parts of c10d include, from the first of these directories that
/// has each: QATC_CUDA_INCLUDE (a `:`-separated list), the `cuda/include` that
/// `scripts/setup-libtorch.sh --cuda` assembles beside libtorch, `$CUDA_HOME/include`,
/// /usr/local/cuda/include, /usr/include. Err says why NCCL is left out, in a sentence.
fn nccl_headers(lib: &Path, include: &Path) -> Result<Vec<PathBuf>, String> {
    println!("cargo:rerun-if-env-changed=QATC_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if !lib.join("libtorch_cuda.so").exists() {
        return Err(format!(
            "the libtorch qatc was built against ({}) has no CUDA (no libtorch_cuda.so)",
            lib.display()
        ));
    }
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp")
        .exists()
    {
        return Err(format!(
            "libtorch's include dir ({}) has no ProcessGroupNCCL.hpp",
            include.display()
        ));
    }
    let mut candidates: Vec<PathBuf> = std::env::var("QATC_CUDA_INCLUDE")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    candidates.push(lib.join("../cuda/include"));
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.push(PathBuf::from("/usr/include"));
    // What ProcessGroupNCCL.hpp reaches through NCCLUtils.hpp and ATen/cuda/CUDAContext.h.
    const NEEDED: [&str; 8] = [
        "nccl.h",
        "cuda_runtime_api.h",
        // From CUDA's crt and CCCL: cuda_runtime.h and cuda_fp16.h include them.
        "crt/host_config.h",
        "nv/target",
        "cublas_v2.h",
        "cublasLt.h",
        "cusparse.h",
        "cusolverDn.h",
    ];
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut missing = Vec::new();
    for header in NEEDED {
        match candidates.iter().find(|dir| dir.join(header).exists()) {
            Some(dir) => {
                println!("cargo:rerun-if-changed={}", dir.join(header).display());
                // The compiler searches /usr/include anyway; naming it with -I would
                // break libstdc++'s #include_next.
                if !dirs.contains(dir) && dir != Path::new("/usr/include") {
                    dirs.push(dir.clone());
                }
            }
            None => missing.push(header),
        }
    }
    if missing.is_empty() {
        Ok(dirs)
    } else {
        Err(format!(
            "the headers {} were not found (looked in {})",
            missing.join(", "),
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}
