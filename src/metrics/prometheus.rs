//! [`PoolStats`] in the Prometheus text exposition format, version 0.0.4.
//!
//! [`render`] (or [`render_into`], to reuse a buffer) writes every field of a
//! [`PoolStats`] as `heliosdb_pool_*` metric families, in base units (seconds; counters
//! end in `_total`), each sample labelled `pool="<pool_name>"`. Serve the text with
//! `Content-Type: text/plain; version=0.0.4; charset=utf-8`.
//!
//! | family | type | labels | from |
//! |---|---|---|---|
//! | `heliosdb_pool_connections` | gauge | | `total_connections` |
//! | `heliosdb_pool_active_connections` | gauge | | `active_connections` |
//! | `heliosdb_pool_idle_connections` | gauge | | `idle_connections` |
//! | `heliosdb_pool_waiting` | gauge | | `waiting` |
//! | `heliosdb_pool_acquires_total` | counter | | `acquires` |
//! | `heliosdb_pool_acquire_timeouts_total` | counter | | `timeouts` |
//! | `heliosdb_pool_spin_acquires_total` | counter | | `spin_acquires` |
//! | `heliosdb_pool_users` | gauge | | `users.len()` |
//! | `heliosdb_pool_users_retired_total` | counter | | `users_retired` |
//! | `heliosdb_pool_user_connections` | gauge | `user` | `users[].total_connections` |
//! | `heliosdb_pool_user_active_connections` | gauge | `user` | `users[].active_connections` |
//! | `heliosdb_pool_user_idle_connections` | gauge | `user` | `users[].idle_connections` |
//! | `heliosdb_pool_user_waiting` | gauge | `user` | `users[].waiting` |
//! | `heliosdb_pool_user_acquire_timeouts_total` | counter | `user` | `users[].timeouts` |
//! | `heliosdb_pool_user_factory_errors_total` | counter | `user` | `users[].factory_errors` |
//! | `heliosdb_pool_user_last_factory_error_info` | gauge (1) | `user`, `error` | `users[].last_factory_error`, when set |
//! | `heliosdb_pool_user_connects_total` | counter | `user`, `result` (`ok`, `failed`) | `users[].factory_creates`, `.factory_errors` |
//! | `heliosdb_pool_user_connects_in_flight` | gauge | `user` | `users[].connects_in_flight` |
//! | `heliosdb_pool_user_connect_failures_in_a_row` | gauge | `user` | `users[].factory_backoff` (0 when `None`) |
//! | `heliosdb_pool_leaks_detected_total` | counter | | `leak_stats.leaks_detected` |
//! | `heliosdb_pool_tracked_borrows` | gauge | | `leak_stats.current_tracked` |
//! | `heliosdb_pool_leak_reports_total` | counter | `level` (`alert`, `critical`) | `leak_stats.alerts`, `.criticals` |
//! | `heliosdb_pool_leaks_returned_total` | counter | | `leak_stats.returned_after_leak` |
//! | `heliosdb_pool_evictions_total` | counter | `cause` (`idle`, `age`, `health`, `reclaimed`, `removed`, `discarded`, `detached`, `reset_failed`, `failover`) | `evictions` |
//! | `heliosdb_pool_health_checks_total` | counter | | `health_checks` |
//! | `heliosdb_pool_health_check_failures_total` | counter | | `health_failures` |
//! | `heliosdb_pool_factory_creates_total` | counter | | `factory_creates` |
//! | `heliosdb_pool_factory_errors_total` | counter | | `factory_errors` |
//! | `heliosdb_pool_connects_in_flight` | gauge | | `connects_in_flight` |
//! | `heliosdb_pool_acquire_wait_seconds` | histogram | `le` | `acquire_wait` |
//! | `heliosdb_pool_sweep_passes_total` | counter | | `sweep.passes` |
//! | `heliosdb_pool_sweep_last_duration_seconds` | gauge | | `sweep.last_duration` |
//! | `heliosdb_pool_sweep_last_completed_age_seconds` | gauge | | `sweep.completed_ago`; omitted when `None` |
//!
//! Per-user families are written even when there are no users (HELP and TYPE with no
//! sample, which the format allows). Label values are escaped (`\\`, `\"`, `\n`), so any
//! user name or pool name is safe. The histogram's `+Inf` bucket and `_count` are both
//! the sum of `acquire_wait.counts`, so they agree even for a hand-built snapshot.
//!
//! Rendering allocates only the output string; it takes no lock and may run on any
//! thread.

