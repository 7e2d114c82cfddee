//! The sweeper: one background thread per pool that does everything the acquire and
//! release paths must not (docs/ARCHITECTURE.md, section 5). One pass walks the slab once:
//!
//! 1. **Leaks.** A borrow held past the alert threshold is reported once at Alert and
//!    once more at Critical. The report flag is set by CAS on the exact state the
//!    validated snapshot saw, so a borrow that ends meanwhile is never misreported and
//!    never reported twice.
//! 2. **Reclaim** (`auto_cleanup_enabled`). A critical leak's capacity is given back
//!    to its user and the pool; the holder's handle turns stale, but the connection is
//!    closed only when the holder returns it (or at pool drop), never under its feet.
//! 3. **Lifetime.** An idle connection past `max_connection_age_ms` (less its jitter) or
//!    idle past `idle_timeout_ms` (above `min_idle`) is claimed like a borrow and closed;
//!    a borrowed one past its age is marked to close on return. Only when the pool can
//!    refill (a factory) or tell someone who can (`on_evict`); otherwise nothing is
//!    closed for idle time or age (an expired idle connection is logged once).
//! 4. **Health.** An idle connection not checked for `health_check_interval_ms` is
//!    claimed (state `Checking`), checked outside any lock, then returned or evicted.
//! 5. **Users.** A user with no connection, no waiter and no request for
//!    `retire_users_after` is retired (`users.rs`): its memory and metrics come back.
//! 6. **Refill.** With a factory: notices what is wanted (`min_idle`, replacements for
//!    health and age evictions, requests a full pool turned away) and hands it to the
//!    connector (`factory.rs`), which connects on its own threads: a pass never waits
//!    for a connect.
//!
//! A pass that finds nothing to do allocates nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::builder::HealthCheckFn;
use crate::clock;
use crate::health::{ConnectionHealth, HealthCheck, HealthRecord, HealthStatus, run_health_check};
use crate::leak::{LeakLevel, LeakReport, ResourceId, ResourceType};
use crate::metadata::ConnectionId;
use crate::metrics::{Eviction, SweepStats};
use crate::partition::Partition;
use crate::pool::PoolInner;
use crate::slab::state::{self, Claim, Lifecycle, SlotState, flags};
use crate::slab::{BorrowSnapshot, Slab, SlotHeader};
use crate::thread_tag;
use crate::wait::lock;

/// What the sweeper remembers about one slot between passes. Owned by whoever holds
/// the pool's `sweep` lock (the sweeper thread, or `sweep_now`).
#[derive(Debug, Clone, Default)]
struct SlotTrack {
    /// The connection this track describes; a different id means a new connection.
    conn_id: u64,
    /// The generation last seen idle: a change means it was borrowed since.
    seen_generation: u64,
    /// When it was last seen to become idle (ms since the slab epoch).
    idle_since_ms: u32,
    /// When it was last health-checked (ms since the slab epoch).
    checked_ms: u32,
    /// Its age limit, jitter applied (ms since the slab epoch); `None`: no limit.
    expires_ms: Option<u32>,
    /// While idle at `seen_generation`, nothing is due before this (ms since the slab
    /// epoch): most idle slots cost a pass one comparison.
    due_ms: u32,
    /// Past its age but kept (the pool cannot shrink by itself), and said so once.
    kept_past_age: bool,
}

/// Whether wrapping time `at` has come by `now` (times within 2^31 ms of each other).
fn reached(at: u32, now: u32) -> bool {
    now.wrapping_sub(at) < (1 << 31)
}

/// The sweeper's state across passes.
pub(crate) struct SweepState {
    tracks: Vec<SlotTrack>,
}

/// Counters of the sweeper's own progress, readable without its lock.
#[derive(Debug, Default)]
pub(crate) struct SweepProgress {
    passes: AtomicU64,
    last_duration_ns: AtomicU64,
    /// Coarse-clock nanoseconds when the last pass completed; 0 before the first.
    completed_at: AtomicU64,
}

