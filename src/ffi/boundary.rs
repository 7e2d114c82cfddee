//! The C boundary: the one helper every export runs through, and typed pointer helpers.
//!
//! - [`call`] runs an export's body inside `catch_unwind`: `Ok` becomes `HELIOSDB_OK`,
//!   an [`Error`] becomes its status, a panic becomes `HELIOSDB_ERR_PANIC`. Every failure
//!   is saved as the thread's last error message ([`last_error`]).
//! - [`call_recorded`] is the same for the hot exports (acquire, release), whose bodies
//!   record each error where it arises ([`Failed`], made by `?` in a cold function), so
//!   that their success path carries a status, not an 80-byte `Result`.
//! - [`call_or`] does the same for the few exports that return a value, not a status.
//! - [`check_ptr`], [`check_str`], [`opt_str`], [`check_out`] turn raw pointers into
//!   references, strings and out-parameters, failing with `HELIOSDB_ERR_NULL_ARGUMENT`
//!   or `HELIOSDB_ERR_INVALID_UTF8` naming the argument. Out-parameters are written only
//!   through [`Out::write`], which the exports call last, on success.
//!
//! Nothing here allocates on success; a failure formats its message into a reused
//! thread-local buffer.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use crate::error::{Error, Result, Status};

thread_local! {
    /// The last failure's message on this thread, NUL-terminated (empty: none yet).
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A failure already recorded: its message is this thread's last error, and its status
/// is what the export returns. Made from an [`Error`] (by `?`) in a cold function, so
/// a body that returns `Result<(), Failed>` formats its errors where they arise, off
/// its success path, and its `Result` is a status rather than an 80-byte `Error`
/// (which the hot exports would otherwise keep room and registers for).
pub(crate) struct Failed(Status);

impl From<Error> for Failed {
    /// Records `error` (see [`fail`]).
    #[cold]
    #[inline(never)]
    fn from(error: Error) -> Self {
        Failed(fail(&error))
    }
}

/// Runs an export's body at the C boundary; see the module docs.
#[inline]
pub(crate) fn call(body: impl FnOnce() -> Result<()>) -> Status {
    call_recorded(|| Ok(body()?))
}

/// [`call`] for a body whose errors are recorded where they arise ([`Failed`]): the
/// form of the hot exports (acquire, release).
#[inline]
pub(crate) fn call_recorded(body: impl FnOnce() -> std::result::Result<(), Failed>) -> Status {
    // AssertUnwindSafe: after a panic the export returns HELIOSDB_ERR_PANIC and touches
    // nothing the body may have left half-updated; the pool's own state is designed to
    // stay consistent across a panic (its locks are poison-tolerant).
    //
    // The body's result becomes a `Status` inside the unwind guard: what crosses it is
    // then 4 bytes.
    let status = catch_unwind(AssertUnwindSafe(|| match body() {
        Ok(()) => Status::Ok,
        Err(Failed(status)) => status,
    }));
    match status {
        Ok(status) => status,
        Err(payload) => fail(&panic_error(payload.as_ref())),
    }
}

/// Runs the body of an export that returns a value; a panic returns `fallback` and is
/// saved as the last error.
#[inline]
pub(crate) fn call_or<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: as in `call`.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            fail(&panic_error(payload.as_ref()));
            fallback
        }
    }
}

fn panic_error(payload: &(dyn Any + Send)) -> Error {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(a non-string panic payload)")
    };
    Error::Panic { message }
}

/// Saves `error` as this thread's last error and returns its status.
#[cold]
pub(crate) fn fail(error: &Error) -> Status {
    // `try_with`: during thread teardown the slot may be gone; the status still stands.
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf.clear();
            // Writing into a Vec cannot fail.
            let _ = write!(buf, "{error}");
            // A message holds no NUL of its own (C strings cannot carry one), but cut
            // at the first one anyway so the C string is exactly the message.
            if let Some(nul) = buf.iter().position(|&b| b == 0) {
                buf.truncate(nul);
            }
            buf.push(0);
        }
    });
    error.status()
}

/// This thread's last error message: a NUL-terminated string that stays valid until
/// the next failing call on this thread; "" when no call has failed yet.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|cell| match cell.try_borrow() {
            Ok(buf) if !buf.is_empty() => buf.as_ptr().cast::<c_char>(),
            _ => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

/// A non-NULL pointer as a shared reference.
///
/// # Safety
///
/// If `ptr` is non-NULL it must point to a valid, initialized `T` that is not mutated
/// through another path for `'a` (the export's documented contract).
#[inline]
// Lazy on purpose: `Error` has drop glue (strings, an `Arc`), and an eagerly built
// error is dropped on every successful call, on the hot path (callgrind: 20
// instructions per argument).
#[allow(clippy::unnecessary_lazy_evaluations)]
pub(crate) unsafe fn check_ptr<'a, T>(ptr: *const T, argument: &'static str) -> Result<&'a T> {
    // SAFETY: non-NULL pointers are valid for `'a` by the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| Error::NullArgument { argument })
}

