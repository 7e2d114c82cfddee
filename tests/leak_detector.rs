//! LeakDetector, ResourceGuard and LeakReport. The design guide's own examples of them
//! are in `quickstart_guide.rs`.

use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use heliosdb_pool::leak::LeakThresholds;
use heliosdb_pool::{
    Error, LeakDetector, LeakDetectorConfig, LeakLevel, LeakReport, ResourceGuard, ResourceId,
    ResourceInfo, ResourceType,
};

// Wide enough apart that a scheduling hiccup on a loaded 2-core machine does not move a
// resource across a level boundary between two statements of a test.
const ALERT: Duration = Duration::from_millis(50);
const CRITICAL: Duration = Duration::from_millis(150);

fn fast_detector() -> LeakDetector {
    LeakDetector::with_config(LeakDetectorConfig {
        alert_threshold: ALERT,
        critical_threshold: CRITICAL,
        ..Default::default()
    })
}

fn info(user: &str) -> ResourceInfo {
    ResourceInfo::new(ResourceType::Connection, user)
}

/// Defaults of the config (the guide's troubleshooting snippet itself is in
/// `quickstart_guide.rs`), and a report's fields for a tracked resource.
#[test]
fn config_defaults_and_report_fields() {
    let defaults = LeakDetectorConfig::default();
    assert_eq!(defaults.alert_threshold, Duration::from_secs(30));
    assert_eq!(defaults.critical_threshold, Duration::from_secs(300));

    let detector = fast_detector();
    detector
        .track(ResourceId::new("r"), info("u").with_metadata("k", "v"))
        .unwrap();
    thread::sleep(ALERT);
    let leaks = detector.check_leaks();
    assert_eq!(leaks.len(), 1);
    let leak = &leaks[0];
    assert_eq!(leak.resource_id.as_str(), "r");
    assert_eq!(leak.resource_type, ResourceType::Connection);
    assert_eq!(leak.acquired_by, "u");
    assert!(leak.age >= ALERT);
    assert_eq!(leak.metadata, vec![("k".to_string(), "v".to_string())]);
}

#[test]
fn track_and_release_report_hold_time() {
    let detector = LeakDetector::new();
    let id = ResourceId::new("conn-1");
    detector.track(id.clone(), info("alice")).unwrap();
    assert_eq!(detector.tracked_count(), 1);
    assert_eq!(detector.stats().current_tracked, 1);
    thread::sleep(Duration::from_millis(5));
    let held = detector.release(&id).unwrap();
    assert!(held >= Duration::from_millis(5), "held {held:?}");
    assert_eq!(detector.tracked_count(), 0);
    // The id can be tracked again once released.
    detector.track(id.clone(), info("alice")).unwrap();
}

#[test]
fn duplicate_track_is_rejected_and_keeps_the_original() {
    let detector = LeakDetector::new();
    let id = ResourceId::new("dup");
    detector.track(id.clone(), info("first")).unwrap();
    let err = detector.track(id.clone(), info("second")).unwrap_err();
    assert_eq!(err, Error::DuplicateResource { id: "dup".into() });
    assert_eq!(detector.tracked_count(), 1);
    detector.release(&id).unwrap();
    assert_eq!(detector.tracked_count(), 0);
}

#[test]
fn unknown_release_is_rejected() {
    let detector = LeakDetector::new();
    let err = detector.release(&ResourceId::new("nope")).unwrap_err();
    assert_eq!(err, Error::UnknownResource { id: "nope".into() });
    assert_eq!(detector.tracked_count(), 0);
}

