//! Asymmetric quiescence: many cheap "this thread is inside that object" marks, and one
//! expensive wait, by the object's owner, for every mark on it to clear.
//!
//! The C ABI needs this for `heliosdb_pool_free`, which may run while other threads
//! release leases that were out: a release that did not see the pool freed must finish
//! on the normal path before free counts the leases out and perhaps reclaims the
//! memory. That is a Dekker handshake (the release marks itself, then reads "freed";
//! free stores "freed", then waits for the marks), which needs a store-load barrier on
//! both sides: with a locked RMW on each side, every release paid two (to enter and to
//! leave a per-slot count), about a third of a C borrow's time on an Intel host.
//!
//! Here the release's side of the barrier is free and the whole price moves to free
//! (folly's `asymmetricLightBarrier`/`asymmetricHeavyBarrier`, userspace RCU):
//!
//! - each thread owns a [`Mark`], a cache line of its own, found through a thread-local;
//!   entering is a plain store of the object's address, then the *light* barrier, which
//!   on Linux is only a compiler fence; leaving is a plain (Release) store of null;
//! - the owner's *heavy* barrier is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: the
//!   kernel makes every running thread of the process execute a full memory barrier
//!   (threads not running have one at their context switch). So for each marking
//!   thread, a full barrier falls somewhere relative to its store and load: before the
//!   store (its load then sees the owner's flag, stored before the syscall), or after
//!   it (the owner's scan, after the syscall, sees the mark). One of the two sees the
//!   other, exactly as with two SeqCst fences.
//!
//! Where `membarrier` is missing (another OS, a kernel before 4.14, a sandbox that
//! refuses it, Miri) both barriers are SeqCst fences: still one barrier per release
//! instead of two locked RMWs (LLVM emits a SeqCst fence on x86-64 as a `lock or` to the
//! stack). The mode is chosen once, by [`init`], before the first object that uses
//! marks exists, and never changes. Under loom both barriers are SeqCst fences too,
//! which is what the model checks (`loom_models`): the protocol, given that the heavy
//! barrier does what the kernel documents.
//!
//! A thread holds one mark at a time: a mark taken while the thread is already inside
//! another object (a release from a pool's callback) is refused, and the caller uses a
//! slower mechanism of its own. Marks are never freed: a thread's goes back to the
//! registry when the thread exits, for the next new thread; there are at most as many
//! as threads ever ran at once. A thread that exits with its mark still set (it left a
//! release by `longjmp` or `pthread_exit` from a callback) keeps it forever, as do the
//! threads that a forked child does not have: a free of the object they were inside
//! then waits forever, as it did with the per-slot counts before. `membarrier`'s
//! registration is inherited by a forked child, and reset by `exec` with the rest of the
//! process.

use std::ptr;

use crate::sync::{AtomicPtr, AtomicU32, Ordering};

/// One thread's mark: the object it is inside, or null. Aligned to its own pair of
/// cache lines: its owner writes it on every release, and no other thread's writes
/// should share them.
#[repr(align(128))]
pub(crate) struct Mark {
    inside: AtomicPtr<()>,
    /// 1 while a thread owns this mark (see `registry::take`).
    taken: AtomicU32,
    /// The next mark of the registry; set before the mark is published, then fixed.
    next: *const Mark,
}

// SAFETY: `next` is written only before the mark is published (the push may rewrite it
// until its Release CAS links the mark in) and only read afterwards; every other field
// is atomic.
unsafe impl Sync for Mark {}
// SAFETY: as above; a mark holds no thread-bound state.
unsafe impl Send for Mark {}

impl Mark {
    /// A mark owned by nobody and inside nothing (the loom models build their own).
    pub(crate) fn new() -> Self {
        Mark {
            inside: AtomicPtr::new(ptr::null_mut()),
            taken: AtomicU32::new(0),
            next: ptr::null(),
        }
    }

    /// Marks the owning thread inside `object`, then the light barrier: a load of the
    /// owner's flag after this sees a flag stored before the owner's heavy barrier, or
    /// the owner's scan sees this mark. Only the mark's owner calls this, with the mark
    /// clear (see [`is_clear`](Self::is_clear)).
    #[inline(always)]
    pub(crate) fn enter(&self, object: *const ()) {
        // Release, not for the handshake (the barrier after it orders the store before
        // the caller's next load) but for the owner of the object this thread was in
        // before: a scan that reads this value instead of the `leave` before it must
        // still see everything that thread did inside (a plain `mov` on x86).
        self.inside.store(object.cast_mut(), Ordering::Release);
        light_barrier();
    }

