//! The paths that rest on `unsafe` code, small enough to run under Miri (`.ci/run` runs
//! this file with several seeds): the guard's exclusive access, raw handles, C call
//! sites read back by `borrows()`, and the C ABI's lifecycle, including
//! `heliosdb_pool_free` with a lease out, released from another thread while (or after)
//! the pool is freed. Also part of `cargo test`.

use std::ffi::{CStr, c_void};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;

use ::heliosdb_pool::ffi::*;
use ::heliosdb_pool::{
    CSite, CallSite, ConnectionMetadata, EnhancedConnectionPool, Error, RawHandle, Status,
};

#[path = "support/common.rs"]
mod common;
use common::quiet;

#[test]
fn guards_raw_handles_and_c_call_sites() {
    let pool = EnhancedConnectionPool::new(quiet(4, 2));
    pool.add_connection_sync(vec![1u8], "alice", ConnectionMetadata::for_user("alice"))
        .unwrap();
    pool.add_connection_sync(vec![2u8], "alice", ConnectionMetadata::for_user("alice"))
        .unwrap();
    {
        let mut a = pool.try_acquire("alice").unwrap();
        let mut b = pool.try_acquire("alice").unwrap();
        a.push(10);
        b.push(20);
        assert_ne!(a[0], b[0], "two borrows, two connections");
    }
    const SITE: CSite = CSite::from_static(c"service.c", 7, Some(c"handler"));
    let guard = pool.try_acquire_at("alice", CallSite::C(SITE)).unwrap();
    let borrows = pool.borrows();
    assert_eq!(borrows.len(), 1);
    assert_eq!(borrows[0].call_site.map(|s| s.line()), Some(7));
    let raw = guard.into_raw_handle();
    // SAFETY: this thread holds the borrow `raw` names.
    let len = unsafe { pool.with_raw_handle(raw, |c| c.len()) }.unwrap();
    assert_eq!(len, 2);
    pool.release_raw_handle(raw).unwrap();
    assert!(matches!(
        pool.release_raw_handle(raw),
        Err(Error::StaleHandle { .. })
    ));
    let forged = RawHandle::from_parts(raw.connection_id(), raw.generation() + 7);
    // SAFETY: the closure never runs for a handle that is not the current borrow.
    assert!(unsafe { pool.with_raw_handle(forged, |_| ()) }.is_err());
    let kept = pool.try_acquire("alice").unwrap().detach().unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(pool.stats().total_connections, 1);
}

/// A C pool with no background feature, closing through `close` and freeing its user
/// data through `free`.
fn c_pool(
    close: unsafe extern "C" fn(*mut c_void, *mut c_void),
    free: unsafe extern "C" fn(*mut c_void),
) -> *mut heliosdb_pool {
    let mut config = MaybeUninit::<heliosdb_pool_config>::uninit();
    let mut pool: *mut heliosdb_pool = std::ptr::null_mut();
    // SAFETY: valid pointers for each call; the config is initialised before use.
    unsafe {
        let size = size_of::<heliosdb_pool_config>();
        assert_eq!(
            heliosdb_pool_config_init(config.as_mut_ptr(), size),
            Status::Ok
        );
        let config = config.assume_init_mut();
        config.leak_detection_enabled = false;
        config.idle_timeout_ms = 0;
        config.max_connection_age_ms = 0;
        config.health_check_enabled = false;
        config.close = Some(close);
        config.user_data_free = Some(free);
        assert_eq!(heliosdb_pool_new(config, &mut pool), Status::Ok);
    }
    pool
}

