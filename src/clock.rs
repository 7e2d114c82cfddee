//! The pool's one clock: coarse monotonic nanoseconds.
//!
//! `CLOCK_MONOTONIC_COARSE` is answered from the vDSO without a system call and costs a
//! few nanoseconds, against ~40 ns for `Instant::now()` on the project's machines; its
//! resolution (one scheduler tick, 1-4 ms) is ample for leak and idle accounting, which
//! are measured in seconds. Waiting deadlines, which need precision, use `Instant`.
//!
//! Timestamps are stored in slot atomics as these nanoseconds; 0 means "not set", which
//! a running system never reads from this clock.

/// Nanoseconds on the coarse monotonic clock.
#[inline]
pub(crate) fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the
    // kernel supports since Linux 2.6.32; clock_gettime writes only `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0, "CLOCK_MONOTONIC_COARSE is unsupported");
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::now_nanos;

    #[test]
    fn coarse_clock_is_monotonic_and_advances() {
        let a = now_nanos();
        assert!(a > 0);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = now_nanos();
        assert!(b >= a);
        // A coarse tick is at most 10 ms even at HZ=100.
        assert!(b - a >= 20_000_000, "{} ns", b - a);
    }
}
