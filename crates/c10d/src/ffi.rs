//! Raw bindings of shim/c10d_shim.h. Only `lib.rs` calls these, through safe wrappers.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};

#[repr(C)]
pub struct Group {
    _private: [u8; 0],
}

extern "C" {
    pub fn gear_c10d_backends() -> c_int;
    pub fn gear_c10d_new(
        backend: *const c_char,
        master_addr: *const c_char,
        master_port: c_int,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut Group;
    pub fn gear_c10d_all_reduce_sum(
        group: *mut Group,
        t: *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gear_c10d_broadcast(
        group: *mut Group,
        t: *mut c_void,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gear_c10d_all_gather(
        group: *mut Group,
        output: *mut c_void,
        input: *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gear_c10d_barrier(group: *mut Group, err: *mut *mut c_char) -> c_int;
    pub fn gear_c10d_free(group: *mut Group);
    pub fn gear_c10d_free_string(s: *mut c_char);
}

/// Takes ownership of a message the shim allocated.
pub fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "c10d failed without a message".into();
    }
    // SAFETY: the shim stores a NUL-terminated string from strdup, freed exactly once here.
    unsafe {
        let message = CStr::from_ptr(err).to_string_lossy().into_owned();
        gear_c10d_free_string(err);
        message
    }
}

/// Calls `f` with an error slot; a non-zero status becomes the shim's message.
pub fn check(f: impl FnOnce(*mut *mut c_char) -> c_int) -> Result<(), String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    if f(&mut err) == 0 {
        Ok(())
    } else {
        Err(take_error(err))
    }
}

/// The `torch::Tensor*` behind a tch tensor.
pub fn tensor_ptr(t: &tch::Tensor) -> *mut c_void {
    t.as_ptr() as *mut c_void
}
