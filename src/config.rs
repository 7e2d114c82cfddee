//! [`EnhancedPoolConfig`]: the pool's eleven settings, the design guide's presets, and
//! validation.
//!
//! "The design guide" is the HeliosDB connection-pool leak-prevention quick start, whose
//! Rust API this crate implements; its eleven field names, presets and advice are kept.
//!
//! A config is plain data: build it, pass it to
//! [`EnhancedConnectionPool::try_new`](crate::EnhancedConnectionPool::try_new), which
//! calls [`EnhancedPoolConfig::validate`] and refuses contradictions before any memory is
//! allocated.

use std::time::Duration;

use crate::error::{Error, Result};

/// The largest `max_connections`: 13 421 772.
///
/// Slot indices travel in the low 24 bits of a connection id, and the slab holds a
/// quarter more slots than `max_connections` (the headroom for reclaimed leaks), so
/// `max_connections + max_connections / 4` must stay within 2^24 slots: 4/5 of 2^24,
/// rounded down (13 421 772 + 3 355 443 = 16 777 215 slots). Far beyond any real
/// deployment; [`EnhancedPoolConfig::validate`] refuses more.
pub const MAX_SLOTS: usize = (1 << 24) / 5 * 4;
// The slab at the limit (plus its quarter of headroom) fits 24-bit slot indices.
const _: () = assert!(MAX_SLOTS + MAX_SLOTS / 4 <= 1 << 24);

/// Settings of an [`EnhancedConnectionPool`](crate::EnhancedConnectionPool).
///
/// The field names and meanings are the design guide's. All durations are milliseconds.
/// A zero `idle_timeout_ms` or `max_connection_age_ms` disables that eviction. Intervals
/// and thresholds of an enabled feature must be non-zero.
///
/// The sweeper thread (started only when a background feature is enabled) wakes at the
/// smallest interval among the enabled features.
///
/// Start from [`default()`](Self::default) (safe for a new user) or a preset
/// ([`development`](Self::development), [`staging`](Self::staging),
/// [`production`](Self::production)) and change what you need, as the guide does:
///
/// ```
/// use heliosdb_pool::{EnhancedConnectionPool, EnhancedPoolConfig, Error};
///
/// // The guide's "Too many leak alerts" fix: a longer leak threshold.
/// let config = EnhancedPoolConfig {
///     leak_detection_threshold_ms: 60_000,
///     ..EnhancedPoolConfig::default()
/// };
/// assert_eq!(config.health_check_interval_ms, 60_000);
/// assert_eq!(config.idle_timeout_ms, 600_000);
/// assert!(!config.auto_cleanup_enabled, "reports only, until you trust the thresholds");
/// let pool = EnhancedConnectionPool::<String>::try_new(config).unwrap();
/// assert_eq!(pool.config().leak_detection_threshold_ms, 60_000);
///
/// // Contradictions are refused before anything is allocated, naming the field.
/// let zero = EnhancedPoolConfig { health_check_interval_ms: 0, ..EnhancedPoolConfig::production() };
/// let Err(Error::InvalidConfig { field, .. }) = EnhancedConnectionPool::<String>::try_new(zero) else {
///     panic!("a zero interval of an enabled feature is refused");
/// };
/// assert_eq!(field, "health_check_interval_ms");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnhancedPoolConfig {
    /// Capacity of the whole pool: the slab is allocated once with this many slots
    /// (plus a quarter of headroom for reclaimed leaks). 1 to [`MAX_SLOTS`]
    /// (13 421 772).
    pub max_connections: usize,
    /// Most connections one user may hold (idle plus borrowed).
    pub max_per_user: usize,
    /// How long `acquire` waits for a connection before it fails with
    /// [`Error::Timeout`]. Zero means do not wait.
    pub acquire_timeout_ms: u64,
    /// An idle connection unused this long is closed by the sweeper (0: never), if the
    /// pool can refill it: only with a connection factory or an `on_evict` hook (see
    /// [`PoolBuilder::on_evict`](crate::PoolBuilder::on_evict)); otherwise it stays.
    pub idle_timeout_ms: u64,
    /// A connection older than this is closed: by the sweeper when idle, on return when
    /// borrowed (0: never); as `idle_timeout_ms`, only with a factory or an `on_evict`
    /// hook, otherwise it is kept (and logged once).
    pub max_connection_age_ms: u64,
    /// Whether the sweeper health-checks idle connections.
    pub health_check_enabled: bool,
    /// An idle connection not checked for this long is checked on the next sweep.
    pub health_check_interval_ms: u64,
    /// Whether borrows held too long are reported as leaks.
    pub leak_detection_enabled: bool,
    /// A borrow held longer than this is reported as a leak (level Alert).
    pub leak_detection_threshold_ms: u64,
    /// Whether the sweeper reclaims the capacity of critically leaked borrows.
    pub auto_cleanup_enabled: bool,
    /// How often the sweeper runs idle/age eviction and reclaim.
    pub cleanup_interval_ms: u64,
}

