//! EnhancedHealthMonitor and HealthRecord. The design guide's section 4 is in
//! `quickstart_guide.rs`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use heliosdb_pool::health::HealthRecord;
use heliosdb_pool::{
    ConnectionHealth, EnhancedHealthMonitor, Error, HealthCheck, HealthMonitorConfig, HealthStatus,
    LeakDetector, LeakDetectorConfig, ResourceId, ResourceInfo, ResourceType,
};

const OK: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;
const SLOW: u8 = 3;

/// A connection whose next checks behave as its `mode` says, and which records the
/// threads its checks ran on.
#[derive(Default)]
struct TestConn {
    mode: AtomicU8,
    delay_ms: AtomicUsize,
    checks: AtomicUsize,
    threads: Mutex<Vec<(ThreadId, Option<String>)>>,
}

impl TestConn {
    fn with_mode(mode: u8) -> Arc<Self> {
        let conn = Arc::new(TestConn::default());
        conn.set(mode);
        conn
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }
}

impl HealthCheck for TestConn {
    fn health_check(&self) -> Result<(), String> {
        let current = thread::current();
        self.threads
            .lock()
            .unwrap()
            .push((current.id(), current.name().map(str::to_owned)));
        self.checks.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst) as u64;
        match self.mode.load(Ordering::SeqCst) {
            OK => Ok(()),
            FAIL => Err("boom".to_string()),
            PANIC => panic!("check exploded"),
            _ => {
                thread::sleep(Duration::from_millis(delay));
                Ok(())
            }
        }
    }
}

fn monitor_with(config: HealthMonitorConfig) -> EnhancedHealthMonitor {
    EnhancedHealthMonitor::new(config, Arc::new(LeakDetector::new()))
}

fn fast_interval() -> HealthMonitorConfig {
    HealthMonitorConfig {
        check_interval: Duration::from_millis(10),
        ..Default::default()
    }
}

/// Polls `cond` every millisecond for up to two seconds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

async fn status(monitor: &EnhancedHealthMonitor, id: &str) -> ConnectionHealth {
    monitor.check_connection(id).await.expect("monitored")
}

#[tokio::test]
async fn failing_checks_degrade_then_make_unhealthy() {
    let monitor = monitor_with(HealthMonitorConfig::default());
    let conn = TestConn::with_mode(FAIL);
    monitor.monitor_connection("c".into(), conn.clone()).await;
    // Never checked: nothing says it is unhealthy.
    assert_eq!(monitor.get_all_health()[0].status, HealthStatus::Healthy);

    let h = status(&monitor, "c").await;
    assert_eq!(
        (h.status, h.consecutive_failures),
        (HealthStatus::Degraded, 1)
    );
    assert_eq!(h.last_error.as_deref(), Some("boom"));
    assert!(h.last_checked.is_some() && h.last_latency.is_some());
    assert_eq!(status(&monitor, "c").await.status, HealthStatus::Degraded);
    let h = status(&monitor, "c").await;
    assert_eq!(
        (h.status, h.consecutive_failures),
        (HealthStatus::Unhealthy, 3)
    );
    assert_eq!((h.checks, h.failures), (3, 3));
    assert_eq!(conn.checks(), 3);
}

#[tokio::test]
async fn a_panicking_check_is_a_failure() {
    let monitor = monitor_with(HealthMonitorConfig {
        unhealthy_after_failures: 2,
        ..Default::default()
    });
    monitor
        .monitor_connection("p".into(), TestConn::with_mode(PANIC))
        .await;
    let h = status(&monitor, "p").await;
    assert_eq!(h.status, HealthStatus::Degraded);
    let error = h.last_error.unwrap();
    assert!(
        error.contains("panicked") && error.contains("check exploded"),
        "{error}"
    );
    assert_eq!(status(&monitor, "p").await.status, HealthStatus::Unhealthy);
}

#[tokio::test]
async fn a_panicking_check_does_not_kill_the_background_thread() {
    let monitor = monitor_with(fast_interval());
    let conn = TestConn::with_mode(PANIC);
    monitor.monitor_connection("p".into(), conn.clone()).await;
    monitor.start_background_monitoring();
    // Wait on the recorded outcomes: `conn.checks()` counts a check as it starts.
    wait_until("three recorded failures", || {
        monitor.get_all_health()[0].failures >= 3
    });
    assert!(monitor.is_background_monitoring());
    assert_eq!(monitor.get_all_health()[0].status, HealthStatus::Unhealthy);
    // Still checking after the panics.
    let seen = conn.checks();
    wait_until("another check", || conn.checks() > seen);
}

#[tokio::test]
async fn a_slow_successful_check_is_degraded() {
    let monitor = monitor_with(HealthMonitorConfig {
        slow_check_threshold: Duration::from_millis(5),
        ..Default::default()
    });
    let conn = TestConn::with_mode(SLOW);
    conn.delay_ms.store(15, Ordering::SeqCst);
    monitor.monitor_connection("s".into(), conn.clone()).await;
    let h = status(&monitor, "s").await;
    assert_eq!(
        (h.status, h.consecutive_failures),
        (HealthStatus::Degraded, 0)
    );
    assert!(h.last_latency.unwrap() >= Duration::from_millis(15));
    assert_eq!(h.last_error, None);
    conn.set(OK);
    assert_eq!(status(&monitor, "s").await.status, HealthStatus::Healthy);
}