/// A NUL-terminated UTF-8 C string as `&str`, without copying or allocating.
///
/// # Safety
///
/// If `ptr` is non-NULL it must point to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
#[inline]
pub(crate) unsafe fn check_str<'a>(ptr: *const c_char, argument: &'static str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::NullArgument { argument });
    }
    // SAFETY: non-NULL and NUL-terminated, valid for `'a`, by the caller's contract.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|_| Error::InvalidUtf8 { argument })
}

/// Like [`check_str`], but NULL is `None` rather than an error.
///
/// # Safety
///
/// As [`check_str`].
#[inline]
pub(crate) unsafe fn opt_str<'a>(
    ptr: *const c_char,
    argument: &'static str,
) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { check_str(ptr, argument) }.map(Some)
}

/// A checked out-parameter: written once, by [`Out::write`], when the export succeeds.
pub(crate) struct Out<T>(NonNull<T>);

/// A non-NULL out-parameter.
///
/// # Safety
///
/// If `ptr` is non-NULL it must be valid for writes of a `T` (it may be uninitialized)
/// until the export returns.
#[inline]
// Lazy on purpose: `Error` has drop glue (strings, an `Arc`), and an eagerly built
// error is dropped on every successful call, on the hot path (callgrind: 20
// instructions per argument).
#[allow(clippy::unnecessary_lazy_evaluations)]
pub(crate) unsafe fn check_out<T>(ptr: *mut T, argument: &'static str) -> Result<Out<T>> {
    NonNull::new(ptr)
        .map(Out)
        .ok_or_else(|| Error::NullArgument { argument })
}

/// An optional out-parameter: NULL means the caller does not want the value.
///
/// # Safety
///
/// As [`check_out`].
#[inline]
pub(crate) unsafe fn opt_out<T>(ptr: *mut T) -> Option<Out<T>> {
    NonNull::new(ptr).map(Out)
}

impl<T> Out<T> {
    /// Writes the value without reading or dropping what was there.
    #[inline]
    pub(crate) fn write(self, value: T) {
        // SAFETY: `check_out`'s contract: valid for writes until the export returns;
        // `write` does not read the (possibly uninitialized) old value.
        unsafe { self.0.as_ptr().write(value) }
    }

    /// Writes the first `len` bytes of `value` (a versioned struct of which the caller
    /// knows an older, shorter version), and nothing past them.
    ///
    /// `len` must not exceed `size_of::<T>()`; `T` must be valid to expose bytewise (a
    /// `repr(C)` struct of plain fields).
    #[inline]
    pub(crate) fn write_prefix(self, value: T, len: usize) {
        assert!(
            len <= std::mem::size_of::<T>(),
            "prefix longer than the struct"
        );
        let value = std::mem::ManuallyDrop::new(value);
        // SAFETY: `check_out`'s contract, for a versioned struct: the caller's struct is
        // writable for the `len` bytes its version has; the copy is untyped (padding
        // bytes may be uninitialized) and reads `len <= size_of::<T>()` bytes of
        // `value`, a distinct local. `T` is plain data, so no drop is skipped that
        // matters (`ManuallyDrop` keeps the bytes as they are).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const *value).cast::<std::mem::MaybeUninit<u8>>(),
                self.0.as_ptr().cast::<std::mem::MaybeUninit<u8>>(),
                len,
            );
        }
    }
}

/// A C length or count as `u64` (lossless on every supported target).
#[inline]
pub(crate) fn usize_to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A C `int` line number as `u32`.
#[inline]
pub(crate) fn line_to_u32(line: std::ffi::c_int) -> Result<u32> {
    u32::try_from(line).map_err(|_| Error::InvalidArgument {
        argument: "line",
        reason: String::from("must not be negative"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_panic_status_with_its_message() {
        let status = call(|| panic!("boom"));
        assert_eq!(status, Status::Panic);
        // SAFETY: `last_error` returns a NUL-terminated thread-local string.
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(call_or(7, || panic!("again")), 7);
    }

    #[test]
    fn errors_set_the_message_and_success_keeps_it() {
        assert_eq!(call(|| Err(Error::ForeignHandle)), Status::ForeignHandle);
        assert_eq!(call(|| Ok(())), Status::Ok);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert_eq!(msg, "the handle belongs to another pool");
    }

    #[test]
    fn pointer_helpers_name_the_argument() {
        // SAFETY: NULL pointers are always accepted by the helpers.
        unsafe {
            assert_eq!(
                check_ptr::<u8>(std::ptr::null(), "pool").unwrap_err(),
                Error::NullArgument { argument: "pool" }
            );
            assert_eq!(
                check_str(std::ptr::null(), "user").unwrap_err(),
                Error::NullArgument { argument: "user" }
            );
            assert_eq!(opt_str(std::ptr::null(), "user").unwrap(), None);
            let bad = [0xffu8, 0];
            assert_eq!(
                check_str(bad.as_ptr().cast(), "user").unwrap_err(),
                Error::InvalidUtf8 { argument: "user" }
            );
        }
    }
}