impl EnhancedPoolConfig {
    /// The design guide's development preset: small, quick to report.
    pub fn development() -> Self {
        EnhancedPoolConfig {
            max_connections: 100,
            max_per_user: 10,
            acquire_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            max_connection_age_ms: 600_000,
            health_check_enabled: true,
            health_check_interval_ms: 30_000,
            leak_detection_enabled: true,
            leak_detection_threshold_ms: 10_000,
            auto_cleanup_enabled: true,
            cleanup_interval_ms: 30_000,
        }
    }

    /// The design guide's staging preset.
    pub fn staging() -> Self {
        EnhancedPoolConfig {
            max_connections: 1_000,
            max_per_user: 50,
            acquire_timeout_ms: 10_000,
            idle_timeout_ms: 180_000,
            max_connection_age_ms: 1_800_000,
            health_check_enabled: true,
            health_check_interval_ms: 60_000,
            leak_detection_enabled: true,
            leak_detection_threshold_ms: 15_000,
            auto_cleanup_enabled: true,
            cleanup_interval_ms: 60_000,
        }
    }

    /// The design guide's production preset: large, patient.
    pub fn production() -> Self {
        EnhancedPoolConfig {
            max_connections: 10_000,
            max_per_user: 100,
            acquire_timeout_ms: 30_000,
            idle_timeout_ms: 300_000,
            max_connection_age_ms: 3_600_000,
            health_check_enabled: true,
            health_check_interval_ms: 60_000,
            leak_detection_enabled: true,
            leak_detection_threshold_ms: 30_000,
            auto_cleanup_enabled: true,
            cleanup_interval_ms: 60_000,
        }
    }