impl SweepProgress {
    pub(crate) fn stats(&self) -> SweepStats {
        let completed_at = self.completed_at.load(Ordering::Relaxed);
        SweepStats {
            passes: self.passes.load(Ordering::Relaxed),
            last_duration: Duration::from_nanos(self.last_duration_ns.load(Ordering::Relaxed)),
            completed_ago: (completed_at != 0)
                .then(|| Duration::from_nanos(clock::now_nanos().saturating_sub(completed_at))),
        }
    }
}

/// Health records by slot: written by the sweeper after each check (briefly locked,
/// never during a check), read by `connection_health`.
pub(crate) type HealthTable = Mutex<Vec<Option<(u64, HealthRecord)>>>;

/// How many slots ahead a pass prefetches: enough to cover a memory round trip at a
/// few nanoseconds of work per slot.
const PREFETCH_AHEAD: usize = 16;

impl SweepState {
    pub(crate) fn new(slots: usize) -> Self {
        SweepState {
            tracks: vec![SlotTrack::default(); slots],
        }
    }
}

/// The running sweeper thread; `stop` ends and joins it.
pub(crate) struct SweeperHandle {
    /// Dropped to stop the thread (its receiver sees the channel disconnect).
    stop: Option<Sender<()>>,
    thread: JoinHandle<()>,
}

impl SweeperHandle {
    /// Starts the sweeper if any background feature needs it.
    pub(crate) fn start<C: Send + 'static>(pool: &Arc<PoolInner<C>>) -> Option<Self> {
        let interval = pool.sweep_interval()?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let pool = pool.clone();
        let thread = std::thread::Builder::new()
            .name(format!("heliosdb-sweeper-{}", pool.id()))
            .spawn(move || {
                loop {
                    crossbeam_channel::select! {
                        // Disconnected: the pool is closing.
                        recv(stopped) -> _ => return,
                        default(interval) => {}
                    }
                    if pool.closed() {
                        return; // Closed while it slept or waited for a pass.
                    }
                    pool.sweep_pass();
                }
            })
            .expect("spawning the heliosdb sweeper thread");
        Some(SweeperHandle {
            stop: Some(stop),
            thread,
        })
    }

    /// Asks the thread to stop: it ends after the pass in progress, if any, or at once
    /// if it sleeps. Idempotent.
    pub(crate) fn signal_stop(&mut self) {
        self.stop = None;
    }

    /// Whether the calling thread is the sweeper thread itself.
    pub(crate) fn is_current(&self) -> bool {
        self.thread.thread().id() == std::thread::current().id()
    }

    /// Waits for the thread to end (after [`signal_stop`](Self::signal_stop)).
    pub(crate) fn join(self) {
        if self.thread.join().is_err() {
            log::error!("heliosdb-pool: the sweeper thread panicked");
        }
    }
}

/// A health-check hook as a [`HealthCheck`], so the pool and the standalone monitor
/// share one way of running checks (timing, panics as failures).
struct HookCheck<'a, C> {
    hook: &'a HealthCheckFn<C>,
    conn: &'a C,
}

impl<C> HealthCheck for HookCheck<'_, C> {
    fn health_check(&self) -> std::result::Result<(), String> {
        (self.hook)(self.conn)
    }
}

