//! The design guide's pool examples (the HeliosDB connection-pool leak-prevention quick
//! start; see README.md), changed only in crate paths. The reader's own stand-ins
//! (MyConnection, execute_query, ...) are defined at the bottom, as a reader would write them.
//!
//! Section 2-4, Pattern 4 and the monitoring examples live in the sweeper's tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};
use log::warn;
use tokio::time::timeout;

// ---- Section 1: Using Enhanced Connection Pool ----------------------------------------

#[tokio::test]
async fn section_1_using_enhanced_connection_pool() -> Result<()> {
    // Create pool with default configuration
    let config = EnhancedPoolConfig::default();
    let pool = EnhancedConnectionPool::new(config);
    // Add a connection
    let conn = MyConnection::new();
    let metadata = ConnectionMetadata {
        user: "myuser".to_string(),
        database: Some("mydb".to_string()),
        protocol: "postgres".to_string(),
        remote_addr: Some("127.0.0.1:5432".to_string()),
        tags: vec!["read-only".to_string()],
    };
    let conn_id = pool
        .add_connection(conn, "myuser".to_string(), metadata)
        .await?;
    // Acquire connection (automatically tracked for leaks)
    let guard = pool.acquire("myuser").await?;
    // Use connection via connection_id
    let result = execute_query(guard.connection_id()).await?;
    // Connection automatically returned when guard drops
    drop(guard);

    assert_eq!(result.connection, conn_id);
    let stats = pool.stats();
    assert_eq!((stats.active_connections, stats.idle_connections), (0, 1));
    Ok(())
}

// ---- Pattern 1: Query Execution with Leak Protection -----------------------------------

async fn execute_safe_query(
    pool: &EnhancedConnectionPool<DbConnection>,
    query: &str,
) -> Result<QueryResult> {
    // Guard ensures connection is returned even on error
    let guard = pool.acquire("myuser").await?;
    // Execute query
    let result = timeout(
        Duration::from_secs(30),
        execute_query_internal(guard.connection_id(), query),
    )
    .await??;
    Ok(result)
}

#[tokio::test]
async fn pattern_1_query_execution_with_leak_protection() {
    let pool = pool_with("myuser", 1);
    let ok = execute_safe_query(&pool, "SELECT 1").await.unwrap();
    assert_eq!(ok.rows, 1);
    let err = execute_safe_query(&pool, "FAIL").await;
    assert!(err.is_err());
    assert_returned(&pool, 1);
}

// ---- Pattern 2: Transaction with Auto-Rollback -----------------------------------------

async fn execute_transaction(pool: &EnhancedConnectionPool<DbConnection>) -> Result<()> {
    let guard = pool.acquire("myuser").await?;
    // Begin transaction
    begin_transaction(guard.connection_id()).await?;
    // If any operation fails, guard drop ensures connection returns
    // and transaction can be rolled back
    let result = perform_operations(guard.connection_id()).await;
    match result {
        Ok(_) => commit_transaction(guard.connection_id()).await?,
        Err(e) => {
            rollback_transaction(guard.connection_id()).await?;
            return Err(e);
        }
    }
    Ok(())
}

#[tokio::test]
async fn pattern_2_transaction_with_auto_rollback() {
    let pool = pool_with("myuser", 1);
    ROLLBACKS.store(0, Ordering::SeqCst);
    FAIL_OPERATIONS.store(0, Ordering::SeqCst);
    execute_transaction(&pool).await.unwrap();
    FAIL_OPERATIONS.store(1, Ordering::SeqCst);
    assert!(execute_transaction(&pool).await.is_err());
    assert_eq!(ROLLBACKS.load(Ordering::SeqCst), 1);
    assert_returned(&pool, 1);
}

// ---- Pattern 3: Batch Operations with Monitoring ---------------------------------------

