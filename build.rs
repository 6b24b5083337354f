//! Links the binaries, tests and benches with an rpath to libtorch, so `qatc`
//! runs without LD_LIBRARY_PATH (torch-sys sets the rpath only for its own C++ shim).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // For report.json's environment.
        let version_file = std::path::Path::new(&lib).join("../build-version");
        println!("cargo:rerun-if-changed={}", version_file.display());
        if let Ok(version) = std::fs::read_to_string(&version_file) {
            println!("cargo:rustc-env=QATC_LIBTORCH_VERSION={}", version.trim());
        }
    }
}