#[test]
fn tracking_limit_is_exact_under_racing_threads() {
    const MAX: usize = 100;
    const THREADS: usize = 8;
    const PER_THREAD: usize = 50;
    let detector = Arc::new(LeakDetector::with_config(LeakDetectorConfig {
        max_tracked_resources: MAX,
        ..Default::default()
    }));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let detector = Arc::clone(&detector);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut ok = 0;
                for i in 0..PER_THREAD {
                    // Every thread also tries one shared id, so duplicates race the cap.
                    let id = if i == 0 {
                        ResourceId::new("shared")
                    } else {
                        ResourceId::new(format!("t{t}-{i}"))
                    };
                    match detector.track(id, info("racer")) {
                        Ok(()) => ok += 1,
                        Err(Error::TrackingLimit {
                            max_tracked_resources,
                        }) => assert_eq!(max_tracked_resources, MAX),
                        Err(Error::DuplicateResource { id }) => assert_eq!(id, "shared"),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(accepted, MAX);
    assert_eq!(detector.tracked_count(), MAX);
    assert!(matches!(
        detector.track(ResourceId::new("one-more"), info("x")),
        Err(Error::TrackingLimit { .. })
    ));
}

#[test]
fn check_leaks_levels_and_counts_each_level_once() {
    let detector = fast_detector();
    let old = ResourceId::new("old");
    let young = ResourceId::new("young");
    detector.track(old.clone(), info("u")).unwrap();
    assert!(detector.check_leaks().is_empty());
    assert_eq!(detector.stats().leaks_detected, 0);

    thread::sleep(ALERT);
    detector.track(young.clone(), info("u")).unwrap();
    for _ in 0..3 {
        let leaks = detector.check_leaks();
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert_eq!(leaks[0].resource_id, old);
        assert_eq!(leaks[0].level, LeakLevel::Alert);
        assert!(leaks[0].age >= ALERT);
    }
    let stats = detector.stats();
    assert_eq!(
        (stats.leaks_detected, stats.alerts, stats.criticals),
        (1, 1, 0)
    );

    thread::sleep(CRITICAL - ALERT);
    for _ in 0..3 {
        let leaks = detector.check_leaks();
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        // Oldest first.
        assert_eq!(leaks[0].resource_id, old);
        assert_eq!(leaks[0].level, LeakLevel::Critical);
        assert_eq!(leaks[1].resource_id, young);
        assert_eq!(leaks[1].level, LeakLevel::Alert);
    }
    let stats = detector.stats();
    assert_eq!(stats.leaks_detected, 2);
    assert_eq!(stats.alerts, 2);
    assert_eq!(stats.criticals, 1);
    assert_eq!(stats.current_tracked, 2);
}

#[test]
fn a_resource_first_seen_critical_counts_no_alert() {
    let detector = fast_detector();
    detector.track(ResourceId::new("late"), info("u")).unwrap();
    thread::sleep(CRITICAL);
    assert_eq!(detector.check_leaks()[0].level, LeakLevel::Critical);
    let stats = detector.stats();
    assert_eq!(
        (stats.leaks_detected, stats.alerts, stats.criticals),
        (1, 0, 1)
    );
}

#[test]
fn returned_after_leak_counts_only_reported_leaks() {
    let detector = fast_detector();
    let leaked = ResourceId::new("leaked");
    let unreported = ResourceId::new("unreported");
    let quick = ResourceId::new("quick");
    detector.track(leaked.clone(), info("u")).unwrap();
    detector.track(unreported.clone(), info("u")).unwrap();
    detector.track(quick.clone(), info("u")).unwrap();
    detector.release(&quick).unwrap();
    thread::sleep(ALERT);
    detector.check_leaks();
    // Tracked after the scan, and past the threshold, but never reported.
    let late = ResourceId::new("late");
    detector.track(late.clone(), info("u")).unwrap();
    thread::sleep(ALERT);
    detector.release(&late).unwrap();
    assert_eq!(detector.stats().returned_after_leak, 0);

    detector.release(&leaked).unwrap();
    detector.release(&unreported).unwrap();
    let stats = detector.stats();
    assert_eq!(stats.returned_after_leak, 2);
    assert_eq!(stats.leaks_detected, 2);
    assert_eq!(stats.current_tracked, 0);
}

#[test]
fn is_leaked_follows_the_alert_threshold_without_a_scan() {
    let detector = fast_detector();
    let id = ResourceId::new("x");
    assert!(!detector.is_leaked(&id));
    detector.track(id.clone(), info("u")).unwrap();
    assert!(!detector.is_leaked(&id));
    thread::sleep(ALERT);
    assert!(detector.is_leaked(&id));
    detector.release(&id).unwrap();
    assert!(!detector.is_leaked(&id));
}

#[test]
fn guard_releases_on_drop_and_explicit_release() {
    let detector = LeakDetector::new();
    let guard = ResourceGuard::new(&detector, ResourceId::new("g"), info("u")).unwrap();
    assert_eq!(guard.id().as_str(), "g");
    // A second guard for the same id is refused.
    assert!(matches!(
        ResourceGuard::new(&detector, ResourceId::new("g"), info("u")),
        Err(Error::DuplicateResource { .. })
    ));
    assert!(guard.release().is_ok());
    assert_eq!(detector.tracked_count(), 0);

    // Released behind the guard's back: drop must neither panic nor double count.
    let guard = ResourceGuard::new(&detector, ResourceId::new("h"), info("u")).unwrap();
    detector.release(guard.id()).unwrap();
    drop(guard);
    assert_eq!(detector.tracked_count(), 0);
}

#[test]
fn guard_releases_on_panic_unwind() {
    let detector = LeakDetector::new();
    let result = std::panic::catch_unwind(|| {
        let _guard = ResourceGuard::new(&detector, ResourceId::new("p"), info("u")).unwrap();
        assert_eq!(detector.tracked_count(), 1);
        panic!("work failed");
    });
    assert!(result.is_err());
    assert_eq!(detector.tracked_count(), 0);
}

#[test]
fn report_display_names_everything() {
    let detector = fast_detector();
    let line = line!() + 1;
    let info = ResourceInfo::new(ResourceType::Connection, "user123")
        .with_metadata("query", "SELECT 1")
        .with_metadata("database", "production");
    assert_eq!(info.call_site().line(), line);
    let thread_name = thread::current().name().unwrap().to_owned();
    detector.track(ResourceId::new("conn-7"), info).unwrap();
    thread::sleep(ALERT);
    let text = detector.check_leaks()[0].to_string();
    // The file name only: its path prefix depends on how the test crate is built.
    let expected_site = format!("leak_detector.rs:{line} on thread {thread_name};");
    for part in [
        "resource conn-7 (Connection) held by user123 for ",
        "s [ALERT] at ",
        expected_site.as_str(),
        "; metadata: query=SELECT 1, database=production",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
}

#[test]
fn report_display_from_fields() {
    let report = LeakReport {
        resource_id: ResourceId::new("f-1"),
        resource_type: ResourceType::Custom("Socket".into()),
        age: Duration::from_millis(35_200),
        acquired_by: "svc".into(),
        metadata: vec![],
        level: LeakLevel::Critical,
        call_site: None,
        thread: Some("worker-3".into()),
    };
    assert_eq!(
        report.to_string(),
        "resource f-1 (Socket) held by svc for 35.2s [CRITICAL] on thread worker-3"
    );
}

#[test]
fn resource_id_and_type_display() {
    assert_eq!(ResourceId::new(7u64).as_str(), "7");
    assert_eq!(ResourceId::new("a").to_string(), "a");
    assert!(ResourceId::new("a") < ResourceId::new("b"));
    assert_eq!(ResourceType::Transaction.to_string(), "Transaction");
    assert_eq!(ResourceType::Lock.to_string(), "Lock");
    assert!(LeakLevel::Alert < LeakLevel::Critical);
}

#[test]
fn thresholds_level() {
    let t = LeakThresholds {
        alert: ALERT,
        critical: CRITICAL,
    };
    assert_eq!(t.level(Duration::ZERO), None);
    assert_eq!(t.level(ALERT - Duration::from_nanos(1)), None);
    assert_eq!(t.level(ALERT), Some(LeakLevel::Alert));
    assert_eq!(t.level(CRITICAL), Some(LeakLevel::Critical));
    assert_eq!(fast_detector().thresholds(), t);
}

#[test]
fn config_validation() {
    fn field(config: LeakDetectorConfig) -> &'static str {
        match LeakDetector::try_with_config(config) {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(LeakDetectorConfig::default().validate().is_ok());
    let d = LeakDetectorConfig::default;
    assert_eq!(
        field(LeakDetectorConfig {
            alert_threshold: Duration::ZERO,
            ..d()
        }),
        "alert_threshold"
    );
    assert_eq!(
        field(LeakDetectorConfig {
            alert_threshold: Duration::from_secs(10),
            critical_threshold: Duration::from_secs(5),
            ..d()
        }),
        "critical_threshold"
    );
    assert_eq!(
        field(LeakDetectorConfig {
            max_tracked_resources: 0,
            ..d()
        }),
        "max_tracked_resources"
    );
    // Equal thresholds are allowed: the leak goes straight to critical.
    assert!(
        LeakDetectorConfig {
            alert_threshold: Duration::from_secs(1),
            critical_threshold: Duration::from_secs(1),
            ..d()
        }
        .validate()
        .is_ok()
    );
}

#[test]
#[should_panic(expected = "max_tracked_resources")]
fn with_config_panics_on_invalid_config() {
    LeakDetector::with_config(LeakDetectorConfig {
        max_tracked_resources: 0,
        ..Default::default()
    });
}

#[test]
fn detector_is_send_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LeakDetector>();
    assert_send_sync::<ResourceGuard<'static>>();
    let detector = Arc::new(fast_detector());
    let guard = ResourceGuard::new(&detector, ResourceId::new("shared"), info("u")).unwrap();
    let d2 = Arc::clone(&detector);
    thread::spawn(move || assert_eq!(d2.tracked_count(), 1))
        .join()
        .unwrap();
    drop(guard);
}

/// Logs go out once per resource and level: warn for Alert, error for Critical, info for a
/// leaked resource returned.
#[test]
fn first_reports_are_logged_once_per_level() {
    static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            RECORDS
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
        fn flush(&self) {}
    }
    // Only this test installs a logger in this binary.
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let ours = |level: log::Level| {
        RECORDS
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, m)| *l == level && m.contains("logged-leak"))
            .count()
    };

    let detector = fast_detector();
    let id = ResourceId::new("logged-leak");
    detector.track(id.clone(), info("u")).unwrap();
    thread::sleep(ALERT);
    detector.check_leaks();
    detector.check_leaks();
    assert_eq!(ours(log::Level::Warn), 1);
    assert_eq!(ours(log::Level::Error), 0);
    thread::sleep(CRITICAL - ALERT);
    detector.check_leaks();
    detector.check_leaks();
    assert_eq!(ours(log::Level::Warn), 1);
    assert_eq!(ours(log::Level::Error), 1);
    detector.release(&id).unwrap();
    assert_eq!(ours(log::Level::Info), 1);
}