async fn batch_process_with_monitoring(
    pool: &EnhancedConnectionPool<DbConnection>,
    items: Vec<Item>,
) -> Result<()> {
    let guard = pool.acquire("batch_user").await?;
    let expected_count = 1;
    for (i, item) in items.iter().enumerate() {
        // Process item
        process_item(guard.connection_id(), item).await?;
        // Periodically check for leaks
        if i % 100 == 0 {
            let stats = pool.stats();
            if stats.leak_stats.current_tracked > expected_count {
                warn!("Potential leak detected during batch processing");
            }
            assert_eq!(stats.leak_stats.current_tracked, expected_count);
        }
    }
    Ok(())
}

#[tokio::test]
async fn pattern_3_batch_operations_with_monitoring() {
    let pool = pool_with("batch_user", 2);
    let items = (0..250).map(Item).collect();
    batch_process_with_monitoring(&pool, items).await.unwrap();
    assert_returned(&pool, 2);
}

// ---- Testing: Unit Test Example --------------------------------------------------------

#[tokio::test]
async fn test_no_leak_on_error() {
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
    // Add connection
    let conn = TestConnection::new();
    let metadata = create_test_metadata();
    pool.add_connection(conn, "testuser".to_string(), metadata)
        .await
        .unwrap();
    // Simulate error path
    let result: Result<(), anyhow::Error> = async {
        let _guard = pool.acquire("testuser").await?;
        Err(anyhow!("Simulated error"))
    }
    .await;
    assert!(result.is_err());
    // Verify no leak
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = pool.stats();
    assert_eq!(stats.active_connections, 0);
    assert_eq!(stats.idle_connections, 1);
}

// ---- The reader's stand-ins ------------------------------------------------------------

#[derive(Debug)]
struct MyConnection;
impl MyConnection {
    fn new() -> Self {
        MyConnection
    }
}
type DbConnection = MyConnection;
type TestConnection = MyConnection;

#[derive(Debug)]
struct QueryResult {
    connection: heliosdb_pool::ConnectionId,
    rows: usize,
}

struct Item(u32);

static ROLLBACKS: AtomicUsize = AtomicUsize::new(0);
static FAIL_OPERATIONS: AtomicUsize = AtomicUsize::new(0);

async fn execute_query(id: heliosdb_pool::ConnectionId) -> Result<QueryResult> {
    Ok(QueryResult {
        connection: id,
        rows: 1,
    })
}

async fn execute_query_internal(
    id: heliosdb_pool::ConnectionId,
    query: &str,
) -> Result<QueryResult> {
    if query == "FAIL" {
        return Err(anyhow!("query failed"));
    }
    execute_query(id).await
}

async fn begin_transaction(_: heliosdb_pool::ConnectionId) -> Result<()> {
    Ok(())
}
async fn perform_operations(_: heliosdb_pool::ConnectionId) -> Result<()> {
    if FAIL_OPERATIONS.load(Ordering::SeqCst) == 1 {
        return Err(anyhow!("operation failed"));
    }
    Ok(())
}
async fn commit_transaction(_: heliosdb_pool::ConnectionId) -> Result<()> {
    Ok(())
}
async fn rollback_transaction(_: heliosdb_pool::ConnectionId) -> Result<()> {
    ROLLBACKS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}
async fn process_item(_: heliosdb_pool::ConnectionId, item: &Item) -> Result<()> {
    let _ = item.0;
    Ok(())
}

fn create_test_metadata() -> ConnectionMetadata {
    ConnectionMetadata::for_user("testuser")
}

fn pool_with(user: &str, connections: usize) -> EnhancedConnectionPool<DbConnection> {
    let pool = EnhancedConnectionPool::new(EnhancedPoolConfig::default());
    for _ in 0..connections {
        pool.add_connection_sync(
            MyConnection::new(),
            user,
            ConnectionMetadata::for_user(user),
        )
        .unwrap();
    }
    pool
}