impl<C: Send + 'static> PoolInner<C> {
    /// The sweeper's period: the smallest interval among the enabled features, or
    /// `None` if nothing needs a background thread.
    fn sweep_interval(&self) -> Option<Duration> {
        if let Some(interval) = self.tuning.sweep_interval {
            return Some(interval);
        }
        let c = &self.config;
        let ms = Duration::from_millis;
        let cleanup = ms(if c.cleanup_interval_ms > 0 {
            c.cleanup_interval_ms
        } else {
            30_000
        });
        let candidates = [
            // A quarter of the threshold: a leak is reported within 1.25x its threshold.
            c.leak_detection_enabled
                .then(|| ms(c.leak_detection_threshold_ms) / 4),
            (c.health_check_enabled && self.hooks.health_check.is_some())
                .then(|| ms(c.health_check_interval_ms)),
            (c.idle_timeout_ms > 0
                || c.max_connection_age_ms > 0
                || c.auto_cleanup_enabled
                || self.hooks.factory.is_some())
            .then_some(cleanup),
        ];
        candidates
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.max(Duration::from_millis(1)))
    }

    /// One sweeper pass (see the module docs). Serialised by the `sweep` lock.
    pub(crate) fn sweep_pass(&self) {
        self.as_sweeper(|| self.sweep_pass_marked());
    }

    fn sweep_pass_marked(&self) {
        let started = Instant::now();
        let mut sweep = lock(&self.sweep);
        let now = self.slab.now_ms();
        for (slot, header) in self.slab.iter() {
            self.slab.prefetch(slot as usize + PREFETCH_AHEAD);
            let state = header.load_state(Ordering::Acquire);
            if !matches!(state.lifecycle(), Lifecycle::Idle | Lifecycle::InUse) {
                continue;
            }
            let conn_id = header.conn_id.load(Ordering::Acquire);
            if conn_id == 0 {
                continue;
            }
            let track = &mut sweep.tracks[slot as usize];
            if track.conn_id != conn_id {
                *track = self.new_track(header, conn_id, state, now);
            }
            match state.lifecycle() {
                Lifecycle::InUse => self.tend_borrow(header, state, track, now),
                _ => self.tend_idle(slot, header, state, track, now),
            }
        }
        // Last of the slot work: a partition read above stays live for the whole pass
        // (see `partition_if_occupied`).
        self.users.retire_vacant(now, Partition::is_vacant);
        drop(sweep);
        self.hand_over_demand();
        let progress = &self.sweep_progress;
        progress.passes.fetch_add(1, Ordering::Relaxed);
        progress
            .last_duration_ns
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        progress
            .completed_at
            .store(clock::now_nanos(), Ordering::Relaxed);
    }

    fn new_track(
        &self,
        header: &SlotHeader,
        conn_id: u64,
        state: SlotState,
        now: u32,
    ) -> SlotTrack {
        let created = Slab::ms(header.created_at.load(Ordering::Relaxed));
        let max_age = self.config.max_connection_age_ms;
        let expires_ms = (max_age > 0).then(|| {
            // Deterministic per connection: a multiplicative hash of the id, in [0, 1).
            let unit =
                (conn_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64;
            let lifetime = max_age as f64 * (1.0 - self.tuning.age_jitter * unit);
            created.wrapping_add(lifetime as u32)
        });
        let mut track = SlotTrack {
            conn_id,
            seen_generation: state.generation(),
            idle_since_ms: now,
            checked_ms: now,
            expires_ms,
            due_ms: now,
            kept_past_age: false,
        };
        track.due_ms = self.next_due(&track, now);
        track
    }

    fn expired(track: &SlotTrack, now: u32) -> bool {
        track.expires_ms.is_some_and(|at| reached(at, now))
    }

    /// When the next idle-side check of `track` falls due: its age limit, its idle
    /// timeout, its next health check, whichever comes first (at most 2^30 ms ahead).
    fn next_due(&self, track: &SlotTrack, now: u32) -> u32 {
        const FAR: u64 = 1 << 30;
        let c = &self.config;
        let after = |since: u32, ms: u64| since.wrapping_add(ms.min(FAR) as u32);
        let candidates = [
            track.expires_ms.filter(|_| !track.kept_past_age),
            (c.idle_timeout_ms > 0 && self.may_shrink())
                .then(|| after(track.idle_since_ms, c.idle_timeout_ms)),
            (c.health_check_enabled && self.hooks.health_check.is_some())
                .then(|| after(track.checked_ms, c.health_check_interval_ms)),
        ];
        candidates
            .into_iter()
            .flatten()
            // Order by distance from now; anything already reached counts as now.
            .map(|at| if reached(at, now) { now } else { at })
            .min_by_key(|at| at.wrapping_sub(now))
            .unwrap_or_else(|| now.wrapping_add(FAR as u32))
    }

    /// A borrowed slot: leak levels, reclaim, age.
    fn tend_borrow(&self, header: &SlotHeader, state: SlotState, track: &SlotTrack, now: u32) {
        if Self::expired(track, now) && !state.has(flags::AGED) && self.may_shrink() {
            // Never taken from its holder: closed when returned. Losing the race to a
            // release or a leak flag is fine: the next pass looks again.
            let _ = state::try_flag(&header.state, state, flags::AGED);
        }
        if !self.config.leak_detection_enabled {
            return;
        }
        let Some(borrow) = header.borrow_snapshot() else {
            return;
        };
        let age = borrow.age(now);
        let Some(level) = self.tuning.leak_thresholds.level(borrow.leak_age(now)) else {
            return;
        };
        let flag = match level {
            LeakLevel::Alert => flags::LEAK_ALERT,
            LeakLevel::Critical => flags::LEAK_ALERT | flags::LEAK_CRITICAL,
        };
        if borrow.state.pack() & flag == flag {
            return; // Reported at this level already.
        }
        let reclaim = level == LeakLevel::Critical && self.config.auto_cleanup_enabled;
        let set = if reclaim {
            flag | flags::RECLAIMED
        } else {
            flag
        };
        // The owner and the report, taken before the CAS: once the flag is set the
        // holder may return the connection and empty the slot at once. The CAS on the
        // exact snapshot state then proves they described this same borrow.
        let partition = self.partition_if_occupied(header);
        let report = self.leak_report(header, &borrow, age, level);
        if !state::try_flag(&header.state, borrow.state, set) {
            return; // Released or flagged meanwhile: the next pass decides afresh.
        }
        let counters = &self.counters;
        if !borrow.state.has(flags::LEAK_ALERT) {
            counters.leaks_detected.fetch_add(1, Ordering::Relaxed);
        }
        match level {
            LeakLevel::Alert => counters.leak_alerts.fetch_add(1, Ordering::Relaxed),
            LeakLevel::Critical => counters.leak_criticals.fetch_add(1, Ordering::Relaxed),
        };
        if reclaim {
            self.uncount_slot();
            if let Some(partition) = partition {
                partition.uncount();
                self.capacity_freed(partition);
            }
        }
        let Some(report) = report else {
            return;
        };
        match level {
            LeakLevel::Alert => log::warn!("heliosdb-pool: {report}"),
            LeakLevel::Critical => log::error!("heliosdb-pool: {report}"),
        }
        call_hook("on_leak", self.hooks.on_leak.as_deref(), &report);
        if reclaim {
            log::error!(
                "heliosdb-pool: reclaimed connection {}: capacity restored, closed when returned",
                report.resource_id
            );
            call_hook("on_reclaim", self.hooks.on_reclaim.as_deref(), &report);
        }
    }

    /// An idle slot: age, idle timeout, health.
    fn tend_idle(
        &self,
        slot: u32,
        header: &SlotHeader,
        state: SlotState,
        track: &mut SlotTrack,
        now: u32,
    ) {
        if state.generation() != track.seen_generation {
            track.seen_generation = state.generation();
            track.idle_since_ms = now;
            track.due_ms = self.next_due(track, now);
        }
        if !reached(track.due_ms, now) {
            return;
        }
        track.due_ms = self.next_due(track, now);
        let Some(partition) = self.partition_if_occupied(header) else {
            return;
        };
        if Self::expired(track, now) {
            if self.may_shrink() {
                self.evict_idle(slot, header, state, partition, Eviction::Age);
                return;
            }
            if !track.kept_past_age {
                track.kept_past_age = true;
                track.due_ms = self.next_due(track, now);
                log::warn!(
                    "heliosdb-pool: connection {} of {:?} is past max_connection_age_ms but kept: \
                     without a connection factory or an on_evict hook nothing could replace it",
                    track.conn_id,
                    partition.user()
                );
            }
        }
        let idle_timeout = self.config.idle_timeout_ms;
        if idle_timeout > 0
            && self.may_shrink()
            && u64::from(now.wrapping_sub(track.idle_since_ms)) >= idle_timeout
            && partition.idle_count(&self.slab) > self.tuning.min_idle
        {
            self.evict_idle(slot, header, state, partition, Eviction::Idle);
            return;
        }
        let Some(hook) = &self.hooks.health_check else {
            return;
        };
        if !self.config.health_check_enabled
            || u64::from(now.wrapping_sub(track.checked_ms)) < self.config.health_check_interval_ms
        {
            return;
        }
        // Reserved exactly as a borrower would: if someone borrows it first, fine.
        let Ok(checking) = state::try_claim(&header.state, state.generation(), Claim::Check) else {
            return;
        };
        track.checked_ms = now;
        track.due_ms = self.next_due(track, now);
        // SAFETY: the slot is `Checking`, owned by this pass until `end_check`.
        let conn = unsafe { self.value_ref(slot) };
        let (outcome, latency) = run_health_check(&HookCheck { hook, conn });
        self.counters.health_checks.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            self.counters
                .health_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        let status = self.record_health(slot, track.conn_id, outcome, latency);
        let evict = status == HealthStatus::Unhealthy;
        // Just checked: validation on borrow need not check it again soon.
        header.note_idle_since(self.slab.now_ms());
        let Ok(ended) = state::end_check(&header.state, checking.generation(), evict) else {
            unreachable!("only the sweeper ends its own check");
        };
        let local = header.local.load(Ordering::Relaxed);
        if evict || ended.closes() {
            let cause = if evict {
                Eviction::Health
            } else {
                crate::pool::closing_cause(ended)
            };
            log::warn!(
                "heliosdb-pool: closing connection {} ({cause:?})",
                track.conn_id
            );
            drop(self.retire(partition, local, slot, true, Some(cause)));
            if evict {
                self.want_replacement(partition);
            }
        } else {
            self.announce_idle(partition, local);
        }
    }

    fn evict_idle(
        &self,
        slot: u32,
        header: &SlotHeader,
        state: SlotState,
        partition: &Partition,
        cause: Eviction,
    ) {
        // Claimed like a borrow: if someone takes it first, it stays.
        if state::try_claim(&header.state, state.generation(), Claim::Exclusive).is_err() {
            return;
        }
        let local = header.local.load(Ordering::Relaxed);
        drop(self.retire(partition, local, slot, true, Some(cause)));
        if cause == Eviction::Age {
            self.want_replacement(partition);
        }
    }

    /// Builds the report for a validated borrow; `None` if it changed hands meanwhile.
    pub(crate) fn leak_report(
        &self,
        header: &SlotHeader,
        borrow: &BorrowSnapshot,
        age: Duration,
        level: LeakLevel,
    ) -> Option<LeakReport> {
        let info = header.info.load_full()?;
        let id = ConnectionId::from_raw(header.conn_id.load(Ordering::Relaxed));
        if header.load_state(Ordering::Acquire).generation() != borrow.state.generation() {
            return None;
        }
        let md = &info.metadata;
        let mut metadata = Vec::with_capacity(5);
        let fields = [
            ("database", md.database.as_deref()),
            (
                "protocol",
                Some(md.protocol.as_str()).filter(|p| !p.is_empty()),
            ),
            ("remote_addr", md.remote_addr.as_deref()),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                metadata.push((key.to_string(), value.to_string()));
            }
        }
        if !md.tags.is_empty() {
            metadata.push(("tags".to_string(), md.tags.join(",")));
        }
        Some(LeakReport {
            resource_id: ResourceId::new(id),
            resource_type: ResourceType::Connection,
            age,
            acquired_by: info.user.to_string(),
            metadata,
            level,
            call_site: borrow.site,
            thread: thread_tag::name_of(borrow.borrower),
        })
    }

    /// Every current borrow at or past the alert threshold, as reports (no side
    /// effects: nothing is flagged or counted).
    /// With `leak_detection_enabled: false`, none.
    pub(crate) fn current_leaks(&self) -> Vec<LeakReport> {
        if !self.config.leak_detection_enabled {
            return Vec::new();
        }
        let now = self.slab.now_ms();
        self.slab
            .iter()
            .filter_map(|(_, header)| {
                let borrow = header.borrow_snapshot()?;
                let level = self.tuning.leak_thresholds.level(borrow.leak_age(now))?;
                self.leak_report(header, &borrow, borrow.age(now), level)
            })
            .collect()
    }

    /// Whether the connection `id` is borrowed now and held past its alert threshold
    /// (moved by any declared hold); always false with `leak_detection_enabled: false`.
    /// One slot read, no allocation.
    pub(crate) fn is_leaked(&self, id: ConnectionId) -> bool {
        if !self.config.leak_detection_enabled {
            return false;
        }
        let Some(header) = self.slab.get(id.slot()) else {
            return false;
        };
        let Some(borrow) = header.borrow_snapshot() else {
            return false;
        };
        // The id after the snapshot, then the state again: the borrow validated above
        // is still the slot's, so the id read in between was its connection's.
        let same = header.conn_id.load(Ordering::Acquire) == id.raw()
            && header.load_state(Ordering::Acquire).generation() == borrow.state.generation();
        same && self
            .tuning
            .leak_thresholds
            .level(borrow.leak_age(self.slab.now_ms()))
            .is_some()
    }

    /// Health of every connection checked so far and still in the pool.
    pub(crate) fn connection_health(&self) -> Vec<ConnectionHealth> {
        let table = lock(&self.health);
        table
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| {
                let (conn_id, record) = entry.as_ref()?;
                let header = self.slab.get(slot as u32)?;
                if header.conn_id.load(Ordering::Acquire) != *conn_id {
                    return None; // Gone since.
                }
                let state = header.load_state(Ordering::Relaxed);
                let leaked =
                    state.lifecycle() == Lifecycle::InUse && state.pack() & flags::LEAKED != 0;
                Some(ConnectionHealth::from_record(
                    ConnectionId::from_raw(*conn_id).to_string(),
                    record,
                    &self.tuning.health_policy,
                    leaked,
                ))
            })
            .collect()
    }
}

