//! `heliosdb_callback_set_error`: lets a failing `connect` callback say why.
//!
//! A C callback can only return a number; a C++ one that catches an exception, or a C
//! one that has `PQerrorMessage`, has text worth showing. The callback hands it to this
//! thread-local slot before returning non-zero; the pool's `connect` wrapper (in
//! `pool.rs`) clears the slot before each call and takes it afterwards, so the text
//! reaches the waiter's `HELIOSDB_ERR_TIMEOUT` message and never leaks into a later
//! call.

use std::cell::RefCell;
use std::ffi::{CStr, c_char};

use super::boundary;

/// The longest message kept, in bytes (cut at a character boundary): the text ends up
/// in error messages, which should stay readable.
const MAX_MESSAGE: usize = 1024;

thread_local! {
    /// The message the running callback set on this thread, if any.
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Forgets any message set on this thread (called before a `connect` callback runs).
pub(crate) fn clear() {
    // `try_with`: during thread teardown the slot may be gone; then there is nothing
    // to clear.
    let _ = MESSAGE.try_with(|m| m.borrow_mut().take());
}

/// Takes the message set on this thread since [`clear`], if any.
pub(crate) fn take() -> Option<String> {
    MESSAGE.try_with(|m| m.borrow_mut().take()).ok().flatten()
}

/// Sets the reason a callback is about to fail with, on the calling thread: the pool
/// puts it in the error it records for the failure. Only `connect` uses it today: when
/// `connect` then returns non-zero, the failure reads `the connect callback failed
/// (CODE): MESSAGE`, and a caller whose acquire times out meanwhile sees that in
/// `heliosdb_last_error_message()`. The C++ wrapper calls it with the `what()` of an
/// exception thrown by a connect lambda.
///
/// Ownership: `message` is copied (up to 1024 bytes, cut at a character boundary; bytes
/// that are not UTF-8 are replaced); the caller keeps it. NULL clears the message. A
/// second call replaces the first.
///
/// Threading: the message is per thread; call it from the callback itself, on the
/// thread that runs it. The pool clears it before each `connect` call, so a message set
/// elsewhere, or by a callback that then succeeds, is dropped.
///
/// Errors: none (it returns nothing; a panic inside is caught and recorded as the last
/// error).
///
/// # Safety
///
/// `message` is NULL or a NUL-terminated string, valid during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn heliosdb_callback_set_error(message: *const c_char) {
    boundary::call_or((), || {
        let text = if message.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated by the function's contract; read
            // during this call only.
            let bytes = unsafe { CStr::from_ptr(message) }.to_bytes();
            let mut text = String::from_utf8_lossy(bytes).into_owned();
            if text.len() > MAX_MESSAGE {
                let mut end = MAX_MESSAGE;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            Some(text)
        };
        let _ = MESSAGE.try_with(|m| *m.borrow_mut() = text);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_take_clear_and_truncate() {
        clear();
        assert_eq!(take(), None);
        // SAFETY: NUL-terminated literals; NULL is allowed.
        unsafe {
            heliosdb_callback_set_error(c"first".as_ptr());
            heliosdb_callback_set_error(c"second".as_ptr());
        }
        assert_eq!(take().as_deref(), Some("second"));
        assert_eq!(take(), None);
        // SAFETY: as above.
        unsafe {
            heliosdb_callback_set_error(c"gone".as_ptr());
            heliosdb_callback_set_error(std::ptr::null());
        }
        assert_eq!(take(), None);
        let long = std::ffi::CString::new("é".repeat(MAX_MESSAGE)).unwrap();
        // SAFETY: a NUL-terminated string.
        unsafe { heliosdb_callback_set_error(long.as_ptr()) };
        let kept = take().unwrap();
        assert!(kept.len() <= MAX_MESSAGE && kept.len() >= MAX_MESSAGE - 1);
        assert!(kept.chars().all(|c| c == 'é'));
    }
}
