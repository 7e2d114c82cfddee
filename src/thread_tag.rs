//! Cheap identities for borrowing threads, so a leak report can name the thread that
//! took a connection without the hot path touching `std::thread::current()` (an `Arc`
//! clone, an atomic RMW on a shared count).
//!
//! Each thread gets a small number on first use and registers its name once (the only
//! allocation, outside the steady state); the hot path reads a thread-local `Cell`.

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
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(name) => name.to_owned(),
        None => format!("{:?}", thread.id()),
    };
    if let Ok(mut names) = NAMES.lock() {
        names.get_or_insert_with(HashMap::new).insert(tag, name);
    }
    tag
}

/// This thread's tag (non-zero).
#[inline]
pub(crate) fn current() -> u64 {
    let cached = CACHED.with(Cell::get);
    if cached != 0 {
        return cached;
    }
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
        assert_eq!(name.as_deref(), Some("tagged-worker"));
        assert_eq!(
            super::name_of(other),
            None,
            "forgotten when the thread exits"
        );
    }
}
