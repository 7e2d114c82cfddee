//! Cheap identities for borrowing threads, so a leak report can name the thread that
//! took a connection without the hot path touching `std::thread::current()` (an `Arc`
//! clone, an atomic RMW on a shared count).
//!
//! Each thread gets a small number on first use and registers its name once (the only
//! allocation, outside the steady state); the hot path reads a thread-local `Cell`.
//!
//! The name says which thread, with its id beside it: `report-job (ThreadId(7))` for a
//! named Rust thread; `worker-3 (tid 12345)` for a thread named by the OS only (a C
//! thread named with `pthread_setname_np`, read once here with `pthread_getname_np`,
//! Linux with glibc only: older musl lacks `pthread_getname_np`); `ThreadId(7)` for a thread with no name of its own.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
static NAMES: Mutex<Option<HashMap<u64, String>>> = Mutex::new(None);

struct Tag(u64);

impl Drop for Tag {
    fn drop(&mut self) {
        // The thread is exiting: forget its name so the registry stays bounded.
        if let Ok(mut names) = NAMES.lock() {
            if let Some(map) = names.as_mut() {
                map.remove(&self.0);
            }
        }
    }
}

thread_local! {
    static CACHED: Cell<u64> = const { Cell::new(0) };
    static OWNER: Tag = Tag(register());
}

fn register() -> u64 {
    // Relaxed: the tag only needs to be unique.
    let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
    let name = describe(&std::thread::current());
    if let Ok(mut names) = NAMES.lock() {
        names.get_or_insert_with(HashMap::new).insert(tag, name);
    }
    tag
}

/// The registered name of the calling thread `thread` (see the module docs).
fn describe(thread: &std::thread::Thread) -> String {
    if let Some(name) = thread.name() {
        return format!("{name} ({:?})", thread.id());
    }
    if let Some((name, tid)) = os_thread_name() {
        return format!("{name} (tid {tid})");
    }
    format!("{:?}", thread.id())
}

/// The calling thread's OS name and kernel thread id, if it has a name of its own: a new
/// thread inherits its creator's name, which is the program's own (`comm`) unless
/// something renamed it, so the program's name counts as none.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn os_thread_name() -> Option<(String, i64)> {
    // Linux thread names are at most 15 bytes plus the NUL.
    let mut buf = [0 as std::ffi::c_char; 16];
    // SAFETY: `buf` is writable for its length, which is passed; `pthread_self` is the
    // calling thread, alive for the call.
    let rc = unsafe { libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the name is NUL-terminated within `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .ok()?;
    if name.is_empty() || program_name().as_deref() == Some(name) {
        return None;
    }
    // SAFETY: `gettid` takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    Some((name.to_owned(), tid))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn os_thread_name() -> Option<(String, i64)> {
    None
}

/// The name Linux gives the program's threads by default: the executable's file name,
/// cut to 15 bytes (`comm`). Read once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn program_name() -> Option<String> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let name = exe.file_name()?.to_str()?;
        let mut end = name.len().min(15);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Some(name[..end].to_owned())
    })
    .clone()
}

/// This thread's tag (non-zero). Every borrow records it: one thread-local load in
/// the common case, inline; the first call on a thread registers it, out of line.
#[inline(always)]
pub(crate) fn current() -> u64 {
    let cached = CACHED.with(Cell::get);
    if cached != 0 {
        return cached;
    }
    first_on_this_thread()
}

#[cold]
#[inline(never)]
fn first_on_this_thread() -> u64 {
    let tag = OWNER.try_with(|t| t.0).unwrap_or(0);
    CACHED.with(|c| c.set(tag));
    tag
}

/// The name of the thread with this tag, while it lives.
pub(crate) fn name_of(tag: u64) -> Option<String> {
    let names = NAMES.lock().ok()?;
    names.as_ref()?.get(&tag).cloned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_are_per_thread_and_named() {
        let here = super::current();
        assert_eq!(here, super::current());
        let (other, name) = std::thread::Builder::new()
            .name("tagged-worker".into())
            .spawn(|| {
                let t = super::current();
                (t, super::name_of(t))
            })
            .unwrap()
            .join()
            .unwrap();
        assert_ne!(here, other);
        let name = name.unwrap();
        assert!(
            name.starts_with("tagged-worker (ThreadId(") && name.ends_with("))"),
            "{name}"
        );
        assert_eq!(
            super::name_of(other),
            None,
            "forgotten when the thread exits"
        );
    }
}