    /// Checks every field and every relation between fields:
    ///
    /// - `max_connections` is 1 to [`MAX_SLOTS`] (13 421 772);
    /// - `max_per_user` is 1 to `max_connections`;
    /// - the interval or threshold of an enabled feature is non-zero (a disabled
    ///   feature's may be 0);
    /// - no duration exceeds [`MAX_DURATION_MS`] (one year).
    ///
    /// The relation between the leak thresholds (Critical after Alert) involves the
    /// builder's [`leak_critical_threshold`](crate::PoolBuilder::leak_critical_threshold)
    /// and is checked by [`PoolBuilder::build`](crate::PoolBuilder::build), whether or not
    /// leak detection is enabled.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first offending field and why.
    ///
    /// ```
    /// use heliosdb_pool::{EnhancedPoolConfig, Error};
    ///
    /// let config = EnhancedPoolConfig { max_per_user: 200, ..EnhancedPoolConfig::default() };
    /// match config.validate() {
    ///     Err(Error::InvalidConfig { field, reason }) => {
    ///         assert_eq!(field, "max_per_user");
    ///         assert_eq!(reason, "200 exceeds max_connections (100)");
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.max_connections == 0 {
            return Err(Error::invalid_config(
                "max_connections",
                "must be at least 1",
            ));
        }
        if self.max_connections > MAX_SLOTS {
            return Err(Error::invalid_config(
                "max_connections",
                format!(
                    "{} exceeds the maximum of {MAX_SLOTS}",
                    self.max_connections
                ),
            ));
        }
        if self.max_per_user == 0 {
            return Err(Error::invalid_config("max_per_user", "must be at least 1"));
        }
        if self.max_per_user > self.max_connections {
            return Err(Error::invalid_config(
                "max_per_user",
                format!(
                    "{} exceeds max_connections ({})",
                    self.max_per_user, self.max_connections
                ),
            ));
        }
        let enabled_intervals = [
            (
                self.health_check_enabled,
                "health_check_interval_ms",
                self.health_check_interval_ms,
                "health_check_enabled",
            ),
            (
                self.leak_detection_enabled,
                "leak_detection_threshold_ms",
                self.leak_detection_threshold_ms,
                "leak_detection_enabled",
            ),
            (
                self.auto_cleanup_enabled,
                "cleanup_interval_ms",
                self.cleanup_interval_ms,
                "auto_cleanup_enabled",
            ),
        ];
        for (enabled, field, value, switch) in enabled_intervals {
            if enabled && value == 0 {
                return Err(Error::invalid_config(
                    field,
                    format!("must be non-zero while {switch} is true"),
                ));
            }
        }
        // Durations are turned into nanoseconds on the pool's clock; refuse values whose
        // conversion would overflow rather than silently saturate.
        let durations = [
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_connection_age_ms", self.max_connection_age_ms),
            ("health_check_interval_ms", self.health_check_interval_ms),
            (
                "leak_detection_threshold_ms",
                self.leak_detection_threshold_ms,
            ),
            ("cleanup_interval_ms", self.cleanup_interval_ms),
        ];
        for (field, value) in durations {
            if value > MAX_DURATION_MS {
                return Err(Error::invalid_config(
                    field,
                    format!("{value} ms exceeds the limit of {MAX_DURATION_MS} ms (~1 year)"),
                ));
            }
        }
        Ok(())
    }

    /// `acquire_timeout_ms` as a [`Duration`].
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// Checks an explicitly set critical leak threshold against
    /// `leak_detection_threshold_ms`: Critical must come after Alert, and within
    /// [`MAX_DURATION_MS`]. Checked whether or not leak detection is enabled, so that
    /// turning it on later cannot make a stored configuration contradictory. `field` is
    /// the setting's name as the caller knows it (the builder's or the C config's).
    pub(crate) fn validate_leak_critical(
        &self,
        field: &'static str,
        critical: Duration,
    ) -> Result<()> {
        let alert = Duration::from_millis(self.leak_detection_threshold_ms);
        if critical <= alert {
            return Err(Error::invalid_config(
                field,
                format!("{critical:?} must exceed leak_detection_threshold_ms ({alert:?})"),
            ));
        }
        if critical > Duration::from_millis(MAX_DURATION_MS) {
            return Err(Error::invalid_config(
                field,
                format!("{critical:?} exceeds the limit of {MAX_DURATION_MS} ms (~1 year)"),
            ));
        }
        Ok(())
    }
}

/// Longest accepted duration: one year, far below where nanoseconds overflow `u64`.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3_600 * 1_000;

