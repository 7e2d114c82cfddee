//! The crate's one error type and the stable C status code of each variant.
//!
//! Every fallible operation in the crate, Rust or C, reports an [`Error`]. The C ABI maps
//! each variant to a [`Status`] through [`Error::status`]; status values are part of the
//! ABI and are never reused or renumbered.

use std::fmt;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable status codes returned by every `extern "C"` function.
///
/// `HELIOSDB_OK` is zero; every other value names one failure. Values are append-only:
/// a value, once released, keeps its meaning forever.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The call succeeded.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 2,
    /// The configuration contradicts itself or has an out-of-range value.
    InvalidConfig = 3,
    /// The pool already holds `max_connections` connections.
    PoolFull = 4,
    /// The user already holds `max_per_user` connections.
    UserAtCapacity = 5,
    /// No connection was ever registered for this user.
    UnknownUser = 6,
    /// No connection became available within the acquire timeout.
    Timeout = 7,
    /// A non-waiting acquire found no idle connection.
    NoIdleConnection = 8,
    /// The pool is closed.
    Closed = 9,
    /// A handle is stale: already released, never issued, or from an earlier borrow.
    StaleHandle = 10,
    /// The borrow was reclaimed as a critical leak; the connection has been closed.
    Reclaimed = 11,
    /// No connection with this id is in the pool.
    UnknownConnection = 12,
    /// The resource id is already tracked.
    DuplicateResource = 13,
    /// The resource id is not tracked.
    UnknownResource = 14,
    /// The tracker already holds its maximum number of resources.
    TrackingLimit = 15,
    /// The caller's buffer is too small; the needed size was reported.
    BufferTooSmall = 16,
    /// A user callback (factory, health check) reported a failure.
    CallbackFailed = 17,
    /// A handle belongs to another pool.
    ForeignHandle = 18,
    /// A versioned struct carried a size or version this library does not understand.
    UnsupportedVersion = 19,
    /// A Rust panic was caught at the C boundary.
    Panic = 20,
    /// An argument was out of range.
    InvalidArgument = 21,
    /// The call was made from a context that cannot make it (e.g. a sweep requested
    /// from a sweeper callback, which would wait for itself).
    Reentrant = 22,
    /// The pool already has `max_users` users; a new one cannot be created.
    TooManyUsers = 23,
    /// A user name is longer than `max_user_name_len`.
    UserNameTooLong = 24,
}

impl Status {
    /// A static, human-readable description of the status.
    pub const fn description(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NullArgument => "a required pointer argument was NULL",
            Status::InvalidUtf8 => "a string argument was not valid UTF-8",
            Status::InvalidConfig => "the configuration is invalid",
            Status::PoolFull => "the pool is at max_connections",
            Status::UserAtCapacity => "the user is at max_per_user",
            Status::UnknownUser => "no connection is registered for this user",
            Status::Timeout => "timed out waiting for a connection",
            Status::NoIdleConnection => "no idle connection is available",
            Status::Closed => "the pool is closed",
            Status::StaleHandle => "the handle is stale (released, doubled or never issued)",
            Status::Reclaimed => "the borrow was reclaimed as a critical leak",
            Status::UnknownConnection => "no such connection in the pool",
            Status::DuplicateResource => "the resource is already tracked",
            Status::UnknownResource => "the resource is not tracked",
            Status::TrackingLimit => "the tracker is at max_tracked_resources",
            Status::BufferTooSmall => "the buffer is too small",
            Status::CallbackFailed => "a callback reported a failure",
            Status::ForeignHandle => "the handle belongs to another pool",
            Status::UnsupportedVersion => "unsupported struct size or version",
            Status::Panic => "a panic was caught at the C boundary",
            Status::InvalidArgument => "an argument is out of range",
            Status::Reentrant => "the call cannot be made from this context (a pool callback)",
            Status::TooManyUsers => "the pool is at max_users",
            Status::UserNameTooLong => "the user name is longer than max_user_name_len",
        }
    }
}

