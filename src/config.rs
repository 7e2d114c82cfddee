//! [`EnhancedPoolConfig`]: the pool's eleven settings, the seed guide's presets, and
//! validation.
//!
//! A config is plain data: build it, pass it to
//! [`EnhancedConnectionPool::try_new`](crate::EnhancedConnectionPool::try_new), which
//! calls [`EnhancedPoolConfig::validate`] and refuses contradictions before any memory is
//! allocated.

use std::time::Duration;

use crate::error::{Error, Result};

/// The largest `max_connections`: slot indices travel in 24 bits of a connection id,
/// and the slab holds a quarter more slots than `max_connections` (the headroom for
/// reclaimed leaks), so at most 4/5 of 2^24. Far beyond any real deployment.
pub const MAX_SLOTS: usize = (1 << 24) / 5 * 4;

/// Settings of an [`EnhancedConnectionPool`](crate::EnhancedConnectionPool).
///
/// The field names and meanings are the design guide's. All durations are milliseconds.
/// A zero `idle_timeout_ms` or `max_connection_age_ms` disables that eviction. Intervals
/// and thresholds of an enabled feature must be non-zero.
///
/// The sweeper thread (started only when a background feature is enabled) wakes at the
/// smallest interval among the enabled features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnhancedPoolConfig {
    /// Capacity of the whole pool: the slab is allocated once with this many slots.
    pub max_connections: usize,
    /// Most connections one user may hold (idle plus borrowed).
    pub max_per_user: usize,
    /// How long `acquire` waits for a connection before it fails with
    /// [`Error::Timeout`]. Zero means do not wait.
    pub acquire_timeout_ms: u64,
    /// An idle connection unused this long is closed by the sweeper (0: never).
    pub idle_timeout_ms: u64,
    /// A connection older than this is closed: by the sweeper when idle, on return when
    /// borrowed (0: never).
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

    /// Checks every field and every relation between fields.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first offending field and why.
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
                format!("{} exceeds the limit of {MAX_SLOTS}", self.max_connections),
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
}

/// Longest accepted duration: one year, far below where nanoseconds overflow `u64`.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3_600 * 1_000;

impl Default for EnhancedPoolConfig {
    /// Safe for a new user: the development preset's sizes and timeouts, with leak
    /// detection on at a 30 s threshold (reports only) and `auto_cleanup_enabled` off, as
    /// the design guide advises ("run with auto_cleanup_enabled: false initially").
    ///
    /// | field | default |
    /// |---|---|
    /// | max_connections | 100 |
    /// | max_per_user | 10 |
    /// | acquire_timeout_ms | 5 000 |
    /// | idle_timeout_ms | 600 000 (10 min) |
    /// | max_connection_age_ms | 1 800 000 (30 min) |
    /// | health_check_enabled | true |
    /// | health_check_interval_ms | 30 000 |
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
            health_check_interval_ms: 30_000,
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
}