/// The parts of health and replacement that the acquire path uses too.
impl<C> PoolInner<C> {
    /// With a factory, an evicted connection is replaced (unless callers wait: then
    /// `capacity_freed` has asked for them already), by the connector, now.
    pub(crate) fn want_replacement(&self, partition: &Partition) {
        if self.hooks.factory.is_some() && partition.waiters.waiting() == 0 {
            partition.factory_requests.fetch_add(1, Ordering::Relaxed);
            self.connector.wake();
        }
    }

    /// Validation on borrow: runs the health check on the connection of `slot`, which
    /// the caller has just borrowed (and holds), on the caller's thread; counts it and
    /// records it like the sweeper's checks. Whether the connection passed.
    #[cold]
    pub(crate) fn check_on_borrow(&self, slot: u32, id: ConnectionId) -> bool {
        let Some(hook) = &self.hooks.health_check else {
            return true;
        };
        // SAFETY: the caller holds the slot's current borrow and does not use the
        // connection during the check; nobody else touches an `InUse` value.
        let conn = unsafe { self.value_ref(slot) };
        let (outcome, latency) = run_health_check(&HookCheck { hook, conn });
        self.counters.health_checks.fetch_add(1, Ordering::Relaxed);
        let passed = outcome.is_ok();
        if let Err(reason) = &outcome {
            self.counters
                .health_failures
                .fetch_add(1, Ordering::Relaxed);
            log::warn!("heliosdb-pool: closing connection {id}: failed validation on borrow: {reason}");
        }
        self.record_health(slot, id.raw(), outcome, latency);
        passed
    }

    fn record_health(
        &self,
        slot: u32,
        conn_id: u64,
        outcome: std::result::Result<(), String>,
        latency: Duration,
    ) -> HealthStatus {
        let mut table = lock(&self.health);
        let entry = &mut table[slot as usize];
        if entry.as_ref().is_none_or(|(id, _)| *id != conn_id) {
            *entry = Some((conn_id, HealthRecord::new()));
        }
        let (_, record) = entry.as_mut().expect("set above");
        record.record(outcome, latency);
        record.status(&self.tuning.health_policy)
    }
}

/// Runs a user callback on the sweeper thread; a panic is caught and logged.
fn call_hook(name: &str, hook: Option<&(dyn Fn(&LeakReport) + Send + Sync)>, report: &LeakReport) {
    if let Some(hook) = hook {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(report))).is_err() {
            log::error!("heliosdb-pool: the {name} callback panicked; the sweeper goes on");
        }
    }
}
