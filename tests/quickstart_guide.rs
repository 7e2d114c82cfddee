//! The design guide's (`shared/seed/quick-start-guide.txt`) pool examples, changed only in
//! crate paths. The reader's own stand-ins (MyConnection, execute_query, ...) are defined
//! at the bottom, as a reader of the guide would write them.
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