static CLOSES: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn close_box(connection: *mut c_void, _user_data: *mut c_void) {
    // SAFETY: every connection below is a `Box<u64>` handed over with `into_raw`, and the
    // pool closes each exactly once.
    drop(unsafe { Box::from_raw(connection.cast::<u64>()) });
    CLOSES.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn free_user_data(_user_data: *mut c_void) {
    FREES.fetch_add(1, Ordering::SeqCst);
}

/// A raw pool pointer and a lease, which may cross threads (the C contract allows it).
struct Shared(*mut heliosdb_pool, heliosdb_lease);
// SAFETY: the C ABI's pools may be used from any thread.
unsafe impl Send for Shared {}

#[test]
fn free_with_a_lease_out_released_from_another_thread() {
    let rounds = if cfg!(miri) { 3 } else { 200 };
    for round in 0..rounds {
        CLOSES.store(0, Ordering::SeqCst);
        FREES.store(0, Ordering::SeqCst);
        let pool = c_pool(close_box, free_user_data);
        let mut lease = MaybeUninit::<heliosdb_lease>::uninit();
        // SAFETY: every pointer below is valid for the call; strings are literals.
        unsafe {
            for i in 0..2u64 {
                let conn = Box::into_raw(Box::new(i)).cast::<c_void>();
                let status = heliosdb_pool_add_connection(
                    pool,
                    conn,
                    c"alice".as_ptr(),
                    std::ptr::null(),
                    std::ptr::null_mut(),
                );
                assert_eq!(status, Status::Ok);
            }
            let status = heliosdb_pool_acquire_at(
                pool,
                c"alice".as_ptr(),
                0,
                lease.as_mut_ptr(),
                c"caller.c".as_ptr(),
                12,
                c"work".as_ptr(),
            );
            assert_eq!(
                status,
                Status::Ok,
                "{:?}",
                CStr::from_ptr(heliosdb_last_error_message())
            );
        }
        // SAFETY: written by the successful acquire.
        let lease = unsafe { lease.assume_init() };
        // SAFETY: the lease is out and released once; the pool stays valid until its
        // last owner (this lease or free) leaves.
        let releaser = unsafe { release_elsewhere(Shared(pool, lease)) };
        if round % 2 == 0 {
            std::thread::yield_now();
        }
        // SAFETY: live, freed once; only the release above runs concurrently.
        unsafe { heliosdb_pool_free(pool) };
        assert_eq!(releaser.join().unwrap(), Status::Ok);
        assert_eq!(
            CLOSES.load(Ordering::SeqCst),
            2,
            "each connection closed once"
        );
        assert_eq!(FREES.load(Ordering::SeqCst), 1, "the pool reclaimed once");
    }
}

// ---- Two releases of one slot in flight at once, while the pool is freed ----

/// Connection values whose `close` blocks until the test opens its gate: 1 and 2 (and
/// 3, for the nested release below).
static GATE_OPEN: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];
static IN_CLOSE: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];
static GATED_FREES: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn gated_close(connection: *mut c_void, _user_data: *mut c_void) {
    // SAFETY: the connections below are `Box<u64>` handed over with `into_raw`.
    let which = unsafe { *connection.cast::<u64>() } as usize;
    IN_CLOSE[which].store(true, Ordering::SeqCst);
    while !GATE_OPEN[which].load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // SAFETY: as above; closed exactly once.
    drop(unsafe { Box::from_raw(connection.cast::<u64>()) });
}

unsafe extern "C" fn gated_free(_user_data: *mut c_void) {
    GATED_FREES.fetch_add(1, Ordering::SeqCst);
}

fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
}

/// One connection of `value` in `pool`, borrowed and marked to close on return.
///
/// # Safety
///
/// `pool` is live.
unsafe fn borrowed_closing(pool: *mut heliosdb_pool, value: u64) -> Shared {
    let mut id = 0u64;
    let conn = Box::into_raw(Box::new(value)).cast::<c_void>();
    let mut lease = MaybeUninit::<heliosdb_lease>::uninit();
    let mut deferred = false;
    // SAFETY: valid pointers for each call, per the caller's contract on `pool`.
    unsafe {
        let user = c"alice".as_ptr();
        let added = heliosdb_pool_add_connection(pool, conn, user, std::ptr::null(), &mut id);
        assert_eq!(added, Status::Ok);
        let taken = heliosdb_pool_try_acquire(pool, user, lease.as_mut_ptr());
        assert_eq!(taken, Status::Ok);
        assert_eq!(
            heliosdb_pool_remove_connection(pool, id, &mut deferred),
            Status::Ok
        );
        assert!(deferred, "borrowed: closes on return");
        Shared(pool, lease.assume_init())
    }
}

/// Releases `shared`'s lease on another thread; the handle returns the status.
///
/// # Safety
///
/// The lease is out and released once, and its pool is live or being freed with it out
/// (which keeps the pool's memory alive).
unsafe fn release_elsewhere(shared: Shared) -> std::thread::JoinHandle<Status> {
    std::thread::spawn(move || {
        let shared = shared;
        // SAFETY: the caller's contract.
        unsafe { heliosdb_pool_release(shared.0, &shared.1) }
    })
}

/// Frees `pool` on another thread; the receiver hears when the free has returned.
///
/// # Safety
///
/// `pool` is live and freed once, with no other call on it running but releases.
unsafe fn free_elsewhere(pool: *mut heliosdb_pool) -> (std::thread::JoinHandle<()>, Receiver<()>) {
    // SAFETY: `heliosdb_lease` is plain data (integers and a pointer), valid all-zero;
    // this one is never read.
    let freeing = Shared(pool, unsafe { std::mem::zeroed() });
    let (tx, rx) = std::sync::mpsc::channel();
    let free = std::thread::spawn(move || {
        let freeing = freeing;
        // SAFETY: the caller's contract.
        unsafe { heliosdb_pool_free(freeing.0) };
        tx.send(()).unwrap();
    });
    (free, rx)
}