#[tokio::test]
async fn recovery_resets_consecutive_failures() {
    let monitor = monitor_with(HealthMonitorConfig::default());
    let conn = TestConn::with_mode(FAIL);
    monitor.monitor_connection("r".into(), conn.clone()).await;
    for _ in 0..3 {
        status(&monitor, "r").await;
    }
    assert_eq!(status(&monitor, "r").await.status, HealthStatus::Unhealthy);
    conn.set(OK);
    let h = status(&monitor, "r").await;
    assert_eq!(h.status, HealthStatus::Healthy);
    assert_eq!(h.consecutive_failures, 0);
    assert_eq!((h.checks, h.failures), (5, 4));
    // The last failure's message stays, for diagnosis.
    assert_eq!(h.last_error.as_deref(), Some("boom"));
    conn.set(FAIL);
    let h = status(&monitor, "r").await;
    assert_eq!(
        (h.status, h.consecutive_failures),
        (HealthStatus::Degraded, 1)
    );
}

#[tokio::test]
async fn a_flapping_connection_never_reaches_unhealthy() {
    let monitor = monitor_with(HealthMonitorConfig {
        unhealthy_after_failures: 2,
        ..Default::default()
    });
    let conn = TestConn::with_mode(OK);
    monitor.monitor_connection("f".into(), conn.clone()).await;
    let mut seen = Vec::new();
    for mode in [FAIL, OK, FAIL, OK, FAIL, FAIL, OK] {
        conn.set(mode);
        seen.push(status(&monitor, "f").await.status);
    }
    use HealthStatus::*;
    assert_eq!(
        seen,
        [
            Degraded, Healthy, Degraded, Healthy, Degraded, Unhealthy, Healthy
        ]
    );
}

#[tokio::test]
async fn background_monitoring_checks_on_one_named_thread_until_stopped() {
    let monitor = monitor_with(fast_interval());
    let a = TestConn::with_mode(OK);
    let b = TestConn::with_mode(FAIL);
    monitor.monitor_connection("a".into(), a.clone()).await;
    monitor.monitor_connection("b".into(), b.clone()).await;
    assert!(!monitor.is_background_monitoring());
    monitor.start_background_monitoring();
    monitor.start_background_monitoring(); // idempotent: still one thread
    assert!(monitor.is_background_monitoring());
    wait_until("three passes", || a.checks() >= 3 && b.checks() >= 3);
    monitor.stop_background_monitoring();
    assert!(!monitor.is_background_monitoring());

    let threads: HashSet<_> = [&a, &b]
        .iter()
        .flat_map(|c| c.threads.lock().unwrap().clone())
        .collect();
    assert_eq!(threads.len(), 1, "{threads:?}");
    let (_, name) = threads.into_iter().next().unwrap();
    assert_eq!(name.as_deref(), Some("heliosdb-health"));
    assert_eq!(monitor.get_all_health()[1].status, HealthStatus::Unhealthy);

    // Stopped means stopped.
    let (a_checks, b_checks) = (a.checks(), b.checks());
    thread::sleep(Duration::from_millis(40));
    assert_eq!((a.checks(), b.checks()), (a_checks, b_checks));

    // And it can be started again.
    monitor.start_background_monitoring();
    wait_until("a check after restart", || a.checks() > a_checks);
}

