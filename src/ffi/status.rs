//! Status strings, the thread's last error message, and the library version.
//!
//! The status enum is [`crate::Status`] itself, exported to C as `heliosdb_status`
//! (`HELIOSDB_OK`, `HELIOSDB_ERR_*`): there is one list of codes, in `src/error.rs`.

use std::ffi::{CStr, c_char};

use crate::error::Status;

use super::boundary;

/// Every status, indexed by its code. The codes are contiguous from 0
/// (`status_codes_are_contiguous` checks it), and `c_description`'s exhaustive match
/// stops the build when a variant is added without being listed here.
const ALL: [Status; 25] = [
    Status::Ok,
    Status::NullArgument,
    Status::InvalidUtf8,
    Status::InvalidConfig,
    Status::PoolFull,
    Status::UserAtCapacity,
    Status::UnknownUser,
    Status::Timeout,
    Status::NoIdleConnection,
    Status::Closed,
    Status::StaleHandle,
    Status::Reclaimed,
    Status::UnknownConnection,
    Status::DuplicateResource,
    Status::UnknownResource,
    Status::TrackingLimit,
    Status::BufferTooSmall,
    Status::CallbackFailed,
    Status::ForeignHandle,
    Status::UnsupportedVersion,
    Status::Panic,
    Status::InvalidArgument,
    Status::Reentrant,
    Status::TooManyUsers,
    Status::UserNameTooLong,
];

/// The status with this code, if there is one. Codes from C are taken as integers and
/// converted here: a C caller may pass any value.
pub(crate) fn status_from_code(code: i32) -> Option<Status> {
    let index = usize::try_from(code).ok()?;
    ALL.get(index).copied()
}

/// `Status::description` as a NUL-terminated static string, built at compile time.
macro_rules! c_description {
    ($variant:ident) => {{
        const TEXT: &str = Status::$variant.description();
        const BYTES: [u8; TEXT.len() + 1] = nul_terminated(TEXT);
        const C: &CStr = match CStr::from_bytes_with_nul(&BYTES) {
            Ok(c) => c,
            Err(_) => panic!("a status description contains a NUL byte"),
        };
        C
    }};
}

const fn nul_terminated<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// The description of `status` as a static C string (no allocation, ever).
pub(crate) fn c_description(status: Status) -> &'static CStr {
    // Exhaustive on purpose: a new status must be added to `ALL` and here.
    match status {
        Status::Ok => c_description!(Ok),
        Status::NullArgument => c_description!(NullArgument),
        Status::InvalidUtf8 => c_description!(InvalidUtf8),
        Status::InvalidConfig => c_description!(InvalidConfig),
        Status::PoolFull => c_description!(PoolFull),
        Status::UserAtCapacity => c_description!(UserAtCapacity),
        Status::UnknownUser => c_description!(UnknownUser),
        Status::Timeout => c_description!(Timeout),
        Status::NoIdleConnection => c_description!(NoIdleConnection),
        Status::Closed => c_description!(Closed),
        Status::StaleHandle => c_description!(StaleHandle),
        Status::Reclaimed => c_description!(Reclaimed),
        Status::UnknownConnection => c_description!(UnknownConnection),
        Status::DuplicateResource => c_description!(DuplicateResource),
        Status::UnknownResource => c_description!(UnknownResource),
        Status::TrackingLimit => c_description!(TrackingLimit),
        Status::BufferTooSmall => c_description!(BufferTooSmall),
        Status::CallbackFailed => c_description!(CallbackFailed),
        Status::ForeignHandle => c_description!(ForeignHandle),
        Status::UnsupportedVersion => c_description!(UnsupportedVersion),
        Status::Panic => c_description!(Panic),
        Status::InvalidArgument => c_description!(InvalidArgument),
        Status::Reentrant => c_description!(Reentrant),
        Status::TooManyUsers => c_description!(TooManyUsers),
        Status::UserNameTooLong => c_description!(UserNameTooLong),
    }
}

/// A static, human-readable description of a status code.
///
/// Never NULL and never freed; an unknown code gives "unknown status". The code is
/// taken as an integer, so any value is safe to pass.
///
/// Thread-safety: callable from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn heliosdb_status_str(code: i32) -> *const c_char {
    boundary::call_or(c"unknown status".as_ptr(), || {
        match status_from_code(code) {
            Some(status) => c_description(status).as_ptr(),
            None => c"unknown status".as_ptr(),
        }
    })
}

/// The detailed message of the last call that failed on the calling thread (which
/// user, which argument, how long it waited, a panic's text, ...).
///
/// Never NULL. The string belongs to the library: it stays valid until the next
/// failing call on the same thread, and must not be freed. Successful calls leave it
/// unchanged, so read it right after the failing call. "" if no call has failed on
/// this thread.
///
/// Thread-safety: each thread has its own message.
#[unsafe(no_mangle)]
pub extern "C" fn heliosdb_last_error_message() -> *const c_char {
    boundary::call_or(c"".as_ptr(), boundary::last_error)
}

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version contains a NUL byte"),
    };

const fn parse_u32(text: &str) -> u32 {
    let bytes = text.as_bytes();
    assert!(!bytes.is_empty(), "empty version component");
    let mut value: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "non-numeric version component");
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

const MAJOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MAJOR"));
const MINOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MINOR"));
const PATCH: u32 = parse_u32(env!("CARGO_PKG_VERSION_PATCH"));

/// The library's version as a static string, e.g. "0.1.0". It agrees with the
/// header's `HELIOSDB_VERSION_STRING` when header and library match.
///
/// Thread-safety: callable from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn heliosdb_version_string() -> *const c_char {
    boundary::call_or(VERSION.as_ptr(), || VERSION.as_ptr())
}

/// The library's major version (`HELIOSDB_VERSION_MAJOR` of the header it was built
/// with). Compare it with the header's macro to detect a mismatched library.
///
/// Thread-safety: callable from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn heliosdb_version_major() -> u32 {
    boundary::call_or(MAJOR, || MAJOR)
}

/// The library's minor version (`HELIOSDB_VERSION_MINOR`).
///
/// Thread-safety: callable from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn heliosdb_version_minor() -> u32 {
    boundary::call_or(MINOR, || MINOR)
}

/// The library's patch version (`HELIOSDB_VERSION_PATCH`).
///
/// Thread-safety: callable from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn heliosdb_version_patch() -> u32 {
    boundary::call_or(PATCH, || PATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_contiguous() {
        for (i, status) in ALL.iter().enumerate() {
            assert_eq!(*status as i32, i32::try_from(i).unwrap());
            assert_eq!(status_from_code(*status as i32), Some(*status));
            assert_eq!(
                c_description(*status).to_str().unwrap(),
                status.description()
            );
        }
        assert_eq!(status_from_code(-1), None);
        assert_eq!(status_from_code(i32::try_from(ALL.len()).unwrap()), None);
    }

    #[test]
    fn version_agrees_with_cargo_toml() {
        let toml =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        let declared = toml
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("package version in Cargo.toml");
        // SAFETY: a static NUL-terminated string.
        let runtime = unsafe { CStr::from_ptr(heliosdb_version_string()) };
        assert_eq!(runtime.to_str().unwrap(), declared);
        let parts: Vec<u32> = declared.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(
            parts,
            [
                heliosdb_version_major(),
                heliosdb_version_minor(),
                heliosdb_version_patch()
            ]
        );
    }
}