/// A release is still inside the pool: the free begun by `free_elsewhere` must not
/// have returned after a pause.
fn assert_still_freeing(returned: &Receiver<()>) {
    let pause = std::time::Duration::from_millis(if cfg!(miri) { 5 } else { 100 });
    assert!(
        returned.recv_timeout(pause).is_err(),
        "free returned with a release inside"
    );
}

/// A release whose borrow closes runs its `close` callback after the slot is free
/// again; the slot is refilled, borrowed and released (closing too) by another thread;
/// then the pool is freed. Free must wait for both releases, not just the first to
/// leave (the in-flight mark is a count).
#[test]
fn free_waits_for_every_release_in_flight_on_one_slot() {
    // SAFETY: every pointer below is valid for its call; the leases are released once.
    unsafe {
        let pool = c_pool(gated_close, gated_free);
        let first = release_elsewhere(borrowed_closing(pool, 1));
        wait_for(&IN_CLOSE[1]); // its slot is free again, its release still inside
        let second = release_elsewhere(borrowed_closing(pool, 2));
        wait_for(&IN_CLOSE[2]);
        let (free, returned) = free_elsewhere(pool);
        GATE_OPEN[1].store(true, Ordering::SeqCst);
        assert_eq!(first.join().unwrap(), Status::Ok);
        // The second release is still in its close callback: free must not return.
        assert_still_freeing(&returned);
        assert_eq!(GATED_FREES.load(Ordering::SeqCst), 0);
        GATE_OPEN[2].store(true, Ordering::SeqCst);
        assert_eq!(second.join().unwrap(), Status::Ok);
        free.join().unwrap();
        assert_eq!(
            GATED_FREES.load(Ordering::SeqCst),
            1,
            "reclaimed once, at the end"
        );
    }
}

// ---- A release made from another pool's callback, while its pool is freed ----

/// The lease the outer pool's `close` releases, and what that release returned.
static NESTED_LEASE: std::sync::Mutex<Option<Shared>> = std::sync::Mutex::new(None);
static NESTED_STATUS: std::sync::Mutex<Option<Status>> = std::sync::Mutex::new(None);
static NESTED_FREES: AtomicUsize = AtomicUsize::new(0);

/// The outer pool's `close`: closes its connection, then releases the inner pool's
/// lease from inside the outer release (whose thread is marked inside the outer pool).
unsafe extern "C" fn close_then_release_inner(connection: *mut c_void, _user_data: *mut c_void) {
    // SAFETY: a `Box<u64>` handed over with `into_raw`, closed once.
    drop(unsafe { Box::from_raw(connection.cast::<u64>()) });
    if let Some(inner) = NESTED_LEASE.lock().unwrap().take() {
        // SAFETY: the inner pool is live or being freed with this lease out.
        let status = unsafe { heliosdb_pool_release(inner.0, &inner.1) };
        *NESTED_STATUS.lock().unwrap() = Some(status);
    }
}

unsafe extern "C" fn count_nested_free(_user_data: *mut c_void) {
    NESTED_FREES.fetch_add(1, Ordering::SeqCst);
}

/// A release of the inner pool runs from the outer pool's `close` callback, so its
/// thread is already marked inside the outer pool; it must still hold off the inner
/// pool's free until it is done (it marks its slot instead): free must not return while
/// the inner release is in its own `close`.
#[test]
fn free_waits_for_a_release_made_from_another_pools_callback() {
    // SAFETY: every pointer below is valid for its call; each lease is ended once.
    unsafe {
        let outer = c_pool(close_then_release_inner, count_nested_free);
        let inner = c_pool(gated_close, count_nested_free);
        *NESTED_LEASE.lock().unwrap() = Some(borrowed_closing(inner, 3));
        let releasing = release_elsewhere(borrowed_closing(outer, 0));
        wait_for(&IN_CLOSE[3]); // the inner release is inside the inner pool's close
        let (free, returned) = free_elsewhere(inner);
        assert_still_freeing(&returned);
        assert_eq!(NESTED_FREES.load(Ordering::SeqCst), 0);
        GATE_OPEN[3].store(true, Ordering::SeqCst);
        assert_eq!(releasing.join().unwrap(), Status::Ok);
        assert_eq!(*NESTED_STATUS.lock().unwrap(), Some(Status::Ok));
        free.join().unwrap();
        assert_eq!(
            NESTED_FREES.load(Ordering::SeqCst),
            1,
            "the inner pool, reclaimed once"
        );
        heliosdb_pool_free(outer);
        assert_eq!(NESTED_FREES.load(Ordering::SeqCst), 2);
    }
}