impl Default for EnhancedPoolConfig {
    /// Safe for a new user: the development preset's sizes and acquire timeout, the
    /// patient timings the design guide's troubleshooting section starts from (idle
    /// timeout 10 minutes, a health check per connection every minute), and leak
    /// detection on at a 30 s threshold, reporting only: `auto_cleanup_enabled` is off,
    /// as the guide advises ("run with auto_cleanup_enabled: false initially").
    ///
    /// | field | default |
    /// |---|---|
    /// | max_connections | 100 |
    /// | max_per_user | 10 |
    /// | acquire_timeout_ms | 5 000 |
    /// | idle_timeout_ms | 600 000 (10 min) |
    /// | max_connection_age_ms | 1 800 000 (30 min) |
    /// | health_check_enabled | true |
    /// | health_check_interval_ms | 60 000 (1 min) |
    /// | leak_detection_enabled | true |
    /// | leak_detection_threshold_ms | 30 000 |
    /// | auto_cleanup_enabled | false |
    /// | cleanup_interval_ms | 30 000 |
    fn default() -> Self {
        EnhancedPoolConfig {
            max_connections: 100,
            max_per_user: 10,
            acquire_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            max_connection_age_ms: 1_800_000,
            health_check_enabled: true,
            health_check_interval_ms: 60_000,
            leak_detection_enabled: true,
            leak_detection_threshold_ms: 30_000,
            auto_cleanup_enabled: false,
            cleanup_interval_ms: 30_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_default_are_valid() {
        for c in [
            EnhancedPoolConfig::default(),
            EnhancedPoolConfig::development(),
            EnhancedPoolConfig::staging(),
            EnhancedPoolConfig::production(),
        ] {
            c.validate().unwrap();
        }
    }

    fn field_of(c: EnhancedPoolConfig) -> &'static str {
        match c.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn contradictions_are_rejected_with_the_field() {
        let base = EnhancedPoolConfig::default;
        assert_eq!(
            field_of(EnhancedPoolConfig {
                max_connections: 0,
                ..base()
            }),
            "max_connections"
        );
        assert_eq!(
            field_of(EnhancedPoolConfig {
                max_connections: MAX_SLOTS + 1,
                max_per_user: 1,
                ..base()
            }),
            "max_connections"
        );
        assert_eq!(
            field_of(EnhancedPoolConfig {
                max_per_user: 0,
                ..base()
            }),
            "max_per_user"
        );
        assert_eq!(
            field_of(EnhancedPoolConfig {
                max_connections: 5,
                max_per_user: 6,
                ..base()
            }),
            "max_per_user"
        );
        assert_eq!(
            field_of(EnhancedPoolConfig {
                health_check_interval_ms: 0,
                ..base()
            }),
            "health_check_interval_ms"
        );
        assert_eq!(
            field_of(EnhancedPoolConfig {
                leak_detection_threshold_ms: 0,
                ..base()
            }),
            "leak_detection_threshold_ms"
        );
        assert_eq!(
            field_of(EnhancedPoolConfig {
                auto_cleanup_enabled: true,
                cleanup_interval_ms: 0,
                ..base()
            }),
            "cleanup_interval_ms"
        );
        assert_eq!(
            field_of(EnhancedPoolConfig {
                idle_timeout_ms: u64::MAX,
                ..base()
            }),
            "idle_timeout_ms"
        );
        // A zero interval of a disabled feature is fine.
        EnhancedPoolConfig {
            health_check_enabled: false,
            health_check_interval_ms: 0,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn default_has_the_guides_patient_timings() {
        let c = EnhancedPoolConfig::default();
        // "Performance impact from health checks: 300_000, // 5 minutes instead of 1".
        assert_eq!(c.health_check_interval_ms, 60_000);
        // "Connections cleaned up too aggressively: idle_timeout_ms: 600_000".
        assert_eq!(c.idle_timeout_ms, 600_000);
        // "Run with auto_cleanup_enabled: false initially".
        assert!(!c.auto_cleanup_enabled);
    }

    #[test]
    fn max_connections_limit_is_exact_and_stated() {
        assert_eq!(MAX_SLOTS, 13_421_772);
        let at = |max_connections| EnhancedPoolConfig {
            max_connections,
            max_per_user: 1,
            ..EnhancedPoolConfig::default()
        };
        at(MAX_SLOTS).validate().unwrap();
        match at(MAX_SLOTS + 1).validate() {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "max_connections");
                assert_eq!(reason, "13421773 exceeds the maximum of 13421772");
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn leak_critical_must_follow_alert_whether_or_not_detection_is_on() {
        for enabled in [true, false] {
            let c = EnhancedPoolConfig {
                leak_detection_enabled: enabled,
                leak_detection_threshold_ms: 1_000,
                ..EnhancedPoolConfig::default()
            };
            for bad in [Duration::from_millis(1_000), Duration::from_millis(10)] {
                match c.validate_leak_critical("leak_critical_threshold", bad) {
                    Err(Error::InvalidConfig { field, .. }) => {
                        assert_eq!(field, "leak_critical_threshold")
                    }
                    other => panic!("enabled={enabled}: expected InvalidConfig, got {other:?}"),
                }
                let built = crate::EnhancedConnectionPool::<u8>::builder(c.clone())
                    .leak_critical_threshold(bad)
                    .build();
                assert!(
                    matches!(
                        built,
                        Err(Error::InvalidConfig {
                            field: "leak_critical_threshold",
                            ..
                        })
                    ),
                    "enabled={enabled}: {built:?}"
                );
            }
            let too_long = Duration::from_millis(MAX_DURATION_MS + 1);
            assert!(c.validate_leak_critical("f", too_long).is_err());
            c.validate_leak_critical("f", Duration::from_millis(1_001))
                .unwrap();
        }
        // Without an explicit critical threshold, a disabled detector's zero threshold
        // (no relation to violate) is still accepted.
        let quiet = EnhancedPoolConfig {
            leak_detection_enabled: false,
            leak_detection_threshold_ms: 0,
            ..EnhancedPoolConfig::default()
        };
        crate::EnhancedConnectionPool::<u8>::builder(quiet)
            .build()
            .unwrap();
    }
}
