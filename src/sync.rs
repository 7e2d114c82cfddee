//! The atomics and cells the lock-free core is built from: `std` normally, `loom` under
//! `--cfg loom`, so the model checker can explore every interleaving of the same code.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::Thread;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::Thread;

/// An `UnsafeCell` with loom's closure-based API, so accesses are tracked under loom and
/// free in normal builds.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return UnsafeCell(std::cell::UnsafeCell::new(value));
        #[cfg(loom)]
        return UnsafeCell(loom::cell::UnsafeCell::new(value));
    }

    /// Runs `f` with a shared pointer to the value. The caller guarantees no concurrent
    /// mutable access for the duration.
    #[cfg(loom)]
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        self.0.with(f)
    }

    /// Runs `f` with a mutable pointer to the value. The caller guarantees exclusive
    /// access for the duration.
    #[cfg(loom)]
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        self.0.with_mut(f)
    }

    /// A raw pointer to the value, for the guard's `Deref`, whose borrow outlives a
    /// closure. Not tracked by loom; the guard's exclusivity argument covers it.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// The point where a SeqCst handshake (a Dekker-style "store mine, then load theirs")
/// needs its two SeqCst accesses ordered.
///
/// In normal builds the SeqCst accesses on both sides already give that order (on x86
/// a locked RMW or `xchg` is a full barrier), so this is nothing. Loom does not model
/// SeqCst *accesses* (it treats them as AcqRel, tokio-rs/loom#180) but does model
/// SeqCst *fences*, so under loom this is a SeqCst fence, which gives the same order:
/// the models then check the same algorithm.
#[inline(always)]
pub(crate) fn handshake() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}