    /// The owning thread has left the object. Release: the owner that then sees the mark
    /// clear sees every access the thread made inside.
    #[inline(always)]
    pub(crate) fn leave(&self) {
        self.inside.store(ptr::null_mut(), Ordering::Release);
    }

    /// Whether the owning thread is inside nothing now; read by the owning thread.
    #[inline(always)]
    pub(crate) fn is_clear(&self) -> bool {
        self.inside.load(Ordering::Relaxed).is_null()
    }

    /// Waits while this mark says its thread is inside `object`. Acquire: pairs with
    /// [`leave`](Self::leave).
    fn wait_until_outside(&self, object: *const ()) {
        #[cfg(not(loom))]
        let backoff = crossbeam_utils::Backoff::new();
        while ptr::eq(self.inside.load(Ordering::Acquire), object) {
            #[cfg(not(loom))]
            backoff.snooze();
            #[cfg(loom)]
            loom::thread::yield_now();
        }
    }
}

/// Waits until no thread is inside `object` but the caller: the object's owner calls
/// this after it has stored the flag that marking threads read after entering. The
/// heavy barrier comes first, then `marks` is called for the marks to scan: after the
/// barrier, so that a mark made meanwhile (a thread's first) is in the list, or its
/// thread sees the flag. `own` is the caller's mark, skipped: a thread inside the
/// object cannot wait for itself. Marks set later belong to threads that see the flag.
pub(crate) fn wait_until_outside<'m, I: IntoIterator<Item = &'m Mark>>(
    object: *const (),
    marks: impl FnOnce() -> I,
    own: Option<&Mark>,
) {
    heavy_barrier();
    for mark in marks() {
        if !own.is_some_and(|own| ptr::eq(own, mark)) {
            mark.wait_until_outside(object);
        }
    }
}