/// Every failure the crate reports.
///
/// Variants carry the context a reader needs to act on the failure (which user, how long
/// it waited, what the pool looked like). `Display` renders one readable sentence.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A configuration field is out of range or contradicts another.
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The pool already holds `max_connections` connections.
    PoolFull {
        /// The configured `max_connections`.
        max_connections: usize,
    },
    /// The user already holds `max_per_user` connections.
    UserAtCapacity {
        /// The user.
        user: String,
        /// The configured `max_per_user`.
        max_per_user: usize,
    },
    /// No connection was ever registered for this user, and no factory can make one.
    UnknownUser {
        /// The user.
        user: String,
    },
    /// No connection became available within the acquire timeout.
    Timeout {
        /// The user that waited.
        user: String,
        /// How long the caller waited.
        waited: Duration,
        /// The user's borrowed connections when the wait ended.
        in_use: usize,
        /// The user's idle connections when the wait ended.
        idle: usize,
        /// The last error the connection factory reported for this user, if any.
        last_factory_error: Option<String>,
        /// The user's factory backoff when the wait ended, if its last connect failed.
        /// Boxed: it keeps `Error` (returned by every release) as small as it was,
        /// which the C release path's instruction count depends on.
        factory_backoff: Option<Box<crate::metrics::FactoryBackoff>>,
    },
    /// A non-waiting acquire found no idle connection for the user.
    NoIdleConnection {
        /// The user (the pool's own copy of the name: a miss allocates nothing).
        user: std::sync::Arc<str>,
        /// The user's borrowed connections at the time.
        in_use: usize,
    },
    /// The pool is closed: no new borrows are handed out.
    Closed,
    /// The handle does not name a live borrow: it was released already, never issued,
    /// or belongs to an earlier borrow of the same slot.
    StaleHandle {
        /// The connection the handle named.
        connection_id: u64,
        /// The borrow generation the handle carried.
        generation: u64,
    },
    /// The borrow was reclaimed as a critical leak; the connection has been closed.
    Reclaimed {
        /// The connection that was reclaimed.
        connection_id: u64,
    },
    /// No connection with this id is in the pool.
    UnknownConnection {
        /// The id that was presented.
        connection_id: u64,
    },
    /// The resource id is already tracked by the leak detector.
    DuplicateResource {
        /// The resource id.
        id: String,
    },
    /// The resource id is not tracked by the leak detector.
    UnknownResource {
        /// The resource id.
        id: String,
    },
    /// The leak detector already tracks `max_tracked_resources` resources.
    TrackingLimit {
        /// The configured limit.
        max_tracked_resources: usize,
    },
    /// A caller-provided buffer is too small.
    BufferTooSmall {
        /// The size that would have been needed, in bytes or elements.
        needed: usize,
    },
    /// A user callback (connection factory, health check) failed.
    CallbackFailed {
        /// Which callback.
        callback: &'static str,
        /// What it reported.
        message: String,
    },
    /// A handle from another pool was presented.
    ForeignHandle,
    /// A required pointer argument was NULL (C boundary).
    NullArgument {
        /// The parameter's name.
        argument: &'static str,
    },
    /// A string argument was not valid UTF-8 (C boundary).
    InvalidUtf8 {
        /// The parameter's name.
        argument: &'static str,
    },
    /// A versioned struct carried a size or version this library does not understand.
    UnsupportedVersion {
        /// The struct's name.
        what: &'static str,
        /// The size or version found.
        found: u64,
    },
    /// An argument was out of range.
    InvalidArgument {
        /// The parameter's name.
        argument: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A panic was caught at the C boundary.
    Panic {
        /// The panic's message, when it was a string.
        message: String,
    },
    /// A call was made from a context that cannot make it.
    Reentrant {
        /// The call.
        call: &'static str,
        /// Why it cannot be made there.
        reason: &'static str,
    },
    /// The pool already has `max_users` users, so a new user (a first connection, or
    /// with a factory a first acquire) was refused. Users come back as they are
    /// retired (`PoolBuilder::retire_users_after`).
    TooManyUsers {
        /// The configured `max_users`.
        max_users: usize,
    },
    /// A user name is longer than `max_user_name_len` (the name itself is not kept:
    /// it may be huge).
    UserNameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The configured `max_user_name_len`.
        max: usize,
    },
}

