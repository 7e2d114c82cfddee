//! A model-based property test: random sequences of adds, try and blocking acquires,
//! releases (and doubled, stale ones), detaches, removes, and sweeper passes over the
//! pool's own controllable clock (leak Alert and Critical, reclaim, idle and age
//! eviction), across three users, checked after every step against a small reference
//! model: who holds which connection, which handles are valid, the counts per user, the
//! leak counts, and that every connection is closed exactly once, when the model says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use heliosdb_pool::{
    ConnectionId, ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error,
    PooledConnection, RawHandle, Removal,
};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const MAX: usize = 6;
const PER_USER: usize = 3;
// Thresholds sit half a step between the whole seconds the clock moves by, so the few
// milliseconds of real time a case takes never tip a comparison.
const ALERT_MS: u64 = 2_500;
const CRITICAL_MS: u64 = 5_500;
const IDLE_MS: u64 = 3_500;
const AGE_MS: u64 = 9_500;

/// Closes per model id.
type Closes = Arc<Mutex<BTreeMap<u64, u32>>>;

struct Conn {
    mid: u64,
    closes: Closes,
}

impl Drop for Conn {
    fn drop(&mut self) {
        *self.closes.lock().unwrap().entry(self.mid).or_default() += 1;
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    TryAcquire(usize),
    BlockingAcquire(usize),
    Release(usize),
    ReleaseStale(usize),
    Detach(usize),
    Remove(usize),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize).prop_map(Op::Add),
        3 => (0..3usize).prop_map(Op::TryAcquire),
        1 => (0..3usize).prop_map(Op::BlockingAcquire),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::ReleaseStale),
        1 => any::<usize>().prop_map(Op::Detach),
        1 => any::<usize>().prop_map(Op::Remove),
        2 => (1..4u64).prop_map(Op::Tick),
    ]
}

/// One connection in the model.
#[derive(Debug, Clone)]
struct Model {
    user: usize,
    id: ConnectionId,
    created_ms: u64,
    held: bool,
    /// Borrows so far (a new borrow is a new generation; the sweeper notices).
    borrows: u64,
    /// The sweeper's view: borrows when it last looked, and since when it saw it idle.
    tracked: Option<(u64, u64)>,
    started_ms: u64,
    alert: bool,
    critical: bool,
    reclaimed: bool,
    closes_on_return: bool,
    gone: bool,
}

