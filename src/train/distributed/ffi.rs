//! The C functions of shim/dist.cpp, and how their errors come back.

use std::os::raw::{c_char, c_int};

#[repr(C)]
pub struct Group {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Store {
    _private: [u8; 0],
}

extern "C" {
    pub fn qatc_dist_last_error() -> *const c_char;
    pub fn qatc_dist_host_store(
        port: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
        bound_port: *mut c_int,
    ) -> c_int;
    pub fn qatc_dist_free_store(store: *mut Store);
    #[allow(clippy::too_many_arguments)]
    pub fn qatc_dist_connect(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        host_store: c_int,
        timeout_ms: i64,
        device_kind: c_int,
        device_arg: *const c_char,
        cuda_device: c_int,
        out: *mut *mut Group,
    ) -> c_int;
    pub fn qatc_dist_free_group(group: *mut Group, clean: c_int);
    pub fn qatc_dist_store_set(
        group: *mut Group,
        key: *const c_char,
        value: *const u8,
        len: usize,
    ) -> c_int;
    pub fn qatc_dist_store_get(
        group: *mut Group,
        key: *const c_char,
        buf: *mut u8,
        cap: usize,
        len: *mut usize,
    ) -> c_int;
    pub fn qatc_dist_allreduce(
        group: *mut Group,
        tensors: *mut *mut torch_sys::C_tensor,
        n: c_int,
        op: c_int,
    ) -> c_int;
    pub fn qatc_dist_broadcast(
        group: *mut Group,
        tensors: *mut *mut torch_sys::C_tensor,
        n: c_int,
        root: c_int,
    ) -> c_int;
    pub fn qatc_dist_barrier(group: *mut Group) -> c_int;
}

/// The message of the last failed call on this thread.
pub fn last_error() -> String {
    // SAFETY: the shim returns a NUL-terminated string it owns (per thread).
    let message = unsafe { std::ffi::CStr::from_ptr(qatc_dist_last_error()) }
        .to_string_lossy()
        .trim()
        .to_string();
    super::without_source_location(&message).to_string()
}