fn assert_returned(pool: &EnhancedConnectionPool<DbConnection>, total: usize) {
    let stats = pool.stats();
    assert_eq!(stats.active_connections, 0, "{stats:?}");
    assert_eq!(stats.idle_connections, total, "{stats:?}");
}

// ---- Section 2: Using Leak Detector Directly -------------------------------------------

mod leak_and_health {
    use std::sync::Arc;
    use std::time::Duration;

    use heliosdb_pool::{
        ConnectionMetadata, EnhancedConnectionPool, EnhancedHealthMonitor, EnhancedPoolConfig,
        HealthCheck, HealthMonitorConfig, LeakDetector, LeakDetectorConfig, ResourceGuard,
        ResourceId, ResourceInfo, ResourceType,
    };

    #[test]
    fn section_2_using_leak_detector_directly() -> anyhow::Result<()> {
        // Create leak detector
        let config = LeakDetectorConfig {
            alert_threshold: Duration::from_secs(30),
            critical_threshold: Duration::from_secs(300),
            ..Default::default()
        };
        let detector = LeakDetector::with_config(config);
        // Track a resource
        let id = ResourceId::new("my-resource-1");
        let info = ResourceInfo::new(ResourceType::Connection, "user123")
            .with_metadata("query", "SELECT * FROM users")
            .with_metadata("database", "production");
        detector.track(id.clone(), info)?;
        // Do work...
        // Release resource
        detector.release(&id)?;
        // Check for leaks
        let leaks = detector.check_leaks();
        for leak in &leaks {
            println!("LEAK: {}", leak);
        }
        assert!(leaks.is_empty());
        assert_eq!(detector.tracked_count(), 0);
        Ok(())
    }

    // ---- Section 3: Using Resource Guard (RAII Pattern) ------------------------------------

    #[test]
    fn section_3_resource_guard() -> anyhow::Result<()> {
        let detector = LeakDetector::new();
        {
            // Resource tracked on creation
            let _guard = ResourceGuard::new(
                &detector,
                ResourceId::new("auto-resource"),
                ResourceInfo::new(ResourceType::Connection, "user"),
            )?;
            // Do work...
            assert_eq!(detector.tracked_count(), 1);
        } // Resource automatically released when guard drops
        assert_eq!(detector.tracked_count(), 0);
        Ok(())
    }

    // ---- Section 4: Connection Health Monitoring, and "Monitor Health Status" ------------

