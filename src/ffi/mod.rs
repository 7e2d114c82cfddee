//! The C ABI: every `extern "C"` function, type and constant of `include/heliosdb_pool.h`.
//!
//! One module per C type, holding no pool logic of its own:
//!
//! - [`status`]: `heliosdb_status_str`, `heliosdb_last_error_message`, the version
//!   functions. The status enum itself is [`crate::Status`], exported as
//!   `heliosdb_status`.
//! - [`config`]: `heliosdb_pool_config`, its init/preset/validate functions and the
//!   callback types.
//! - [`pool`]: the opaque `heliosdb_pool`, `heliosdb_lease`, metadata, statistics,
//!   leak reports and the Prometheus text.
//! - [`leak`]: `heliosdb_leak_report`, shared by the pool and the detector.
//! - [`detector`]: the standalone leak detector, `heliosdb_leak_detector`.
//! - [`health`]: the standalone health monitor, `heliosdb_health_monitor`.
//! - [`callback_error`]: `heliosdb_callback_set_error`, a callback's reason for failing.
//! - `boundary` (private): the one helper every export runs through (panic catching,
//!   last-error bookkeeping, pointer and string checks).
//!
//! The functions are ordinary `unsafe extern "C" fn`s, so Rust code (the benchmarks)
//! can call them as `heliosdb_pool::ffi::heliosdb_pool_acquire` and so on. The header is
//! generated from these modules by `build.rs` (cbindgen); README.md's "Using from C and C++" gives
//! the conventions.
#![allow(non_camel_case_types)]
// The exports take raw pointers by design; each documents its contract in `# Safety`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
pub mod callback_error;
pub mod config;
pub mod detector;
pub mod health;
pub mod leak;
pub mod pool;
pub mod status;

pub use callback_error::*;
pub use config::*;
pub use detector::*;
pub use health::*;
pub use leak::*;
pub use pool::*;
pub use status::*;
