//! Compiles the precision shim (shim/precision_shim.cpp: bfloat16 autocast and the CPU's
//! bfloat16 features) against the libtorch that torch-sys found. torch-sys publishes its lib
//! folder to dependent build scripts as `DEP_TCH_LIBTORCH_LIB`; the headers sit beside it.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not publish DEP_TCH_LIBTORCH_LIB (libtorch lib folder)"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib folder has a parent")
        .to_path_buf();
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .include("shim")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .file("shim/precision_shim.cpp")
        .compile("gear_precision");
    println!("cargo:rustc-link-search=native={}", lib.display());
}