use std::fmt::{self, Display, Write};
use std::time::Duration;

use crate::metrics::{PoolStats, UserStats};

/// Renders `stats` of the pool named `pool_name` in the Prometheus text format 0.0.4.
///
/// ```
/// use heliosdb_pool::PoolStats;
/// use heliosdb_pool::metrics::prometheus;
///
/// let text = prometheus::render("main", &PoolStats::default());
/// assert!(text.contains("heliosdb_pool_connections{pool=\"main\"} 0\n"));
/// ```
pub fn render(pool_name: &str, stats: &PoolStats) -> String {
    let mut out = String::with_capacity(8 * 1024 + stats.users.len() * 1024);
    render_into(pool_name, stats, &mut out);
    out
}

/// Like [`render`], but appends to `out` (nothing in it is cleared), so one buffer can
/// be reused across scrapes.
///
/// Each call writes whole families with their `# HELP` and `# TYPE` lines, and a family
/// may be declared only once per exposition: one response holds one call's output, so
/// expose several pools on separate endpoints.
pub fn render_into(pool_name: &str, stats: &PoolStats, out: &mut String) {
    let mut w = Writer {
        out,
        pool: pool_name,
    };

    for (name, kind, help, value) in [
        (
            "heliosdb_pool_connections",
            Kind::Gauge,
            "Connections in the pool.",
            stats.total_connections as u64,
        ),
        (
            "heliosdb_pool_active_connections",
            Kind::Gauge,
            "Connections borrowed now.",
            stats.active_connections as u64,
        ),
        (
            "heliosdb_pool_idle_connections",
            Kind::Gauge,
            "Connections idle now.",
            stats.idle_connections as u64,
        ),
        (
            "heliosdb_pool_waiting",
            Kind::Gauge,
            "Callers waiting for a connection.",
            stats.waiting as u64,
        ),
        (
            "heliosdb_pool_acquires_total",
            Kind::Counter,
            "Borrows handed out since the pool was built.",
            stats.acquires,
        ),
        (
            "heliosdb_pool_acquire_timeouts_total",
            Kind::Counter,
            "Acquires that timed out.",
            stats.timeouts,
        ),
        (
            "heliosdb_pool_spin_acquires_total",
            Kind::Counter,
            "Blocking acquires served by their brief spin instead of queueing.",
            stats.spin_acquires,
        ),
        (
            "heliosdb_pool_users",
            Kind::Gauge,
            "Users the pool keeps now (at most max_users).",
            stats.users.len() as u64,
        ),
        (
            "heliosdb_pool_users_retired_total",
            Kind::Counter,
            "Users retired after a time with no connection and no waiter.",
            stats.users_retired,
        ),
    ] {
        w.single(name, kind, help, value);
    }

    type UserField = fn(&UserStats) -> u64;
    let user_families: [(&str, Kind, &str, UserField); 8] = [
        (
            "heliosdb_pool_user_connections",
            Kind::Gauge,
            "Connections the user holds.",
            |u| u.total_connections as u64,
        ),
        (
            "heliosdb_pool_user_active_connections",
            Kind::Gauge,
            "The user's connections borrowed now.",
            |u| u.active_connections as u64,
        ),
        (
            "heliosdb_pool_user_idle_connections",
            Kind::Gauge,
            "The user's connections idle now.",
            |u| u.idle_connections as u64,
        ),
        (
            "heliosdb_pool_user_waiting",
            Kind::Gauge,
            "Callers waiting for one of the user's connections.",
            |u| u.waiting as u64,
        ),
        (
            "heliosdb_pool_user_acquire_timeouts_total",
            Kind::Counter,
            "Acquires for the user that timed out.",
            |u| u.timeouts,
        ),
        (
            "heliosdb_pool_user_factory_errors_total",
            Kind::Counter,
            "Connections the factory failed to create for the user.",
            |u| u.factory_errors,
        ),
        (
            "heliosdb_pool_user_connects_in_flight",
            Kind::Gauge,
            "Factory connects running now for the user.",
            |u| u.connects_in_flight as u64,
        ),
        (
            "heliosdb_pool_user_connect_failures_in_a_row",
            Kind::Gauge,
            "The user's factory connects that failed in a row (0: the last one worked).",
            |u| u.factory_backoff.map_or(0, |b| u64::from(b.failures_in_a_row)),
        ),
    ];
    for (name, kind, help, field) in user_families {
        w.family(name, kind, help);
        for u in &stats.users {
            w.sample(name, &[("user", &u.user)], field(u));
        }
    }
    let name = "heliosdb_pool_user_connects_total";
    w.family(
        name,
        Kind::Counter,
        "Factory connects for the user, by result.",
    );
    for u in &stats.users {
        for (result, n) in [("ok", u.factory_creates), ("failed", u.factory_errors)] {
            w.sample(name, &[("user", &u.user), ("result", &result)], n);
        }
    }
    let name = "heliosdb_pool_user_last_factory_error_info";
    w.family(
        name,
        Kind::Gauge,
        "The factory's last error for the user (value 1), when it has failed.",
    );
    for u in &stats.users {
        if let Some(error) = &u.last_factory_error {
            w.sample(name, &[("user", &u.user), ("error", error)], 1);
        }
    }

    let leaks = &stats.leak_stats;
    w.single(
        "heliosdb_pool_leaks_detected_total",
        Kind::Counter,
        "Leaked borrows reported (each once, at its first level).",
        leaks.leaks_detected,
    );
    w.single(
        "heliosdb_pool_tracked_borrows",
        Kind::Gauge,
        "Borrows held now, tracked for leak detection.",
        leaks.current_tracked as u64,
    );
    w.labelled(
        "heliosdb_pool_leak_reports_total",
        Kind::Counter,
        "Leak reports, by level.",
        "level",
        [("alert", leaks.alerts), ("critical", leaks.criticals)],
    );
    w.single(
        "heliosdb_pool_leaks_returned_total",
        Kind::Counter,
        "Leaked borrows that were eventually returned.",
        leaks.returned_after_leak,
    );

    let ev = &stats.evictions;
    w.labelled(
        "heliosdb_pool_evictions_total",
        Kind::Counter,
        "Connections closed by the pool, by cause.",
        "cause",
        [
            ("idle", ev.idle),
            ("age", ev.age),
            ("health", ev.health),
            ("reclaimed", ev.reclaimed),
            ("removed", ev.removed),
            ("discarded", ev.discarded),
            ("detached", ev.detached),
            ("reset_failed", ev.reset_failed),
            ("failover", ev.failover),
        ],
    );

    for (name, help, value) in [
        (
            "heliosdb_pool_health_checks_total",
            "Health checks run.",
            stats.health_checks,
        ),
        (
            "heliosdb_pool_health_check_failures_total",
            "Health checks that failed (an error or a panic).",
            stats.health_failures,
        ),
        (
            "heliosdb_pool_factory_creates_total",
            "Connections the factory created.",
            stats.factory_creates,
        ),
        (
            "heliosdb_pool_factory_errors_total",
            "Factory calls that failed.",
            stats.factory_errors,
        ),
    ] {
        w.single(name, Kind::Counter, help, value);
    }

    w.single(
        "heliosdb_pool_connects_in_flight",
        Kind::Gauge,
        "Factory connects running now, all users.",
        stats.connects_in_flight as u64,
    );

    let wait = &stats.acquire_wait;
    let name = "heliosdb_pool_acquire_wait_seconds";
    w.family(
        name,
        Kind::Histogram,
        "How long acquires waited for a connection, in seconds.",
    );
    let mut cumulative = 0u64;
    for (i, &bound) in wait.bounds_us.iter().enumerate() {
        cumulative = cumulative.saturating_add(wait.counts.get(i).copied().unwrap_or(0));
        w.sample_suffixed(name, "_bucket", &[("le", &Micros(bound))], cumulative);
    }
    let count = wait
        .counts
        .iter()
        .fold(0u64, |acc, &c| acc.saturating_add(c));
    w.sample_suffixed(name, "_bucket", &[("le", &"+Inf")], count);
    w.sample_suffixed(name, "_sum", &[], Micros(wait.sum_us));
    w.sample_suffixed(name, "_count", &[], count);

    let sweep = &stats.sweep;
    w.single(
        "heliosdb_pool_sweep_passes_total",
        Kind::Counter,
        "Sweeper passes completed.",
        sweep.passes,
    );
    w.single(
        "heliosdb_pool_sweep_last_duration_seconds",
        Kind::Gauge,
        "Duration of the last completed sweeper pass, in seconds.",
        Seconds(sweep.last_duration),
    );
    if let Some(ago) = sweep.completed_ago {
        w.single(
            "heliosdb_pool_sweep_last_completed_age_seconds",
            Kind::Gauge,
            "Seconds since the last sweeper pass completed (grows when the sweeper stalls).",
            Seconds(ago),
        );
    }
}

