//! Compiles the c10d shim (shim/c10d_shim.cpp) against the libtorch that torch-sys found.
//!
//! torch-sys publishes its lib folder to dependent build scripts as `DEP_TCH_LIBTORCH_LIB`; the
//! headers sit beside it. The torch wheel ships c10d's headers but not Gloo's, so
//! shim/gloo_decls stands in for the five Gloo headers c10d's ProcessGroupGloo.hpp includes.
//! The NCCL backend is compiled when the libtorch has CUDA and the NCCL and CUDA runtime
//! headers (and CCCL's `nv/target`) are found (the torch wheel's `nvidia/*/include` folders, or `GEAR_CUDA_INCLUDE`).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rerun-if-env-changed=GEAR_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=GEAR_DIST_NO_NCCL");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not publish DEP_TCH_LIBTORCH_LIB (libtorch lib folder)"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib folder has a parent")
        .to_path_buf();
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .include("shim")
        .include("shim/gloo_decls")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .file("shim/c10d_shim.cpp");

    let nccl = std::env::var_os("GEAR_DIST_NO_NCCL").is_none()
        && lib.join("libtorch_cuda.so").is_file()
        && cuda_includes(&root)
            .map(|dirs| {
                for d in dirs {
                    build.include(d);
                }
                build
                    .define("GEAR_C10D_NCCL", None)
                    .define("USE_C10D_NCCL", None);
            })
            .is_some();
    build.compile("gear_c10d");
    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl {
        // The NCCL backend lives in libtorch_cuda; keep it even though "as needed" linking
        // would otherwise drop it from binaries that reach it only through this archive.
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-cfg=gear_nccl");
    }
    println!("cargo:rustc-check-cfg=cfg(gear_nccl)");
}

/// Folders holding `nccl.h` and `cuda_runtime_api.h`: `GEAR_CUDA_INCLUDE` (colon-separated) or
/// the torch wheel's `site-packages/nvidia/*/include` (plus Triton's CUDA headers for `crt/`).
fn cuda_includes(torch_root: &Path) -> Option<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = match std::env::var("GEAR_CUDA_INCLUDE") {
        Ok(v) => std::env::split_paths(&v).collect(),
        Err(_) => {
            let nvidia = torch_root.parent()?.join("nvidia");
            let mut found = Vec::new();
            for entry in std::fs::read_dir(&nvidia).ok()?.flatten() {
                let inc = entry.path().join("include");
                if inc.is_dir() {
                    found.push(inc);
                }
            }
            found.sort();
            // The cu13 runtime wheel leaves out `crt/`; Triton, a torch dependency, ships it.
            let triton = torch_root.parent()?.join("triton/backends/nvidia/include");
            if triton.join("crt/host_config.h").is_file() {
                found.push(triton);
            }
            found
        }
    };
    let has = |file: &str| dirs.iter().any(|d| d.join(file).is_file());
    let missing: Vec<&str> = [
        "nccl.h",
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
    ]
    .into_iter()
    .filter(|f| !has(f))
    .collect();
    if missing.is_empty() {
        Some(dirs)
    } else {
        println!(
            "cargo:warning=gear-c10d: CUDA libtorch found but not the headers {missing:?}; \
             building without the NCCL backend (set GEAR_CUDA_INCLUDE to a CUDA toolkit's include folders)"
        );
        None
    }
}
