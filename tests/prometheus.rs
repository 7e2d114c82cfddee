//! The Prometheus text exposition of `PoolStats`, checked by parsing it back with a
//! small strict parser of the 0.0.4 text format (written here, so the test depends on
//! nothing but the output). The parser's own tests feed it broken expositions, so a
//! renderer bug of those kinds (a wrong escape, a family declared twice, buckets that
//! are not cumulative...) is known to fail the render tests.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use heliosdb_pool::metrics::prometheus::{render, render_into};
use heliosdb_pool::metrics::{
    Evictions, FactoryBackoff, LeakStats, PoolStats, SweepStats, UserStats, WAIT_BUCKETS_US,
    WaitHistogramSnapshot,
};

// ---------------------------------------------------------------------------------------
// The strict parser.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Label name/value pairs, in the order written.
type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    /// The family it belongs to (`name` less `_bucket`/`_sum`/`_count` for histograms).
    family: String,
    labels: Labels,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name to (help text, type), in order of declaration.
    families: Vec<(String, String, Kind)>,
    samples: Vec<Sample>,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Prometheus float syntax: Go's ParseFloat plus `+Inf`/`-Inf`/`NaN`. Rust's parser
/// accepts a superset (`inf`, `infinity`), which a strict reader must refuse.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
            && !text.is_empty() =>
        {
            text.parse::<f64>()
                .map_err(|e| format!("bad value {text:?}: {e}"))
        }
        _ => Err(format!("bad value {text:?}")),
    }
}

/// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} twice"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name} value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name} value not terminated")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape \\{other:?} in label {name}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
            if rest.starts_with('}') {
                return Err("trailing comma in labels".into());
            }
        } else if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        } else {
            return Err(format!("expected , or }} after label {name}"));
        }
    }
}