#[test]
fn stop_and_drop_are_prompt_with_a_long_interval() {
    let config = HealthMonitorConfig {
        check_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let monitor = monitor_with(config.clone());
    monitor.start_background_monitoring();
    let start = Instant::now();
    monitor.stop_background_monitoring();
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    monitor.stop_background_monitoring(); // stopping twice is fine

    let monitor = monitor_with(config);
    monitor.start_background_monitoring();
    let start = Instant::now();
    drop(monitor);
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn stop_waits_for_the_check_in_progress_only() {
    let monitor = monitor_with(fast_interval());
    let conns: Vec<_> = (0..5)
        .map(|_| {
            let c = TestConn::with_mode(SLOW);
            c.delay_ms.store(60, Ordering::SeqCst);
            c
        })
        .collect();
    for (i, c) in conns.iter().enumerate() {
        monitor
            .monitor_connection(format!("slow-{i}"), c.clone())
            .await;
    }
    monitor.start_background_monitoring();
    // A pass takes 5 x 60 ms; stop once the first check has begun.
    wait_until("a check to start", || conns.iter().any(|c| c.checks() > 0));
    let start = Instant::now();
    monitor.stop_background_monitoring();
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    // One check, or two if this thread was descheduled past the first; never the pass.
    let total: usize = conns.iter().map(|c| c.checks()).sum();
    assert!(total <= 2, "{total} checks");
}

#[tokio::test]
async fn unhealthy_and_all_health_include_leaked_connections() {
    let detector = Arc::new(LeakDetector::with_config(LeakDetectorConfig {
        alert_threshold: Duration::from_millis(20),
        critical_threshold: Duration::from_millis(40),
        ..Default::default()
    }));
    let monitor = EnhancedHealthMonitor::new(HealthMonitorConfig::default(), Arc::clone(&detector));
    monitor
        .monitor_connection("good".into(), TestConn::with_mode(OK))
        .await;
    monitor
        .monitor_connection("bad".into(), TestConn::with_mode(FAIL))
        .await;
    monitor
        .monitor_connection("held".into(), TestConn::with_mode(OK))
        .await;
    detector
        .track(
            ResourceId::new("held"),
            ResourceInfo::new(ResourceType::Connection, "alice"),
        )
        .unwrap();
    for id in ["good", "bad", "held"] {
        status(&monitor, id).await;
    }
    assert!(!monitor.get_all_health()[2].is_leaked);

    thread::sleep(Duration::from_millis(20));
    let all = monitor.get_all_health();
    let summary: Vec<_> = all
        .iter()
        .map(|h| (h.connection_id.as_str(), h.status, h.is_leaked))
        .collect();
    assert_eq!(
        summary,
        [
            ("bad", HealthStatus::Degraded, false),
            ("good", HealthStatus::Healthy, false),
            ("held", HealthStatus::Healthy, true),
        ]
    );
    let unhealthy: Vec<_> = monitor
        .get_unhealthy_connections()
        .into_iter()
        .map(|h| h.connection_id)
        .collect();
    assert_eq!(unhealthy, ["bad", "held"]);

    detector.release(&ResourceId::new("held")).unwrap();
    assert!(!status(&monitor, "held").await.is_leaked);
    assert_eq!(monitor.get_unhealthy_connections().len(), 1);
}

#[tokio::test]
async fn unmonitor_and_replace() {
    let monitor = monitor_with(HealthMonitorConfig::default());
    assert!(monitor.check_connection("x").await.is_none());
    monitor
        .monitor_connection("x".into(), TestConn::with_mode(FAIL))
        .await;
    assert_eq!(status(&monitor, "x").await.failures, 1);
    // Replacing starts a fresh record.
    monitor
        .monitor_connection("x".into(), TestConn::with_mode(OK))
        .await;
    assert_eq!(monitor.get_all_health()[0].checks, 0);
    assert!(monitor.unmonitor_connection("x"));
    assert!(!monitor.unmonitor_connection("x"));
    assert!(monitor.check_connection("x").await.is_none());
    assert!(monitor.get_all_health().is_empty());
}

#[test]
fn health_record_rule() {
    let config = HealthMonitorConfig::default();
    let mut r = HealthRecord::new();
    assert_eq!(r.status(&config), HealthStatus::Healthy);
    assert_eq!((r.checks(), r.last_checked()), (0, None));
    r.record(Err("e1".into()), Duration::from_millis(1));
    r.record(Err("e2".into()), Duration::from_millis(1));
    assert_eq!(r.status(&config), HealthStatus::Degraded);
    r.record_failure("e3".into(), Duration::from_millis(1));
    assert_eq!(r.status(&config), HealthStatus::Unhealthy);
    assert_eq!(r.last_error(), Some("e3"));
    r.record_success(config.slow_check_threshold);
    // Exactly at the threshold is not slow.
    assert_eq!(r.status(&config), HealthStatus::Healthy);
    r.record(
        Ok(()),
        config.slow_check_threshold + Duration::from_nanos(1),
    );
    assert_eq!(r.status(&config), HealthStatus::Degraded);
    assert_eq!(
        (r.checks(), r.failures(), r.consecutive_failures()),
        (5, 3, 0)
    );
}

#[test]
fn config_validation() {
    fn field(config: HealthMonitorConfig) -> &'static str {
        match EnhancedHealthMonitor::try_new(config, Arc::new(LeakDetector::new())) {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
    let d = HealthMonitorConfig::default;
    assert!(d().validate().is_ok());
    assert_eq!(d().check_interval, Duration::from_secs(30));
    assert_eq!(d().slow_check_threshold, Duration::from_secs(1));
    assert_eq!(d().unhealthy_after_failures, 3);
    assert_eq!(
        field(HealthMonitorConfig {
            check_interval: Duration::ZERO,
            ..d()
        }),
        "check_interval"
    );
    assert_eq!(
        field(HealthMonitorConfig {
            slow_check_threshold: Duration::ZERO,
            ..d()
        }),
        "slow_check_threshold"
    );
    assert_eq!(
        field(HealthMonitorConfig {
            unhealthy_after_failures: 0,
            ..d()
        }),
        "unhealthy_after_failures"
    );
}

#[test]
fn monitor_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EnhancedHealthMonitor>();
    assert_send_sync::<ConnectionHealth>();
    fn assert_send<T: Send>(_: &T) {}
    let monitor = monitor_with(HealthMonitorConfig::default());
    assert_send(&monitor.check_connection("x"));
    assert_send(&monitor.monitor_connection("x".into(), TestConn::with_mode(OK)));
}
