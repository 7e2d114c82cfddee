//! The per-user idle set: a bitmap of `AtomicU64` words over the user's local slot
//! indices (ARCHITECTURE section 3).
//!
//! A set bit means "this slot holds an idle connection that nobody owns". Clearing the
//! bit is taking ownership: `take` clears the lowest set bit with one `fetch_and`, and
//! whoever observes the bit set in the value it cleared owns the slot; everyone else
//! moves on to the next bit. `put` gives ownership back with `fetch_or`.
//!
//! Lowest index first concentrates use on few connections, so surplus connections stay
//! idle and can age out (the LIFO-like reuse of HikariCP, Go's database/sql and
//! pgbouncer). Each word sits on its own cache line so users sharing a line never
//! contend.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, Ordering};

/// A lock-free, allocation-free set of idle local slot indices, fixed capacity.
pub(crate) struct IdleSet {
    words: Box<[CachePadded<AtomicU64>]>,
}

impl IdleSet {
    /// An empty set able to hold indices `0..capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        let words = capacity.div_ceil(64).max(1);
        IdleSet {
            words: (0..words).map(|_| CachePadded::new(AtomicU64::new(0))).collect(),
        }
    }

    /// Takes ownership of the lowest idle index, if any.
    ///
    /// `first_load` orders the initial read of each word: `Relaxed` on the fast path
    /// (a stale read only costs a retry), `SeqCst` for a waiter's re-check, which must
    /// not be reordered before its registration (see `wait.rs`).
    #[inline]
    pub(crate) fn take(&self, first_load: Ordering) -> Option<u32> {
        for (w, word) in self.words.iter().enumerate() {
            let mut seen = word.load(first_load);
            while seen != 0 {
                let bit = seen & seen.wrapping_neg();
                // Acquire: pairs with the Release in `put`, so the new owner sees every
                // write the previous owner made to the slot.
                let before = word.fetch_and(!bit, Ordering::Acquire);
                if before & bit != 0 {
                    return Some(w as u32 * 64 + bit.trailing_zeros());
                }
                // Another thread took this bit first; try the others it left set.
                seen = before & !bit;
            }
        }
        None
    }

    /// Takes ownership of `index` if it is idle; `false` if someone else owns it.
    pub(crate) fn take_exact(&self, index: u32) -> bool {
        let (word, bit) = Self::locate(index);
        self.words[word].fetch_and(!bit, Ordering::Acquire) & bit != 0
    }

    /// Gives ownership of `index` back to the set. The caller must own it.
    ///
    /// SeqCst (a plain `lock or` on x86, as any RMW) so the caller's following SeqCst
    /// load of the waiter signal cannot be ordered before it: the release half of the
    /// no-lost-wake-up handshake in `wait.rs`. It is also a Release for the next owner.
    #[inline]
    pub(crate) fn put(&self, index: u32) {
        let (word, bit) = Self::locate(index);
        let before = self.words[word].fetch_or(bit, Ordering::SeqCst);
        debug_assert_eq!(before & bit, 0, "index {index} was put twice");
    }

    /// Number of idle indices (a racy snapshot, for statistics).
    pub(crate) fn count(&self) -> usize {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }

    /// Whether `index` is idle right now (a racy snapshot, for statistics).
    pub(crate) fn contains(&self, index: u32) -> bool {
        let (word, bit) = Self::locate(index);
        self.words[word].load(Ordering::Relaxed) & bit != 0
    }

    #[inline]
    fn locate(index: u32) -> (usize, u64) {
        ((index / 64) as usize, 1u64 << (index % 64))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn takes_lowest_first_and_exactly_once() {
        let set = IdleSet::new(130);
        for i in [129, 3, 64, 0] {
            set.put(i);
        }
        assert_eq!(set.count(), 4);
        assert!(set.contains(64));
        assert_eq!(set.take(Ordering::Relaxed), Some(0));
        assert_eq!(set.take(Ordering::Relaxed), Some(3));
        assert!(set.take_exact(129));
        assert!(!set.take_exact(129));
        assert_eq!(set.take(Ordering::Relaxed), Some(64));
        assert_eq!(set.take(Ordering::Relaxed), None);
    }

    #[test]
    fn concurrent_takers_never_share_an_index() {
        let set = std::sync::Arc::new(IdleSet::new(64));
        for i in 0..64 {
            set.put(i);
        }
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let set = set.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(i) = set.take(Ordering::Relaxed) {
                        got.push(i);
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<u32> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
    }
}
