//! The pool's users: name -> partition, bounded in number and name length, with
//! partitions of users gone quiet retired and reused, so a service that sees many
//! names (user names from its clients, say) neither grows nor slows without limit.
//!
//! - **Lookups** are lock-free: one `ArcSwap` load and a hash; the caller gets an `Arc`
//!   of the partition, which keeps it from being reused while the caller works on it.
//! - **Creation and retirement** replace the map whole under `registry`'s lock, at a
//!   cost that grows with the live users (at most `max_users`), never with the names
//!   ever seen.
//! - **Retirement** (the sweeper's, after a user had no connection, no waiter and no
//!   request for `retire_after`; or at once for users vacant when a new user finds the
//!   pool at `max_users`, under the sweep lock): the partition closes itself to adds and waiters
//!   (`Partition::retire`), leaves the map, and joins the spares.
//! - **Memory** of a partition is never freed before the pool: slots and thread-local
//!   affinity entries name partitions by address, and a thread that has just ended a
//!   borrow may still touch its old partition's hints. A spare is reused for the next
//!   new user once nobody holds it, so the partitions ever allocated are bounded by
//!   `max_users` plus those held by operations under way when their user was retired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::error::{Error, Result};
use crate::partition::{Partition, UserHashing, UserMap};
use crate::wait::lock;

/// The default of [`PoolBuilder::max_users`](crate::PoolBuilder::max_users).
pub const DEFAULT_MAX_USERS: usize = 1024;
/// The default of [`PoolBuilder::max_user_name_len`](crate::PoolBuilder::max_user_name_len)
/// (bytes).
pub const DEFAULT_MAX_USER_NAME_LEN: usize = 256;
/// The default of [`PoolBuilder::retire_users_after`](crate::PoolBuilder::retire_users_after).
pub const DEFAULT_RETIRE_USERS_AFTER: Duration = Duration::from_secs(60);

/// Retirement delays from this one up are refused (see `UserLimits::validate`).
const MAX_RETIRE_AFTER: Duration = Duration::from_millis(1 << 31);

/// The limits on users (see the builder's setters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserLimits {
    pub(crate) max_users: usize,
    pub(crate) max_name_len: usize,
    /// `None`: partitions are never retired.
    pub(crate) retire_after: Option<Duration>,
}

impl UserLimits {
    /// Refuses limits that would refuse every user.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_users == 0 {
            return Err(Error::invalid_config("max_users", "must be at least 1"));
        }
        if self.max_name_len == 0 {
            return Err(Error::invalid_config(
                "max_user_name_len",
                "must be at least 1",
            ));
        }
        // The vacancy clock is the pool's 32-bit millisecond clock, compared within
        // half its range.
        if self.retire_after.is_some_and(|a| a >= MAX_RETIRE_AFTER) {
            return Err(Error::invalid_config(
                "retire_users_after",
                "must be under 24 days (2^31 ms); use Duration::MAX (C: UINT64_MAX) for never",
            ));
        }
        Ok(())
    }
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            max_users: DEFAULT_MAX_USERS,
            max_name_len: DEFAULT_MAX_USER_NAME_LEN,
            retire_after: Some(DEFAULT_RETIRE_USERS_AFTER),
        }
    }
}

/// Partitions by user.
pub(crate) struct Users {
    /// The live users, read lock-free on every lookup.
    map: ArcSwap<UserMap>,
    /// Serialises creation, retirement and the pool's close.
    registry: Mutex<Registry>,
    limits: UserLimits,
    max_per_user: usize,
    /// Partitions retired so far (a counter for stats).
    retired: AtomicU64,
}

struct Registry {
    /// Every live partition, in creation order.
    live: Vec<Arc<Partition>>,
    /// Retired partitions, waiting to be reused.
    spares: Vec<Arc<Partition>>,
    /// Set by the pool's close, under this lock: no user is created after it.
    closed: bool,
}

impl Users {
    pub(crate) fn new(limits: UserLimits, max_per_user: usize) -> Self {
        Users {
            map: ArcSwap::from_pointee(UserMap::with_hasher(UserHashing::random())),
            registry: Mutex::new(Registry {
                live: Vec::new(),
                spares: Vec::new(),
                closed: false,
            }),
            limits,
            max_per_user,
            retired: AtomicU64::new(0),
        }
    }

    /// The user's live partition, if any: one `ArcSwap` load, a hash lookup and a
    /// reference count.
    #[inline]
    pub(crate) fn get(&self, user: &str) -> Option<Arc<Partition>> {
        self.map.load().get(user).cloned()
    }

    /// The user's partition, created if needed (and allowed: the pool open, the name
    /// not too long, fewer than `max_users` live users).
    pub(crate) fn get_or_create(&self, user: &str) -> Result<Arc<Partition>> {
        if let Some(found) = self.get(user) {
            return Ok(found);
        }
        self.check_name(user)?;
        let mut registry = lock(&self.registry);
        if registry.closed {
            return Err(Error::Closed);
        }
        // Under the lock the map is current: a partition in it is not retired.
        if let Some(found) = self.map.load().get(user) {
            return Ok(found.clone());
        }
        if registry.live.len() >= self.limits.max_users {
            return Err(Error::TooManyUsers {
                max_users: self.limits.max_users,
            });
        }
        let name: Arc<str> = Arc::from(user);
        let serial = next_serial();
        let partition = match registry.take_spare() {
            Some(spare) => {
                // SAFETY: under the registry's lock; a spare is retired and out of the
                // map, and `take_spare` returned it only as its sole `Arc`.
                unsafe { spare.reuse(name.clone(), serial) };
                spare
            }
            None => Arc::new(Partition::new(name.clone(), serial, self.max_per_user)),
        };
        let mut map = UserMap::clone(&self.map.load());
        map.insert(name, partition.clone());
        self.map.store(Arc::new(map));
        registry.live.push(partition.clone());
        Ok(partition)
    }