struct World {
    closes: Closes,
    conns: Vec<Model>,
    /// Borrows held by the test: (model index, guard).
    held: Vec<(usize, PooledConnection<'static, Conn>)>,
    /// Handles of borrows that ended.
    stale: Vec<RawHandle>,
    now_ms: u64,
    alerts: u64,
    criticals: u64,
    partitions: [bool; 3],
}

impl World {
    fn counted(&self, user: usize) -> usize {
        self.conns
            .iter()
            .filter(|c| c.user == user && !c.gone && !c.reclaimed)
            .count()
    }
    fn slots(&self, user: usize) -> usize {
        self.conns
            .iter()
            .filter(|c| c.user == user && !c.gone)
            .count()
    }
    fn close(&mut self, index: usize) {
        self.conns[index].gone = true;
        self.conns[index].held = false;
    }
}

fn config() -> EnhancedPoolConfig {
    EnhancedPoolConfig {
        max_connections: MAX,
        max_per_user: PER_USER,
        acquire_timeout_ms: 0,
        idle_timeout_ms: IDLE_MS,
        max_connection_age_ms: AGE_MS,
        health_check_enabled: false,
        health_check_interval_ms: 0,
        leak_detection_enabled: true,
        leak_detection_threshold_ms: ALERT_MS,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 1_000,
    }
}

fn step(w: &mut World, op: &Op, pool: &'static EnhancedConnectionPool<Conn>) {
    match *op {
        Op::Add(user) => {
            let mid = w.conns.len() as u64;
            let conn = Conn {
                mid,
                closes: w.closes.clone(),
            };
            let name = USERS[user];
            let result = pool.add_connection_sync(conn, name, ConnectionMetadata::for_user(name));
            w.partitions[user] = true;
            let per_user_full = w.counted(user) >= PER_USER || w.slots(user) > PER_USER;
            let counted: usize = (0..3).map(|u| w.counted(u)).sum();
            let slots: usize = (0..3).map(|u| w.slots(u)).sum();
            // Each limit's index space has a headroom (a quarter, at least one) that
            // reclaimed borrows keep until they are returned.
            let pool_full = counted >= MAX || slots >= MAX + (MAX / 4).max(1);
            let mut model = Model {
                user,
                id: ConnectionId::from_raw(0),
                created_ms: w.now_ms,
                held: false,
                borrows: 0,
                tracked: None,
                started_ms: 0,
                alert: false,
                critical: false,
                reclaimed: false,
                closes_on_return: false,
                gone: false,
            };
            match result {
                Ok(id) => {
                    assert!(!per_user_full && !pool_full, "add succeeded beyond a limit");
                    model.id = id;
                }
                Err(Error::UserAtCapacity { .. }) => {
                    assert!(per_user_full);
                    model.gone = true; // dropped by the failed add
                }
                Err(Error::PoolFull { .. }) => {
                    assert!(pool_full && !per_user_full);
                    model.gone = true;
                }
                Err(e) => panic!("add: {e}"),
            }
            w.conns.push(model);
        }
        Op::TryAcquire(user) | Op::BlockingAcquire(user) => {
            let name = USERS[user];
            let result = if matches!(op, Op::TryAcquire(_)) {
                pool.try_acquire(name)
            } else {
                pool.blocking_acquire_timeout(name, Duration::ZERO)
            };
            let idle = w
                .conns
                .iter()
                .filter(|c| c.user == user && !c.gone && !c.held)
                .count();
            match result {
                Ok(guard) => {
                    let index = guard.mid as usize;
                    let c = &mut w.conns[index];
                    assert!(c.user == user && !c.gone && !c.held, "handed out {c:?}");
                    c.held = true;
                    c.borrows += 1;
                    c.started_ms = w.now_ms;
                    c.alert = false;
                    c.critical = false;
                    w.held.push((index, guard));
                }
                Err(Error::UnknownUser { .. }) => assert!(!w.partitions[user]),
                Err(Error::NoIdleConnection { .. }) | Err(Error::Timeout { .. }) => {
                    assert_eq!(idle, 0, "an idle connection was not found");
                    assert!(w.partitions[user]);
                }
                Err(e) => panic!("acquire: {e}"),
            }
        }
        Op::Release(k) if !w.held.is_empty() => {
            let (index, guard) = w.held.swap_remove(k % w.held.len());
            let raw = guard.into_raw_handle();
            w.stale.push(raw);
            let result = pool.release_raw_handle(raw);
            let c = &mut w.conns[index];
            if c.reclaimed {
                assert!(matches!(result, Err(Error::Reclaimed { .. })), "{result:?}");
                w.close(index);
            } else {
                assert_eq!(result, Ok(()));
                if c.closes_on_return {
                    w.close(index);
                } else {
                    c.held = false;
                }
            }
        }
        Op::ReleaseStale(k) if !w.stale.is_empty() => {
            let raw = w.stale[k % w.stale.len()];
            assert!(matches!(
                pool.release_raw_handle(raw),
                Err(Error::StaleHandle { .. })
            ));
        }
        Op::Detach(k) if !w.held.is_empty() => {
            let (index, guard) = w.held.swap_remove(k % w.held.len());
            let result = guard.detach();
            if w.conns[index].reclaimed {
                assert!(matches!(result, Err(Error::Reclaimed { .. })));
            } else {
                drop(result.expect("detach"));
            }
            w.close(index);
        }
        Op::Remove(k) if !w.conns.is_empty() => {
            let index = k % w.conns.len();
            let result = pool.remove_connection(w.conns[index].id);
            let c = &mut w.conns[index];
            if c.gone {
                assert!(matches!(result, Err(Error::UnknownConnection { .. })));
            } else if c.held {
                assert_eq!(result, Ok(Removal::ClosesOnReturn));
                c.closes_on_return = true;
            } else {
                assert_eq!(result, Ok(Removal::Closed));
                w.close(index);
            }
        }
        Op::Tick(seconds) => {
            pool.testing_advance_clock(Duration::from_secs(seconds));
            w.now_ms += seconds * 1_000;
            pool.sweep_now().unwrap();
            sweep_model(w);
        }
        _ => {}
    }
}

/// What one sweeper pass does, in slab (slot) order.
fn sweep_model(w: &mut World) {
    let now = w.now_ms;
    let mut order: Vec<usize> = (0..w.conns.len()).filter(|&i| !w.conns[i].gone).collect();
    order.sort_by_key(|&i| w.conns[i].id.raw() & 0xff_ffff);
    for i in order {
        let c = &mut w.conns[i];
        let (seen, idle_since) = *c.tracked.get_or_insert((c.borrows, now));
        let expired = now >= c.created_ms + AGE_MS;
        if c.held {
            if expired {
                c.closes_on_return = true;
            }
            if c.reclaimed {
                continue;
            }
            let age = now - c.started_ms;
            if age >= CRITICAL_MS && !c.critical {
                c.critical = true;
                c.alert = true;
                c.reclaimed = true;
                w.criticals += 1;
            } else if age >= ALERT_MS && !c.alert {
                c.alert = true;
                w.alerts += 1;
            }
            continue;
        }
        let idle_since = if seen != c.borrows {
            c.tracked = Some((c.borrows, now));
            now
        } else {
            idle_since
        };
        if expired || now - idle_since >= IDLE_MS {
            w.close(i);
        }
    }
}

fn check(w: &World, pool: &EnhancedConnectionPool<Conn>) {
    let stats = pool.stats();
    let live = w.conns.iter().filter(|c| !c.gone).count();
    let held = w.conns.iter().filter(|c| !c.gone && c.held).count();
    assert_eq!(stats.total_connections, live, "{stats:?}");
    assert_eq!(stats.active_connections, held);
    assert_eq!(stats.idle_connections, live - held);
    assert_eq!(stats.leak_stats.alerts, w.alerts);
    assert_eq!(stats.leak_stats.criticals, w.criticals);
    for (user, name) in USERS.iter().enumerate() {
        let total = stats
            .users
            .iter()
            .find(|u| u.user == *name)
            .map_or(0, |u| u.total_connections);
        assert_eq!(total, w.slots(user), "{name}");
    }
    let closes = w.closes.lock().unwrap();
    for (mid, c) in w.conns.iter().enumerate() {
        let n = closes.get(&(mid as u64)).copied().unwrap_or(0);
        assert_eq!(
            n,
            u32::from(c.gone),
            "connection {mid} ({c:?}) closed {n} times"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_pool_behaves_like_its_model(ops in prop::collection::vec(op(), 1..60)) {
        let closes: Closes = Arc::default();
        let pool: &'static EnhancedConnectionPool<Conn> = Box::leak(Box::new(
            EnhancedConnectionPool::builder(config())
                .age_jitter(0.0)
                .leak_critical_threshold(Duration::from_millis(CRITICAL_MS))
                .sweep_interval(Duration::from_secs(3_600))
                .on_evict(|_| {}) // lets the pool shrink by itself without a factory
                .build()
                .unwrap(),
        ));
        let mut w = World {
            closes: closes.clone(),
            conns: Vec::new(),
            held: Vec::new(),
            stale: Vec::new(),
            now_ms: 0,
            alerts: 0,
            criticals: 0,
            partitions: [false; 3],
        };
        for op in &ops {
            step(&mut w, op, pool);
            check(&w, pool);
        }
        // Closing closes what is idle now, and every borrow on its return.
        for (_, guard) in w.held.drain(..) {
            drop(guard);
        }
        pool.close();
        let closed = closes.lock().unwrap();
        for mid in 0..w.conns.len() as u64 {
            prop_assert_eq!(closed.get(&mid).copied(), Some(1), "connection {} at the end", mid);
        }
    }
}