impl Error {
    /// The stable C status code for this error.
    pub const fn status(&self) -> Status {
        match self {
            Error::InvalidConfig { .. } => Status::InvalidConfig,
            Error::PoolFull { .. } => Status::PoolFull,
            Error::UserAtCapacity { .. } => Status::UserAtCapacity,
            Error::UnknownUser { .. } => Status::UnknownUser,
            Error::Timeout { .. } => Status::Timeout,
            Error::NoIdleConnection { .. } => Status::NoIdleConnection,
            Error::Closed => Status::Closed,
            Error::StaleHandle { .. } => Status::StaleHandle,
            Error::Reclaimed { .. } => Status::Reclaimed,
            Error::UnknownConnection { .. } => Status::UnknownConnection,
            Error::DuplicateResource { .. } => Status::DuplicateResource,
            Error::UnknownResource { .. } => Status::UnknownResource,
            Error::TrackingLimit { .. } => Status::TrackingLimit,
            Error::BufferTooSmall { .. } => Status::BufferTooSmall,
            Error::CallbackFailed { .. } => Status::CallbackFailed,
            Error::ForeignHandle => Status::ForeignHandle,
            Error::NullArgument { .. } => Status::NullArgument,
            Error::InvalidUtf8 { .. } => Status::InvalidUtf8,
            Error::UnsupportedVersion { .. } => Status::UnsupportedVersion,
            Error::InvalidArgument { .. } => Status::InvalidArgument,
            Error::Panic { .. } => Status::Panic,
            Error::Reentrant { .. } => Status::Reentrant,
            Error::TooManyUsers { .. } => Status::TooManyUsers,
            Error::UserNameTooLong { .. } => Status::UserNameTooLong,
        }
    }

    pub(crate) fn invalid_config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid configuration: {field}: {reason}")
            }
            Error::PoolFull { max_connections } => {
                write!(f, "pool is full: max_connections = {max_connections}")
            }
            Error::UserAtCapacity { user, max_per_user } => write!(
                f,
                "user {user:?} already has max_per_user = {max_per_user} connections"
            ),
            Error::UnknownUser { user } => {
                write!(f, "no connection is registered for user {user:?}")
            }
            Error::Timeout {
                user,
                waited,
                in_use,
                idle,
                last_factory_error,
                factory_backoff,
            } => {
                write!(
                    f,
                    "timed out after {} ms waiting for a connection for user {user:?} \
                     ({in_use} in use, {idle} idle)",
                    waited.as_millis()
                )?;
                if let Some(e) = last_factory_error {
                    write!(f, "; last connection factory error: {e}")?;
                }
                if let Some(backoff) = factory_backoff {
                    write!(f, " ({backoff})")?;
                }
                Ok(())
            }
            Error::NoIdleConnection { user, in_use } => {
                write!(f, "no idle connection for user {user:?} ({in_use} in use)")
            }
            Error::Closed => f.write_str("the pool is closed"),
            Error::StaleHandle {
                connection_id,
                generation,
            } => write!(
                f,
                "the handle of connection {connection_id} at generation {generation} is stale: \
                 released already, never issued, or from an earlier borrow"
            ),
            Error::Reclaimed { connection_id } => write!(
                f,
                "connection {connection_id} was reclaimed as a critical leak and has been closed"
            ),
            Error::UnknownConnection { connection_id } => {
                write!(f, "no connection with id {connection_id} in the pool")
            }
            Error::DuplicateResource { id } => write!(f, "resource {id:?} is already tracked"),
            Error::UnknownResource { id } => write!(f, "resource {id:?} is not tracked"),
            Error::TrackingLimit {
                max_tracked_resources,
            } => write!(
                f,
                "leak detector is at max_tracked_resources = {max_tracked_resources}"
            ),
            Error::BufferTooSmall { needed } => {
                write!(f, "buffer too small: {needed} needed")
            }
            Error::CallbackFailed { callback, message } => {
                write!(f, "{callback} callback failed: {message}")
            }
            Error::ForeignHandle => f.write_str("the handle belongs to another pool"),
            Error::NullArgument { argument } => write!(f, "argument `{argument}` is NULL"),
            Error::InvalidUtf8 { argument } => {
                write!(f, "argument `{argument}` is not valid UTF-8")
            }
            Error::UnsupportedVersion { what, found } => {
                write!(f, "{what}: unsupported size or version {found}")
            }
            Error::InvalidArgument { argument, reason } => {
                write!(f, "argument `{argument}`: {reason}")
            }
            Error::Panic { message } => write!(f, "panic caught at the C boundary: {message}"),
            Error::Reentrant { call, reason } => {
                write!(f, "{call} cannot be called here: {reason}")
            }
            Error::TooManyUsers { max_users } => write!(
                f,
                "the pool already has max_users ({max_users}) users; a user is retired \
                 after a time with no connection and no waiter (retire_users_after)"
            ),
            Error::UserNameTooLong { len, max } => write!(
                f,
                "the user name is {len} bytes long, over max_user_name_len ({max})"
            ),
        }
    }
}

impl std::error::Error for Error {}
