//! Keeps `libtorch_cuda.so` in the `gear` binary's dependencies when the libtorch we build against
//! has one. The linker drops libraries "as needed", and nothing in our code references a
//! `torch_cuda` symbol directly (CUDA kernels register themselves when the library loads), so
//! without this a CUDA libtorch would silently run `gear` on CPU only.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    if lib.join("libtorch_cuda.so").is_file() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
