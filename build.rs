//! Links the binaries, tests and benches with an rpath to libtorch, so `qatc`
//! runs without LD_LIBRARY_PATH (torch-sys sets the rpath only for its own C++ shim),
//! and compiles the bridge to PyTorch's distributed engine (shim/dist.cpp) when
//! libtorch's headers are there; without them qatc builds single-process only.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo::rustc-check-cfg=cfg(qatc_dist)");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
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
    cc::Build::new()
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
        .flag_if_supported("-w")
        .compile("qatc_dist");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-cfg=qatc_dist");
}