    struct MyConnection;
    impl HealthCheck for MyConnection {
        fn health_check(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn section_4_connection_health_monitoring() {
        let my_connection = MyConnection;
        // Create health monitor
        let config = HealthMonitorConfig::default();
        let leak_detector = Arc::new(LeakDetector::new());
        let monitor = EnhancedHealthMonitor::new(config, leak_detector);
        // Monitor a connection
        monitor
            .monitor_connection("conn-123".to_string(), Arc::new(my_connection))
            .await;
        // Start background monitoring
        monitor.start_background_monitoring();
        // Check health
        let mut checked = false;
        if let Some(health) = monitor.check_connection("conn-123").await {
            println!("Status: {:?}", health.status);
            println!("Is leaked: {}", health.is_leaked);
            assert_eq!(health.status, heliosdb_pool::HealthStatus::Healthy);
            checked = true;
        }
        assert!(checked);
        // Get all unhealthy connections
        let unhealthy = monitor.get_unhealthy_connections();
        for conn in &unhealthy {
            println!("Unhealthy: {} - {:?}", conn.connection_id, conn.status);
        }
        assert!(unhealthy.is_empty());
        // Monitor Health Status
        let all_health = monitor.get_all_health();
        assert_eq!(all_health.len(), 1);
        for health in all_health {
            println!(
                "{}: {:?} (leaked: {})",
                health.connection_id, health.status, health.is_leaked
            );
        }
    }

    // ---- Pattern 4: Long-Running Operation with Heartbeat ----------------------------------

    type DbConnection = ();

    /// The pool the test's long operation runs against: the operation takes ten minutes
    /// of that pool's time (past its alert and critical thresholds) and runs a sweep.
    static LONG_OP_POOL: std::sync::Mutex<Option<Arc<EnhancedConnectionPool<DbConnection>>>> =
        std::sync::Mutex::new(None);

    async fn perform_long_operation(_: heliosdb_pool::ConnectionId) -> anyhow::Result<()> {
        let pool = LONG_OP_POOL.lock().unwrap().clone();
        if let Some(pool) = pool {
            pool.testing_advance_clock(Duration::from_secs(600));
            pool.sweep_now()?;
        }
        Ok(())
    }

    async fn long_running_operation(
        pool: &EnhancedConnectionPool<DbConnection>,
        leak_detector: &LeakDetector,
    ) -> anyhow::Result<()> {
        let guard = pool.acquire("long_op_user").await?;
        let resource_id = ResourceId::new(guard.connection_id());
        // Changed: the pool itself is told how long this borrow will be held, so its
        // leak alert and reclaim wait that long (the guide's tracker alone does not).
        guard.expect_hold(Duration::from_secs(3600));
        // Track as long-running operation
        let info = ResourceInfo::new(ResourceType::Connection, "long_op_user")
            .with_metadata("operation", "data_migration")
            .with_metadata("expected_duration_sec", "3600");
        leak_detector.track(resource_id.clone(), info)?;
        // Perform operation with periodic heartbeat
        let result = tokio::select! {
            res = perform_long_operation(guard.connection_id()) => res,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {
                Err(anyhow::anyhow!("Operation timeout"))
            }
        };
        // Release tracking
        leak_detector.release(&resource_id)?;
        // Changed: released explicitly, so a reclaimed borrow would fail here.
        guard.release()?;
        result
    }

    /// With auto cleanup on, the declared long operation keeps its connection: ten
    /// minutes of pool time pass during it (past the 30 s alert and the 300 s critical
    /// threshold) and nothing is reported or reclaimed.
    #[tokio::test]
    async fn pattern_4_long_running_operation_with_heartbeat() {
        let pool = Arc::new(EnhancedConnectionPool::new(EnhancedPoolConfig {
            auto_cleanup_enabled: true,
            ..EnhancedPoolConfig::default()
        }));
        pool.add_connection_sync(
            (),
            "long_op_user",
            ConnectionMetadata::for_user("long_op_user"),
        )
        .unwrap();
        *LONG_OP_POOL.lock().unwrap() = Some(pool.clone());
        let leak_detector = LeakDetector::new();
        let outcome = long_running_operation(&pool, &leak_detector).await;
        LONG_OP_POOL.lock().unwrap().take();
        outcome.unwrap();
        assert_eq!(leak_detector.tracked_count(), 0);
        let stats = pool.stats();
        assert_eq!(stats.active_connections, 0);
        assert_eq!(
            (stats.idle_connections, stats.leak_stats.leaks_detected),
            (1, 0)
        );
        assert_eq!(stats.evictions.reclaimed, 0);
    }

    // ---- Monitoring & Debugging: Check Pool Statistics, Get Leak Reports -------------------

    #[test]
    fn monitoring_and_debugging() {
        let pool = EnhancedConnectionPool::builder(EnhancedPoolConfig {
            leak_detection_threshold_ms: 20,
            ..EnhancedPoolConfig::default()
        })
        .build()
        .unwrap();
        let metadata = ConnectionMetadata {
            database: Some("mydb".into()),
            ..ConnectionMetadata::for_user("myuser")
        };
        pool.add_connection_sync((), "myuser", metadata).unwrap();
        let held = pool.try_acquire("myuser").unwrap();
        std::thread::sleep(Duration::from_millis(40));

        // Check Pool Statistics
        let stats = pool.stats();
        println!("Total connections: {}", stats.total_connections);
        println!("Active: {}", stats.active_connections);
        println!("Idle: {}", stats.idle_connections);
        println!("Leaks detected: {}", stats.leak_stats.leaks_detected);
        println!("Current tracked: {}", stats.leak_stats.current_tracked);
        assert_eq!((stats.total_connections, stats.active_connections), (1, 1));

        // Get Leak Reports
        let leaks = pool.leak_detector.check_leaks();
        assert_eq!(leaks.len(), 1);
        for leak in leaks {
            eprintln!("LEAK DETECTED:");
            eprintln!(" Resource: {}", leak.resource_id.as_str());
            eprintln!(" Type: {}", leak.resource_type);
            eprintln!(" Age: {:?}", leak.age);
            eprintln!(" Acquired by: {}", leak.acquired_by);
            eprintln!(" Metadata: {:?}", leak.metadata);
            assert_eq!(leak.acquired_by, "myuser");
            assert_eq!(leak.resource_id.as_str(), held.connection_id().to_string());
            assert!(leak.metadata.contains(&("database".into(), "mydb".into())));
        }
    }
}

// ---- Configuration Examples and Troubleshooting -----------------------------------------

#[test]
fn configuration_examples_are_the_presets() {
    let development = EnhancedPoolConfig {
        max_connections: 100,
        max_per_user: 10,
        acquire_timeout_ms: 5_000,
        idle_timeout_ms: 60_000,        // 1 minute
        max_connection_age_ms: 600_000, // 10 minutes
        health_check_enabled: true,
        health_check_interval_ms: 30_000,
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 10_000, // 10 seconds
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 30_000,
    };
    let staging = EnhancedPoolConfig {
        max_connections: 1_000,
        max_per_user: 50,
        acquire_timeout_ms: 10_000,
        idle_timeout_ms: 180_000,         // 3 minutes
        max_connection_age_ms: 1_800_000, // 30 minutes
        health_check_enabled: true,
        health_check_interval_ms: 60_000,
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 15_000,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 60_000,
    };
    let production = EnhancedPoolConfig {
        max_connections: 10_000,
        max_per_user: 100,
        acquire_timeout_ms: 30_000,
        idle_timeout_ms: 300_000,         // 5 minutes
        max_connection_age_ms: 3_600_000, // 1 hour
        health_check_enabled: true,
        health_check_interval_ms: 60_000,
        leak_detection_enabled: true,
        leak_detection_threshold_ms: 30_000,
        auto_cleanup_enabled: true,
        cleanup_interval_ms: 60_000,
    };
    assert_eq!(development, EnhancedPoolConfig::development());
    assert_eq!(staging, EnhancedPoolConfig::staging());
    assert_eq!(production, EnhancedPoolConfig::production());
    for config in [development, staging, production] {
        drop(EnhancedConnectionPool::<MyConnection>::new(config));
    }
}

#[test]
fn troubleshooting_configs_are_valid() {
    // Problem: Too many leak alerts
    let config = EnhancedPoolConfig {
        leak_detection_threshold_ms: 60_000, // Increase to 1 minute
        ..Default::default()
    };
    config.validate().unwrap();
    // Problem: Connections cleaned up too aggressively
    let config = EnhancedPoolConfig {
        idle_timeout_ms: 600_000,         // 10 minutes
        max_connection_age_ms: 7_200_000, // 2 hours
        ..Default::default()
    };
    config.validate().unwrap();
    // Problem: Memory usage from leak detector
    let leak_config = heliosdb_pool::LeakDetectorConfig {
        max_tracked_resources: 10_000, // Reduce from default
        ..Default::default()
    };
    leak_config.validate().unwrap();
    // Problem: Performance impact from health checks
    let config = EnhancedPoolConfig {
        health_check_interval_ms: 300_000, // 5 minutes instead of 1
        ..Default::default()
    };
    config.validate().unwrap();
    drop(EnhancedConnectionPool::<MyConnection>::new(config));
}
