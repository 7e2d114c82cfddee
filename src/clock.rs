//! The pool's one clock: coarse monotonic nanoseconds.
//!
//! Leak, idle and age accounting are measured in seconds, so the hot path reads the
//! cheapest monotonic clock the platform has, even if it only ticks every few
//! milliseconds. Waiting deadlines, which need precision, use `Instant` instead.
//!
//! | platform | clock | why |
//! |---|---|---|
//! | Linux, Android | `CLOCK_MONOTONIC_COARSE` | answered from the vDSO without a system call; one scheduler tick (1-4 ms) of resolution |
//! | FreeBSD, DragonFly | `CLOCK_MONOTONIC_FAST` | the same idea: the last tick's time, no hardware counter read |
//! | macOS, iOS | `clock_gettime_nsec_np(CLOCK_UPTIME_RAW_APPROX)` | the commpage's last-updated time, already in nanoseconds; does not advance while the machine sleeps, like the Linux clock |
//! | anything else | `Instant` since a process-wide epoch | portable; precise but not coarse, so each read costs what `Instant::now()` costs |
//!
//! Timestamps are stored in slot atomics as these nanoseconds; 0 means "not set", which
//! a running system never reads from this clock (the fallback starts at 1).

/// Nanoseconds on the coarse monotonic clock.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
#[inline]
pub(crate) fn now_nanos() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const COARSE: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(any(target_os = "freebsd", target_os = "dragonfly"))]
    const COARSE: libc::clockid_t = libc::CLOCK_MONOTONIC_FAST;

    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the
    // kernel supports (Linux since 2.6.32, FreeBSD since 7.0, DragonFly since 2.x);
    // clock_gettime writes only `ts`.
    let rc = unsafe { libc::clock_gettime(COARSE, &mut ts) };
    debug_assert_eq!(rc, 0, "the coarse monotonic clock is unsupported");
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Nanoseconds on the coarse monotonic clock.
#[cfg(target_vendor = "apple")]
#[inline]
pub(crate) fn now_nanos() -> u64 {
    // libc declares the clock id but not this function (macOS 10.12+, iOS 10+; Rust's
    // own minimum deployment targets are at least that).
    unsafe extern "C" {
        fn clock_gettime_nsec_np(clock_id: libc::clockid_t) -> u64;
    }
    // SAFETY: takes a clock id by value and touches no memory of ours; it returns 0 only
    // for an unknown clock id, and this one is a constant of the supported releases.
    let nanos = unsafe { clock_gettime_nsec_np(libc::CLOCK_UPTIME_RAW_APPROX) };
    debug_assert_ne!(nanos, 0, "CLOCK_UPTIME_RAW_APPROX is unsupported");
    nanos
}

/// Nanoseconds on a monotonic clock: the portable fallback.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_vendor = "apple"
)))]
#[inline]
pub(crate) fn now_nanos() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;

    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // +1: never 0, which means "not set" to the readers. u64 nanoseconds last 584 years.
    (epoch.elapsed().as_nanos() as u64).wrapping_add(1)
}

#[cfg(test)]
mod tests {
    use super::now_nanos;

    #[test]
    fn coarse_clock_is_monotonic_and_advances() {
        let a = now_nanos();
        assert!(a > 0);
        let mut last = a;
        for _ in 0..1_000 {
            let now = now_nanos();
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = now_nanos();
        assert!(b >= last);
        // A coarse tick is at most 10 ms even at HZ=100.
        assert!(b - a >= 20_000_000, "{} ns", b - a);
    }
}