/// HELP text unescaping: only `\\` and `\n` are escapes.
fn unescape_help(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                other => return Err(format!("bad escape \\{other:?} in HELP")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Parses and validates a whole exposition: syntax, one HELP and one TYPE per family
/// before its samples, contiguous families, unique series, histogram shape.
fn parse(text: &str) -> Result<Exposition, String> {
    let body = text
        .strip_suffix('\n')
        .ok_or("exposition must end with a newline")?;
    let mut help: HashMap<String, String> = HashMap::new();
    let mut types: HashMap<String, Kind> = HashMap::new();
    let mut exposition = Exposition::default();
    let mut finished_families: HashSet<String> = HashSet::new();
    let mut current_family: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();

    for (n, line) in body.split('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let (keyword, rest) = comment
                .split_once(' ')
                .ok_or_else(|| at("bad comment".into()))?;
            let (name, arg) = rest.split_once(' ').ok_or_else(|| at("no text".into()))?;
            if !is_metric_name(name) {
                return Err(at(format!("bad family name {name:?}")));
            }
            if finished_families.contains(name)
                || exposition.samples.iter().any(|s| s.family == name)
            {
                return Err(at(format!("{name} declared after its samples")));
            }
            match keyword {
                "HELP" => {
                    if help
                        .insert(name.to_string(), unescape_help(arg).map_err(at)?)
                        .is_some()
                    {
                        return Err(at(format!("second HELP for {name}")));
                    }
                }
                "TYPE" => {
                    let kind = match arg {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        _ => return Err(at(format!("unexpected type {arg:?}"))),
                    };
                    if types.insert(name.to_string(), kind).is_some() {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    exposition
                        .families
                        .push((name.to_string(), String::new(), kind));
                }
                _ => return Err(at(format!("unknown comment keyword {keyword:?}"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("stray comment".into()));
        }

        // A sample: name{labels} value (no timestamp).
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value_text = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before value".into()))?;
        if value_text.contains(' ') {
            return Err(at("timestamps or trailing text are not expected".into()));
        }
        let value = parse_value(value_text).map_err(at)?;

        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| types.get(*base) == Some(&Kind::Histogram))
            .unwrap_or(name)
            .to_string();
        let Some(&kind) = types.get(&family) else {
            return Err(at(format!("sample before TYPE of {family}")));
        };
        if !help.contains_key(&family) {
            return Err(at(format!("sample before HELP of {family}")));
        }
        if kind == Kind::Histogram && name == family {
            return Err(at("histogram sample without _bucket/_sum/_count".into()));
        }
        if kind != Kind::Histogram && labels.iter().any(|(n, _)| n == "le") {
            return Err(at("le label outside a histogram".into()));
        }
        if current_family.as_deref() != Some(&family) {
            if finished_families.contains(&family) {
                return Err(at(format!("samples of {family} are not contiguous")));
            }
            if let Some(previous) = current_family.replace(family.clone()) {
                finished_families.insert(previous);
            }
        }
        let mut key_labels = labels.clone();
        key_labels.sort();
        if !series.insert(format!("{name}{key_labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        exposition.samples.push(Sample {
            name: name.to_string(),
            family,
            labels,
            value,
        });
    }

    for (name, text, _) in &mut exposition.families {
        *text = help
            .remove(name.as_str())
            .ok_or_else(|| format!("TYPE without HELP for {name}"))?;
    }
    if let Some(name) = help.keys().next() {
        return Err(format!("HELP without TYPE for {name}"));
    }
    check_histograms(&exposition)?;
    Ok(exposition)
}

/// Every histogram series: `le` strictly increasing and ending in `+Inf`, counts
/// cumulative (non-decreasing), `+Inf` == `_count`, and a `_sum`.
fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (family, _, kind) in &exposition.families {
        if *kind != Kind::Histogram {
            continue;
        }
        // Group by the labels other than `le`.
        let mut groups: Vec<(Labels, Vec<&Sample>)> = Vec::new();
        for s in exposition.samples.iter().filter(|s| &s.family == family) {
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(n, _)| n != "le")
                .cloned()
                .collect();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(s),
                None => groups.push((key, vec![s])),
            }
        }
        for (key, samples) in groups {
            let of = |suffix: &str| -> Vec<&Sample> {
                let name = format!("{family}{suffix}");
                samples.iter().copied().filter(|s| s.name == name).collect()
            };
            let (buckets, sums, counts) = (of("_bucket"), of("_sum"), of("_count"));
            if sums.len() != 1 || counts.len() != 1 {
                return Err(format!("{family}{key:?}: needs one _sum and one _count"));
            }
            let mut last: Option<(f64, f64)> = None;
            for b in &buckets {
                let le = parse_value(
                    b.label("le")
                        .ok_or(format!("{family}: bucket without le"))?,
                )?;
                if b.value < 0.0 || b.value.fract() != 0.0 {
                    return Err(format!("{family}: bucket count {} not a count", b.value));
                }
                if let Some((prev_le, prev_count)) = last {
                    if le <= prev_le {
                        return Err(format!("{family}: le {le} after {prev_le}"));
                    }
                    if b.value < prev_count {
                        return Err(format!("{family}: buckets not cumulative at le {le}"));
                    }
                }
                last = Some((le, b.value));
            }
            match last {
                Some((le, inf_count)) if le == f64::INFINITY => {
                    if inf_count != counts[0].value {
                        return Err(format!(
                            "{family}: +Inf bucket {inf_count} != _count {}",
                            counts[0].value
                        ));
                    }
                }
                _ => return Err(format!("{family}: no +Inf bucket")),
            }
            if sums[0].value < 0.0 {
                return Err(format!("{family}: negative _sum"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The fixtures and the checks shared by the render tests.

const POOL: &str = "orders \"eu\" \\ primary";
const USER_A: &str = "alice";
/// A user name with every character that needs escaping in a label value.
const USER_B: &str = "bob \"the\" \\admin\\\nsecond line";

fn full_stats() -> PoolStats {
    let mut acquire_wait = WaitHistogramSnapshot::default();
    for (i, c) in acquire_wait.counts.iter_mut().enumerate() {
        *c = (i as u64 * 7) % 5 + 1; // every bucket non-empty, not monotonic
    }
    acquire_wait.sum_us = 123_456_789;
    acquire_wait.count = acquire_wait.counts.iter().sum();
    acquire_wait.add_immediate(1000);
    PoolStats {
        total_connections: 11,
        active_connections: 7,
        idle_connections: 4,
        waiting: 3,
        acquires: 100_001,
        timeouts: 17,
        spin_acquires: 29,
        users: vec![
            UserStats {
                user: USER_A.into(),
                total_connections: 6,
                active_connections: 5,
                idle_connections: 1,
                waiting: 2,
                timeouts: 13,
                factory_errors: 0,
                last_factory_error: None,
                factory_creates: 12,
                connects_in_flight: 0,
                factory_backoff: None,
            },
            UserStats {
                user: USER_B.into(),
                total_connections: 5,
                active_connections: 2,
                idle_connections: 3,
                waiting: 1,
                timeouts: 4,
                factory_errors: 9,
                last_factory_error: Some("connection refused: \"db\" at \\\\host\nretrying".into()),
                factory_creates: 3,
                connects_in_flight: 2,
                factory_backoff: Some(FactoryBackoff {
                    failures_in_a_row: 5,
                    next_retry_in: Duration::from_millis(3_200),
                }),
            },
        ],
        users_retired: 5,
        leak_stats: LeakStats {
            leaks_detected: 21,
            current_tracked: 8,
            alerts: 19,
            criticals: 2,
            returned_after_leak: 15,
        },
        evictions: Evictions {
            idle: 31,
            age: 32,
            health: 33,
            reclaimed: 34,
            removed: 35,
            discarded: 36,
            detached: 37,
            reset_failed: 38,
            failover: 39,
        },
        health_checks: 501,
        health_failures: 23,
        factory_creates: 41,
        factory_errors: 42,
        connects_in_flight: 2,
        acquire_wait,
        sweep: SweepStats {
            passes: 77,
            last_duration: Duration::from_micros(1_500),
            completed_ago: Some(Duration::from_millis(2_250)),
        },
    }
}

/// Parses `text` and applies the checks every rendering must pass.
fn parse_valid(text: &str) -> Exposition {
    let exposition = parse(text).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{text}"));
    for (name, help, kind) in &exposition.families {
        assert!(name.starts_with("heliosdb_pool_"), "{name}");
        assert!(!help.trim().is_empty(), "{name} has an empty HELP");
        assert_eq!(
            *kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
    }
    for s in &exposition.samples {
        assert_eq!(
            s.labels.first().map(|(n, v)| (n.as_str(), v.as_str())),
            Some(("pool", POOL)),
            "{s:?}"
        );
        assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
    }
    exposition
}

/// The value of the one sample named `name` whose labels besides `pool` are `labels`.
fn value(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = exposition
        .samples
        .iter()
        .filter(|s| {
            s.name == name
                && s.labels.len() == labels.len() + 1
                && labels.iter().all(|(n, v)| s.label(n) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

// ---------------------------------------------------------------------------------------
// The render tests.

#[test]
fn every_field_is_rendered_and_parses_back() {
    let stats = full_stats();
    let text = render(POOL, &stats);
    let e = parse_valid(&text);

    let v = |name: &str| value(&e, name, &[]);
    assert_eq!(v("heliosdb_pool_connections"), 11.0);
    assert_eq!(v("heliosdb_pool_active_connections"), 7.0);
    assert_eq!(v("heliosdb_pool_idle_connections"), 4.0);
    assert_eq!(v("heliosdb_pool_waiting"), 3.0);
    assert_eq!(v("heliosdb_pool_acquires_total"), 100_001.0);
    assert_eq!(v("heliosdb_pool_acquire_timeouts_total"), 17.0);
    assert_eq!(v("heliosdb_pool_spin_acquires_total"), 29.0);
    assert_eq!(v("heliosdb_pool_users"), 2.0);
    assert_eq!(v("heliosdb_pool_users_retired_total"), 5.0);
    assert_eq!(v("heliosdb_pool_leaks_detected_total"), 21.0);
    assert_eq!(v("heliosdb_pool_tracked_borrows"), 8.0);
    assert_eq!(v("heliosdb_pool_leaks_returned_total"), 15.0);
    assert_eq!(v("heliosdb_pool_health_checks_total"), 501.0);
    assert_eq!(v("heliosdb_pool_health_check_failures_total"), 23.0);
    assert_eq!(v("heliosdb_pool_factory_creates_total"), 41.0);
    assert_eq!(v("heliosdb_pool_factory_errors_total"), 42.0);
    assert_eq!(v("heliosdb_pool_connects_in_flight"), 2.0);
    assert_eq!(v("heliosdb_pool_sweep_passes_total"), 77.0);
    assert_eq!(v("heliosdb_pool_sweep_last_duration_seconds"), 0.0015);
    assert_eq!(v("heliosdb_pool_sweep_last_completed_age_seconds"), 2.25);

    // Per user, the names round-trip through the escaping.
    let user = |name: &str, u: &str| value(&e, name, &[("user", u)]);
    for (u, total, active, idle, waiting, timeouts, errors) in [
        (USER_A, 6.0, 5.0, 1.0, 2.0, 13.0, 0.0),
        (USER_B, 5.0, 2.0, 3.0, 1.0, 4.0, 9.0),
    ] {
        assert_eq!(user("heliosdb_pool_user_connections", u), total);
        assert_eq!(user("heliosdb_pool_user_active_connections", u), active);
        assert_eq!(user("heliosdb_pool_user_idle_connections", u), idle);
        assert_eq!(user("heliosdb_pool_user_waiting", u), waiting);
        assert_eq!(
            user("heliosdb_pool_user_acquire_timeouts_total", u),
            timeouts
        );
        assert_eq!(user("heliosdb_pool_user_factory_errors_total", u), errors);
    }
    for (u, ok, failed, in_flight, in_a_row) in
        [(USER_A, 12.0, 0.0, 0.0, 0.0), (USER_B, 3.0, 9.0, 2.0, 5.0)]
    {
        let connects = |result: &str| {
            value(
                &e,
                "heliosdb_pool_user_connects_total",
                &[("user", u), ("result", result)],
            )
        };
        assert_eq!((connects("ok"), connects("failed")), (ok, failed));
        assert_eq!(user("heliosdb_pool_user_connects_in_flight", u), in_flight);
        assert_eq!(
            user("heliosdb_pool_user_connect_failures_in_a_row", u),
            in_a_row
        );
    }
    let users: HashSet<&str> = e.samples.iter().filter_map(|s| s.label("user")).collect();
    assert_eq!(users, HashSet::from([USER_A, USER_B]));
    let error = stats.users[1].last_factory_error.as_deref().unwrap();
    assert_eq!(
        value(
            &e,
            "heliosdb_pool_user_last_factory_error_info",
            &[("user", USER_B), ("error", error)]
        ),
        1.0
    );
    assert!(
        !e.samples
            .iter()
            .any(|s| s.name == "heliosdb_pool_user_last_factory_error_info"
                && s.label("user") == Some(USER_A)),
        "no error sample for a user without an error"
    );

    for (level, n) in [("alert", 19.0), ("critical", 2.0)] {
        assert_eq!(
            value(&e, "heliosdb_pool_leak_reports_total", &[("level", level)]),
            n
        );
    }
    for (cause, n) in [
        ("idle", 31.0),
        ("age", 32.0),
        ("health", 33.0),
        ("reclaimed", 34.0),
        ("removed", 35.0),
        ("discarded", 36.0),
        ("detached", 37.0),
        ("reset_failed", 38.0),
        ("failover", 39.0),
    ] {
        assert_eq!(
            value(&e, "heliosdb_pool_evictions_total", &[("cause", cause)]),
            n
        );
    }

    // The histogram, in seconds, cumulative; the parser checked the shape.
    let wait = &stats.acquire_wait;
    let cumulative = wait.cumulative();
    for (i, &bound) in WAIT_BUCKETS_US.iter().enumerate() {
        let le = format!("{}", bound as f64 / 1e6);
        let bucket = e
            .samples
            .iter()
            .find(|s| {
                s.name == "heliosdb_pool_acquire_wait_seconds_bucket"
                    && s.label("le").and_then(|l| parse_value(l).ok()) == Some(bound as f64 / 1e6)
            })
            .unwrap_or_else(|| panic!("no bucket le={le}"));
        assert_eq!(bucket.value, cumulative[i] as f64, "le={le}");
    }
    assert_eq!(
        value(
            &e,
            "heliosdb_pool_acquire_wait_seconds_bucket",
            &[("le", "+Inf")]
        ),
        wait.count as f64
    );
    assert_eq!(
        value(&e, "heliosdb_pool_acquire_wait_seconds_count", &[]),
        wait.count as f64
    );
    assert_eq!(
        value(&e, "heliosdb_pool_acquire_wait_seconds_sum", &[]),
        123.456789
    );
    assert_eq!(
        value(
            &e,
            "heliosdb_pool_acquire_wait_seconds_bucket",
            &[("le", "0.0001")]
        ),
        1001.0,
        "the immediate acquires are in the first bucket"
    );

    // Every family is there (a field forgotten by the renderer shows here).
    let families: HashSet<&str> = e.families.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(families.len(), 33, "{families:?}");
    // Every family has samples when every field is set.
    for f in &families {
        assert!(
            e.samples.iter().any(|s| s.family == *f),
            "{f} has no sample"
        );
    }
}

#[test]
fn default_stats_render_valid_output() {
    let text = render(POOL, &PoolStats::default());
    let e = parse_valid(&text);
    assert_eq!(value(&e, "heliosdb_pool_connections", &[]), 0.0);
    assert_eq!(
        value(&e, "heliosdb_pool_acquire_wait_seconds_count", &[]),
        0.0
    );
    assert_eq!(
        value(
            &e,
            "heliosdb_pool_acquire_wait_seconds_bucket",
            &[("le", "+Inf")]
        ),
        0.0
    );
    assert_eq!(
        value(&e, "heliosdb_pool_evictions_total", &[("cause", "idle")]),
        0.0
    );
    assert!(e.samples.iter().all(|s| s.label("user").is_none()));
    // No completed sweep: the age is omitted, the rest is there.
    assert!(!text.contains("heliosdb_pool_sweep_last_completed_age_seconds"));
    assert_eq!(value(&e, "heliosdb_pool_sweep_passes_total", &[]), 0.0);
    assert_eq!(
        e.samples
            .iter()
            .filter(|s| s.name == "heliosdb_pool_acquire_wait_seconds_bucket")
            .count(),
        WAIT_BUCKETS_US.len() + 1
    );
}

#[test]
fn render_into_appends_and_matches_render() {
    let stats = full_stats();
    let mut out = String::from("# prefix kept\n");
    render_into(POOL, &stats, &mut out);
    assert_eq!(
        out.strip_prefix("# prefix kept\n"),
        Some(render(POOL, &stats).as_str())
    );
}

#[test]
fn inconsistent_hand_built_histogram_still_renders_valid() {
    // count disagrees with counts, counts too short: the +Inf bucket and _count are
    // both the sum of counts, missing buckets read as zero.
    let mut stats = PoolStats::default();
    stats.acquire_wait.counts = vec![3, 0, 2];
    stats.acquire_wait.count = 99;
    let e = parse_valid(&render(POOL, &stats));
    assert_eq!(
        value(&e, "heliosdb_pool_acquire_wait_seconds_count", &[]),
        5.0
    );
    assert_eq!(
        value(
            &e,
            "heliosdb_pool_acquire_wait_seconds_bucket",
            &[("le", "60")]
        ),
        5.0
    );
}

// ---------------------------------------------------------------------------------------
// The parser refuses what it must, so the render tests can fail.

#[test]
fn parser_accepts_a_minimal_valid_exposition() {
    let text = "# HELP heliosdb_pool_x_total X.\n# TYPE heliosdb_pool_x_total counter\n\
                heliosdb_pool_x_total{pool=\"a\\\\b\\\"c\\nd\"} 1\n";
    let e = parse(text).unwrap();
    assert_eq!(e.samples[0].label("pool"), Some("a\\b\"c\nd"));
}

#[test]
fn parser_rejects_broken_expositions() {
    let h = "# HELP m M.\n# TYPE m gauge\n";
    let hist = "# HELP h H.\n# TYPE h histogram\n";
    let cases: &[(&str, String)] = &[
        ("no final newline", format!("{h}m 1")),
        ("unknown escape", format!("{h}m{{user=\"a\\qb\"}} 1\n")),
        ("raw quote in value", format!("{h}m{{user=\"a\"b\"}} 1\n")),
        (
            "unescaped newline in value",
            format!("{h}m{{user=\"a\nb\"}} 1\n"),
        ),
        ("unterminated value", format!("{h}m{{user=\"a\\\"}} 1\n")),
        (
            "sample before TYPE",
            "# HELP m M.\nm 1\n# TYPE m gauge\n".into(),
        ),
        (
            "sample before HELP",
            "# TYPE m gauge\nm 1\n# HELP m M.\n".into(),
        ),
        ("no HELP", "# TYPE m gauge\nm 1\n".into()),
        ("no TYPE", "# HELP m M.\nm 1\n".into()),
        ("HELP twice", format!("{h}# HELP m M.\nm 1\n")),
        ("TYPE twice", format!("{h}# TYPE m gauge\nm 1\n")),
        (
            "family declared again",
            format!("{h}m 1\n# HELP n N.\n# TYPE n gauge\nn 1\n# HELP m M.\n"),
        ),
        (
            "samples not contiguous",
            format!("{h}m{{a=\"1\"}} 1\n# HELP n N.\n# TYPE n gauge\nn 1\nm{{a=\"2\"}} 1\n"),
        ),
        (
            "duplicate series",
            format!("{h}m{{a=\"1\"}} 1\nm{{a=\"1\"}} 2\n"),
        ),
        ("bad type", "# HELP m M.\n# TYPE m summary\nm 1\n".into()),
        (
            "bad metric name",
            "# HELP 1m M.\n# TYPE 1m gauge\n1m 1\n".into(),
        ),
        ("bad label name", format!("{h}m{{a-b=\"1\"}} 1\n")),
        ("label twice", format!("{h}m{{a=\"1\",a=\"2\"}} 1\n")),
        ("trailing comma", format!("{h}m{{a=\"1\",}} 1\n")),
        ("bad value", format!("{h}m one\n")),
        ("rust-only float", format!("{h}m inf\n")),
        ("timestamp", format!("{h}m 1 1700000000\n")),
        ("empty line", format!("{h}\nm 1\n")),
        (
            "buckets not cumulative",
            format!(
                "{hist}h_bucket{{le=\"1\"}} 5\nh_bucket{{le=\"+Inf\"}} 4\nh_sum 1\nh_count 4\n"
            ),
        ),
        (
            "+Inf != count",
            format!(
                "{hist}h_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"+Inf\"}} 4\nh_sum 1\nh_count 5\n"
            ),
        ),
        (
            "no +Inf bucket",
            format!("{hist}h_bucket{{le=\"1\"}} 1\nh_sum 1\nh_count 1\n"),
        ),
        (
            "le not increasing",
            format!(
                "{hist}h_bucket{{le=\"2\"}} 1\nh_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"
            ),
        ),
        (
            "no _sum",
            format!("{hist}h_bucket{{le=\"+Inf\"}} 1\nh_count 1\n"),
        ),
        ("bare histogram sample", format!("{hist}h 1\n")),
    ];
    for (why, text) in cases {
        assert!(parse(text).is_err(), "accepted ({why}):\n{text}");
    }
}

#[test]
fn render_checks_catch_a_wrong_escape() {
    // What a renderer that forgot to escape `\` would write for USER_B: it parses (or
    // not), but never back to the original name, so the per-user lookups fail.
    let careless = format!(
        "# HELP heliosdb_pool_user_waiting W.\n# TYPE heliosdb_pool_user_waiting gauge\n\
         heliosdb_pool_user_waiting{{pool=\"p\",user=\"{}\"}} 1\n",
        USER_B.replace('"', "\\\"").replace('\n', "\\n")
    );
    match parse(&careless) {
        Err(_) => {}
        Ok(e) => assert_ne!(e.samples[0].label("user"), Some(USER_B)),
    }
}

#[test]
fn a_live_pool_renders_its_own_counts() {
    use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};
    let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig::default())
        .name("orders")
        .build()
        .unwrap();
    pool.add_connection_sync(1u8, "alice", ConnectionMetadata::for_user("alice"))
        .unwrap();
    let held = pool.try_acquire("alice").unwrap();
    let text = pool.prometheus();
    assert!(
        text.contains("heliosdb_pool_active_connections{pool=\"orders\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("heliosdb_pool_user_active_connections{pool=\"orders\",user=\"alice\"} 1"),
        "{text}"
    );
    drop(held);
}