/// A metric family's type, as written on its `# TYPE` line.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The one mechanism that writes families and samples; every sample gets the `pool`
/// label first. Writing to a `String` cannot fail, so `fmt` results are ignored.
struct Writer<'a> {
    out: &'a mut String,
    pool: &'a str,
}

impl Writer<'_> {
    /// Writes a family's `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_into(self.out, help, false);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
    }

    /// A family with one sample, labelled only with `pool`.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per `(label value, value)`, all under one label name.
    fn labelled<const N: usize>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        values: [(&str, u64); N],
    ) {
        self.family(name, kind, help);
        for (label_value, value) in values {
            self.sample(name, &[(label, &label_value)], value);
        }
    }

    /// One sample of family `name`.
    fn sample(&mut self, name: &str, labels: &[(&str, &dyn Display)], value: impl Display) {
        self.sample_suffixed(name, "", labels, value);
    }

    /// One sample named `name` + `suffix` (`_bucket`, `_sum`, `_count` of a histogram).
    fn sample_suffixed(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &dyn Display)],
        value: impl Display,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        self.out.push_str("{pool=\"");
        escape_into(self.out, self.pool, true);
        self.out.push('"');
        for (label, label_value) in labels {
            self.out.push(',');
            self.out.push_str(label);
            self.out.push_str("=\"");
            let _ = write!(EscapeLabel(self.out), "{label_value}");
            self.out.push('"');
        }
        let _ = writeln!(self.out, "}} {value}");
    }
}