    /// Waits for a retirement in progress to finish, so that the next lookup sees the
    /// map without the retired partition (a caller found one retired).
    pub(crate) fn settle(&self) {
        drop(lock(&self.registry));
    }

    /// A clear error for a name longer than `max_user_name_len`.
    pub(crate) fn check_name(&self, user: &str) -> Result<()> {
        if user.len() > self.limits.max_name_len {
            return Err(Error::UserNameTooLong {
                len: user.len(),
                max: self.limits.max_name_len,
            });
        }
        Ok(())
    }

    /// Every live partition (a clone of the list).
    pub(crate) fn all(&self) -> Vec<Arc<Partition>> {
        lock(&self.registry).live.clone()
    }

    /// Whether any live partition matches `f`, without cloning the list.
    pub(crate) fn any(&self, f: impl Fn(&Partition) -> bool) -> bool {
        lock(&self.registry).live.iter().any(|p| f(p))
    }

    /// Marks the registry closed (no user is created after this) and returns the live
    /// partitions, for the pool to close their queues.
    pub(crate) fn close(&self, mark_pool_closed: impl FnOnce()) -> Vec<Arc<Partition>> {
        let mut registry = lock(&self.registry);
        registry.closed = true;
        mark_pool_closed();
        registry.live.clone()
    }

    /// Users retired so far.
    pub(crate) fn retired_count(&self) -> u64 {
        self.retired.load(Ordering::Relaxed)
    }

    /// The sweeper's part: retires every partition that `vacant` says has had no
    /// connection, waiter or request since at least `retire_after` before `now_ms` (ms
    /// on the pool's clock). `vacant(p)` is called under the registry's lock and must
    /// not take it. Returns how many were retired. Allocates only when one is.
    pub(crate) fn retire_vacant(&self, now_ms: u32, vacant: impl Fn(&Partition) -> bool) -> usize {
        let Some(after) = self.limits.retire_after else {
            return 0;
        };
        let after_ms = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
        self.retire_where(|partition| {
            if !vacant(partition) {
                partition.vacant_since.store(0, Ordering::Relaxed);
                return false;
            }
            // `vacant_since` is stored plus one, so that 0 means "not vacant".
            let since = partition.vacant_since.load(Ordering::Relaxed);
            if since == 0 {
                let mark = now_ms.wrapping_add(1).max(1);
                partition.vacant_since.store(mark, Ordering::Relaxed);
                return false;
            }
            now_ms.wrapping_sub(since - 1) >= after_ms
        })
    }

    /// At `max_users`, so that a new user is not refused while vacant ones take up the
    /// places: retires every partition `vacant` says is vacant now, without waiting for
    /// `retire_after` (unless retirement is off). The caller holds the sweep lock, as
    /// for a sweeper pass. Returns how many were retired.
    pub(crate) fn retire_vacant_now(&self, vacant: impl Fn(&Partition) -> bool) -> usize {
        if self.limits.retire_after.is_none() {
            return 0;
        }
        self.retire_where(vacant)
    }

    /// Retires the live partitions `due` picks that `Partition::retire` agrees to.
    fn retire_where(&self, mut due: impl FnMut(&Partition) -> bool) -> usize {
        let mut registry = lock(&self.registry);
        if registry.closed {
            return 0;
        }
        let mut leaving = Vec::new();
        registry.live.retain(|partition| {
            if !due(partition) || !partition.retire() {
                return true;
            }
            leaving.push(partition.clone());
            false
        });
        if leaving.is_empty() {
            return 0;
        }
        let mut map = UserMap::clone(&self.map.load());
        for partition in &leaving {
            map.remove(&**partition.user());
        }
        self.map.store(Arc::new(map));
        let retired = leaving.len();
        registry.spares.append(&mut leaving);
        self.retired.fetch_add(retired as u64, Ordering::Relaxed);
        retired
    }
}

/// A partition serial unique for the process's life, not just the pool's: a thread's
/// affinity entry may name a partition of one pool and a slot of another (see
/// `pool.rs`, `LastReturned`), and must never take one for the other. 0 is never used:
/// it marks "none". Relaxed: only uniqueness matters.
fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Registry {
    /// A spare nobody holds any more (its only `Arc` is ours), taken out of the list.
    fn take_spare(&mut self) -> Option<Arc<Partition>> {
        let i = self
            .spares
            .iter_mut()
            // `get_mut` succeeds only for the sole `Arc`, and synchronises with the
            // drops of the others (so what their holders did happened before the reuse).
            .position(|spare| Arc::get_mut(spare).is_some())?;
        Some(self.spares.swap_remove(i))
    }
}
