//! [`PoolLeakDetector`]: the pool's leak view, `pool.leak_detector` in the design guide.
//!
//! It answers from the slab, with the same [`LeakReport`], [`LeakThresholds`] and
//! [`LeakStats`] as the standalone [`LeakDetector`](crate::LeakDetector): one mechanism,
//! two views.

use std::fmt;
use std::sync::Arc;

use crate::leak::{LeakReport, LeakThresholds, LeakView, ResourceId};
use crate::metadata::ConnectionId;
use crate::metrics::LeakStats;
use crate::pool::PoolInner;

/// What the view needs from a pool, with the connection type erased.
trait LeakSource: Send + Sync {
    fn check_leaks(&self) -> Vec<LeakReport>;
    fn stats(&self) -> LeakStats;
    fn thresholds(&self) -> LeakThresholds;
    fn is_leaked(&self, id: ConnectionId) -> bool;
}

impl<C: Send + 'static> LeakSource for PoolInner<C> {
    fn check_leaks(&self) -> Vec<LeakReport> {
        self.current_leaks()
    }
    fn stats(&self) -> LeakStats {
        let held = self.borrows_held();
        self.leak_stats(held)
    }
    fn thresholds(&self) -> LeakThresholds {
        self.tuning.leak_thresholds
    }
    fn is_leaked(&self, id: ConnectionId) -> bool {
        PoolInner::is_leaked(self, id)
    }
}

/// The pool's leak view. Cheap to call from any thread; holds the pool's shared state
/// alive while it exists.
#[derive(Clone)]
pub struct PoolLeakDetector {
    source: Arc<dyn LeakSource>,
}

impl PoolLeakDetector {
    pub(crate) fn new<C: Send + 'static>(pool: Arc<PoolInner<C>>) -> Self {
        PoolLeakDetector { source: pool }
    }

    /// Every borrow held past the alert threshold right now, with its level, user, call
    /// site, thread and metadata. On demand and side-effect free: the sweeper's reports
    /// (callback, log, counters) happen once per level regardless.
    pub fn check_leaks(&self) -> Vec<LeakReport> {
        self.source.check_leaks()
    }

    /// Leak counters; `current_tracked` is the number of borrows held now.
    pub fn stats(&self) -> LeakStats {
        self.source.stats()
    }

    /// The alert and critical thresholds in force.
    pub fn thresholds(&self) -> LeakThresholds {
        self.source.thresholds()
    }

    /// Whether the connection `id` is borrowed now and held past its alert threshold
    /// (moved later by any hold its holder declared with
    /// [`PooledConnection::expect_hold`](crate::PooledConnection::expect_hold)). Always
    /// false with `leak_detection_enabled: false`. One slot read; no lock, no allocation.
    pub fn is_leaked(&self, id: ConnectionId) -> bool {
        self.source.is_leaked(id)
    }
}

/// The pool's view answers for [`ResourceId`]s that print a [`ConnectionId`] (as the
/// pool's leak reports and `EnhancedHealthMonitor` ids do): give
/// `Arc::new(pool.leak_detector.clone())` to
/// [`EnhancedHealthMonitor::new`](crate::EnhancedHealthMonitor::new) and a monitored
/// connection's `is_leaked` says whether the pool sees it held past its threshold. Any
/// other id is not leaked.
impl LeakView for PoolLeakDetector {
    fn is_leaked(&self, id: &ResourceId) -> bool {
        id.as_str()
            .parse::<u64>()
            .is_ok_and(|raw| self.source.is_leaked(ConnectionId::from_raw(raw)))
    }
}

impl fmt::Debug for PoolLeakDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolLeakDetector")
            .field("thresholds", &self.thresholds())
            .finish_non_exhaustive()
    }
}