/// Appends `text` escaped for a label value (`quote`: `\\`, `\"`, `\n`) or a HELP line
/// (`\\`, `\n`).
fn escape_into(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A `fmt::Write` that escapes what it is given as a label value, so any `Display`
/// can be written into a label without an intermediate string.
struct EscapeLabel<'a>(&'a mut String);

impl Write for EscapeLabel<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s, true);
        Ok(())
    }
}

/// Microseconds displayed as seconds (see [`Seconds`]).
struct Micros(u64);

impl Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_seconds(f, self.0 / 1_000_000, (self.0 % 1_000_000) as u32 * 1_000)
    }
}

/// A duration displayed as seconds, exactly, in the shortest decimal form: `0`,
/// `0.0001`, `2.5`, `61.000000001` (no exponent, no trailing zeros), as the Prometheus
/// clients format `le` bounds, so bucket labels stay stable across versions.
struct Seconds(Duration);

impl Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_seconds(f, self.0.as_secs(), self.0.subsec_nanos())
    }
}

fn write_seconds(f: &mut fmt::Formatter<'_>, secs: u64, nanos: u32) -> fmt::Result {
    write!(f, "{secs}")?;
    if nanos != 0 {
        let mut frac = nanos;
        let mut width = 9;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(f, ".{frac:0width$}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_and_shortest() {
        let s = |d: Duration| Seconds(d).to_string();
        assert_eq!(s(Duration::ZERO), "0");
        assert_eq!(s(Duration::from_micros(100)), "0.0001");
        assert_eq!(s(Duration::from_millis(2_500)), "2.5");
        assert_eq!(s(Duration::from_secs(60)), "60");
        assert_eq!(s(Duration::new(61, 1)), "61.000000001");
        assert_eq!(s(Duration::new(0, 120_000_000)), "0.12");
        assert_eq!(s(Duration::MAX), "18446744073709551615.999999999");
        assert_eq!(Micros(1).to_string(), "0.000001");
        assert_eq!(Micros(u64::MAX).to_string(), "18446744073709.551615");
        // The bucket bounds read back as the same number of seconds.
        for &us in &crate::metrics::WAIT_BUCKETS_US {
            let text = Micros(us).to_string();
            let back: f64 = text.parse().unwrap();
            assert_eq!((back * 1e6).round() as u64, us, "{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        let mut w = Writer {
            out: &mut out,
            pool: "p\"\\\n",
        };
        w.sample("m", &[("user", &"a\\b\"c\nd")], 1);
        assert_eq!(out, "m{pool=\"p\\\"\\\\\\n\",user=\"a\\\\b\\\"c\\nd\"} 1\n");
    }

    #[test]
    fn help_text_is_escaped_but_quotes_kept() {
        let mut out = String::new();
        Writer {
            out: &mut out,
            pool: "p",
        }
        .family("m", Kind::Gauge, "a \"b\" \\ c\nd");
        assert_eq!(out, "# HELP m a \"b\" \\\\ c\\nd\n# TYPE m gauge\n");
    }
}