/// The marking thread's barrier: a compiler fence where the heavy barrier is
/// `membarrier`, a SeqCst fence otherwise.
#[inline(always)]
fn light_barrier() {
    #[cfg(not(loom))]
    if asymmetric() {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The owner's barrier: see the module documentation.
fn heavy_barrier() {
    // The mode was chosen before the object existed; `init` makes that explicit here
    // (a completed `Once` is an Acquire load), so a `false` is never stale: a stale
    // `false` would pair a fence with releases that made only a compiler fence.
    #[cfg(not(loom))]
    init();
    #[cfg(not(loom))]
    if asymmetric() {
        membarrier::private_expedited();
    } else {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

#[cfg(not(loom))]
pub(crate) use registry::{init, own_mark, thread_mark, thread_marks};

#[cfg(not(loom))]
use registry::asymmetric;

/// The process-wide list of marks, the thread-local that finds the caller's, and the
/// barrier mode.
#[cfg(not(loom))]
mod registry {
    use std::cell::Cell;
    use std::ptr;
    use std::sync::Once;
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    use super::{Mark, membarrier};

    /// The newest mark; each links to the one before. Marks are only ever added.
    static HEAD: AtomicPtr<Mark> = AtomicPtr::new(ptr::null_mut());

    /// Whether the heavy barrier is `membarrier` (and the light one a compiler fence).
    static ASYMMETRIC: AtomicBool = AtomicBool::new(false);
    static INIT: Once = Once::new();

    /// Chooses the barriers, once per process: call before creating anything whose
    /// users take marks. Registers the process for `membarrier`'s private expedited
    /// command where the kernel has it.
    pub(crate) fn init() {
        INIT.call_once(|| ASYMMETRIC.store(membarrier::register(), Ordering::Relaxed));
    }

    /// Whether `init` chose `membarrier`. Relaxed: `init` happened before the object
    /// whose use reads this was created, and the mode never changes afterwards.
    #[inline(always)]
    pub(super) fn asymmetric() -> bool {
        ASYMMETRIC.load(Ordering::Relaxed)
    }

    thread_local! {
        /// The calling thread's mark, once it has one.
        static MINE: Cell<*const Mark> = const { Cell::new(ptr::null()) };
        /// Gives the thread's mark back when the thread exits.
        static OWNER: Owner = const { Owner };
    }

    /// Dropped at thread exit: the thread's mark goes back to the registry.
    struct Owner;

    impl Drop for Owner {
        fn drop(&mut self) {
            let mark = MINE.replace(ptr::null());
            if mark.is_null() {
                return;
            }
            // SAFETY: marks are never freed.
            let mark = unsafe { &*mark };
            // A thread that exits inside an object (it left a release by `longjmp` or
            // `pthread_exit`) keeps its mark taken: given to another thread, it would
            // send all of that thread's releases down the nested path.
            if mark.is_clear() {
                // Release: the next owner's Acquire CAS sees this thread's last leave.
                mark.taken.store(0, Ordering::Release);
            }
        }
    }

    /// The calling thread's mark if it has taken one; never takes one (the owner's
    /// skip in `wait_until_outside` needs no mark of its own).
    pub(crate) fn own_mark() -> Option<&'static Mark> {
        // SAFETY: marks are never freed; a non-null one is this thread's.
        unsafe { MINE.get().as_ref() }
    }

    /// The calling thread's mark, taken from the registry on its first call (the only
    /// call that may allocate); `None` while the thread's thread-locals are being
    /// destroyed.
    #[inline(always)]
    pub(crate) fn thread_mark() -> Option<&'static Mark> {
        let mark = MINE.get();
        if mark.is_null() {
            return take_for_this_thread();
        }
        // SAFETY: marks are never freed, and this one is this thread's.
        Some(unsafe { &*mark })
    }

    #[cold]
    #[inline(never)]
    fn take_for_this_thread() -> Option<&'static Mark> {
        // Registers the exit hook first: without it, the mark would never go back.
        OWNER.try_with(|_| ()).ok()?;
        let mark = take();
        MINE.set(mark);
        Some(mark)
    }

    /// A mark owned by nobody, now the caller's: a free one if there is one, else a new
    /// one, leaked into the list.
    fn take() -> &'static Mark {
        for mark in thread_marks() {
            // Acquire: pairs with the Release that gave it back.
            if mark
                .taken
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return mark;
            }
        }
        let mut fresh = Box::new(Mark::new());
        *fresh.taken.get_mut() = 1;
        let fresh: &'static mut Mark = Box::leak(fresh);
        let mut head = HEAD.load(Ordering::Acquire);
        loop {
            fresh.next = head;
            // Release: a scan that finds the mark sees its `next`.
            match HEAD.compare_exchange_weak(head, fresh, Ordering::Release, Ordering::Acquire) {
                Ok(_) => return fresh,
                Err(now) => head = now,
            }
        }
    }

    /// Every mark ever made, newest first.
    pub(crate) fn thread_marks() -> impl Iterator<Item = &'static Mark> {
        // Acquire: pairs with the Release that linked the newest mark in.
        let mut next = HEAD.load(Ordering::Acquire).cast_const();
        std::iter::from_fn(move || {
            // SAFETY: marks are never freed; `next` was fixed before each was linked.
            let mark = unsafe { next.as_ref() }?;
            next = mark.next;
            Some(mark)
        })
    }
}

/// `membarrier(2)` where Linux has it; elsewhere `register` says no.
#[cfg(not(loom))]
mod membarrier {
    #[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
    mod imp {
        // The kernel's ABI values (`linux/membarrier.h`).
        const GLOBAL: libc::c_long = 1;
        const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
        const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

        fn call(command: libc::c_long) -> libc::c_long {
            let (flags, cpu_id): (libc::c_long, libc::c_long) = (0, 0);
            // SAFETY: membarrier takes integers only (command, flags, cpu id) and
            // touches no memory of ours.
            unsafe { libc::syscall(libc::SYS_membarrier, command, flags, cpu_id) }
        }

        /// Registers the process for the private expedited command; whether it may
        /// be used. With several threads running already, the kernel may take an RCU
        /// grace period (milliseconds) to answer.
        pub(crate) fn register() -> bool {
            call(REGISTER_PRIVATE_EXPEDITED) == 0
        }

        /// Makes every running thread of the process execute a full memory barrier.
        pub(crate) fn private_expedited() {
            // After a successful registration (inherited by a forked child, reset by
            // exec with the rest of the process) the kernel's only error is "not
            // registered". Should it come anyway, the global command (no registration,
            // Linux 4.3+, milliseconds: it waits for every CPU to pass a quiescent
            // state) gives the same guarantee.
            if call(PRIVATE_EXPEDITED) == 0 || call(GLOBAL) == 0 {
                return;
            }
            // A barrier that did not happen would make the light side's compiler fences
            // unsound: there is no safe way on.
            eprintln!(
                "heliosdb-pool: membarrier failed after registration: {}",
                std::io::Error::last_os_error()
            );
            std::process::abort();
        }
    }

    #[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
    mod imp {
        /// No `membarrier` here: both sides use fences.
        pub(crate) fn register() -> bool {
            false
        }

        /// Never called: `register` said no.
        pub(crate) fn private_expedited() {
            unreachable!("membarrier is never chosen here");
        }
    }

    pub(super) use imp::{private_expedited, register};
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Objects to be inside of: distinct addresses, one per use below, so that tests
    /// running at once never wait for each other.
    static OBJECTS: [u64; 4] = [0; 4];

    fn object(n: &u64) -> *const () {
        ptr::from_ref(n).cast()
    }

    /// Runs `f` on another thread; fails (rather than hangs) if it has not returned
    /// within a few seconds.
    fn returns(what: &str, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "{what}: still waiting"
        );
    }

    #[test]
    fn a_thread_keeps_its_mark_and_an_exited_threads_mark_is_reused() {
        init();
        let mine = thread_mark().expect("a mark");
        assert!(ptr::eq(mine, thread_mark().unwrap()), "one mark per thread");
        assert!(ptr::eq(mine, own_mark().unwrap()), "own_mark finds it");
        let theirs = std::thread::spawn(|| {
            assert!(own_mark().is_none(), "own_mark takes none");
            thread_mark().unwrap() as *const Mark as usize
        })
        .join()
        .unwrap();
        assert_ne!(theirs, mine as *const Mark as usize);
        // Eight threads one after the other: each gives its mark back at exit, so the
        // next takes it instead of making one. (Other tests' threads may take marks
        // meanwhile; eight more marks would mean none was reused.)
        let before = thread_marks().count();
        for _ in 0..8 {
            std::thread::spawn(|| thread_mark().map(drop))
                .join()
                .unwrap();
        }
        let grown = thread_marks().count() - before;
        assert!(
            grown < 8,
            "threads run one at a time must reuse marks: {grown} new"
        );
    }

    #[test]
    fn a_thread_that_exits_inside_an_object_keeps_its_mark() {
        init();
        let kept = std::thread::spawn(|| {
            let mark = thread_mark().unwrap();
            mark.enter(object(&OBJECTS[0]));
            mark as *const Mark as usize
        })
        .join()
        .unwrap();
        // SAFETY: marks are never freed.
        let kept = unsafe { &*(kept as *const Mark) };
        assert_eq!(kept.taken.load(Ordering::Relaxed), 1, "not given back");
        assert!(!kept.is_clear());
        kept.leave(); // so that no later scan of `OBJECTS[0]` waits (the test's tidy-up)
    }

    #[test]
    fn the_owner_waits_for_a_thread_inside_and_not_for_other_objects() {
        init();
        let (a_addr, b_addr) = (object(&OBJECTS[1]) as usize, object(&OBJECTS[3]) as usize);
        let entered = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (entered, go, done) = (entered.clone(), go.clone(), done.clone());
            std::thread::spawn(move || {
                let mark = thread_mark().unwrap();
                mark.enter(a_addr as *const ());
                entered.store(true, Ordering::Release);
                while !go.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                // Long enough that an owner not waiting would return first.
                std::thread::sleep(Duration::from_millis(50));
                done.store(true, Ordering::Relaxed);
                mark.leave();
            })
        };
        while !entered.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        returns("the owner of another object", move || {
            wait_until_outside(b_addr as *const (), thread_marks, own_mark());
        });
        go.store(true, Ordering::Release);
        wait_until_outside(a_addr as *const (), thread_marks, own_mark());
        assert!(
            done.load(Ordering::Relaxed),
            "returned while the thread was inside"
        );
        thread.join().unwrap();
    }

    #[test]
    fn the_owners_own_mark_is_skipped() {
        init();
        returns("an owner inside its own object", || {
            let a = object(&OBJECTS[2]);
            let mine = thread_mark().unwrap();
            mine.enter(a);
            wait_until_outside(a, thread_marks, Some(mine));
            mine.leave();
            assert!(mine.is_clear());
        });
    }
}
