//! The main job: a tour of heliosdb-pool in a few seconds.
//!
//! `cargo run --release --example demo`
//!
//! 1. A pool with hooks (health check, connection factory, leak and reclaim callbacks)
//!    and connections for two users.
//! 2. Eight named threads and 64 async tasks borrow under load; every connection
//!    carries an in-use sentinel, so a double or cross-user hand-out would be counted.
//! 3. A borrow held too long: reported at Alert, then Critical, with its call site,
//!    thread and metadata; reclaimed; its late release refused and the connection closed.
//! 4. A connection that starts failing its health check: evicted, replaced by the factory.
//! 5. The waiting path: a caller queued behind a full user and handed a connection; a
//!    timeout.
//! 6. Bad input and the errors it gets.
//! 7. The statistics as a table, and an excerpt of the Prometheus exposition.
//!
//! The hooks run on the pool's sweeper thread; they send what they see to the main
//! thread over a channel, so the output stays in order.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heliosdb_pool::{
    ConnectionId, ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig, Error,
    HealthMonitorConfig, LeakLevel, LeakReport, PooledConnection,
};

/// A stand-in for a real connection (a libpq `PGconn*`, a socket...): a fake backend
/// pid, the user it authenticated as, whether the server still answers, and an in-use
/// sentinel the demo uses to check exclusivity.
struct DemoConnection {
    pid: u32,
    owner: String,
    healthy: AtomicBool,
    in_use: AtomicBool,
    queries: AtomicU64,
    events: Sender<Event>,
}

const FIRST_PID: u32 = 4101;
static NEXT_PID: AtomicU32 = AtomicU32::new(FIRST_PID);
/// Every pid closed, in order: the demo checks that each connection closed exactly once.
static CLOSED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

impl DemoConnection {
    fn open(user: &str, events: &Sender<Event>) -> Self {
        DemoConnection {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            owner: user.to_string(),
            healthy: AtomicBool::new(true),
            in_use: AtomicBool::new(false),
            queries: AtomicU64::new(0),
            events: events.clone(),
        }
    }
}

/// Dropping a connection is closing it: the pool drops each connection exactly once.
impl Drop for DemoConnection {
    fn drop(&mut self) {
        CLOSED.lock().unwrap().push(self.pid);
        let _ = self.events.send(Event::Closed {
            user: self.owner.clone(),
            pid: self.pid,
        });
    }
}

/// What the hooks and connections report to the main thread.
enum Event {
    Leak(LeakReport),
    Reclaimed(LeakReport),
    HealthFailed { pid: u32 },
    Opened { user: String, pid: u32 },
    FactoryRefused { user: String },
    Closed { user: String, pid: u32 },
}

const USERS: [(&str, usize); 2] = [("app", 4), ("reporting", 2)];

fn main() {
    let started = Instant::now();
    let (events_tx, events) = channel::<Event>();
    let mut problems = Vec::new();

    // ---- 1. The pool ------------------------------------------------------------
    let config = EnhancedPoolConfig {
        max_connections: 16,
        max_per_user: 4,
        acquire_timeout_ms: 100,
        health_check_interval_ms: 100,
        leak_detection_threshold_ms: 300,
        cleanup_interval_ms: 100,
        // The guide's development preset for the rest (auto_cleanup_enabled: true).
        ..EnhancedPoolConfig::development()
    };
    let critical = Duration::from_millis(600);
    section("1. A pool with hooks, shortened timings so everything happens in seconds");
    print_config(&config, critical);

    let (leak_tx, reclaim_tx, check_tx, factory_tx) = (
        events_tx.clone(),
        events_tx.clone(),
        events_tx.clone(),
        events_tx.clone(),
    );
    let pool = EnhancedConnectionPool::<DemoConnection>::builder(config)
        .name("demo")
        .leak_critical_threshold(critical)
        .sweep_interval(Duration::from_millis(20))
        .health_policy(HealthMonitorConfig {
            unhealthy_after_failures: 2,
            ..HealthMonitorConfig::default()
        })
        .health_check(move |conn: &DemoConnection| {
            if conn.healthy.load(Ordering::Relaxed) {
                return Ok(());
            }
            let _ = check_tx.send(Event::HealthFailed { pid: conn.pid });
            Err("server closed the connection unexpectedly".to_string())
        })
        .connection_factory(move |user: &str| {
            if USERS.iter().any(|(known, _)| *known == user) {
                let conn = DemoConnection::open(user, &factory_tx);
                let _ = factory_tx.send(Event::Opened {
                    user: user.to_string(),
                    pid: conn.pid,
                });
                Ok(conn)
            } else {
                let _ = factory_tx.send(Event::FactoryRefused {
                    user: user.to_string(),
                });
                Err(format!("no credentials for user {user:?}"))
            }
        })
        .on_leak(move |report| {
            let _ = leak_tx.send(Event::Leak(report.clone()));
        })
        .on_reclaim(move |report| {
            let _ = reclaim_tx.send(Event::Reclaimed(report.clone()));
        })
        .build()
        .expect("a valid configuration");
    let pool = Arc::new(pool);

    for (user, count) in USERS {
        for i in 0..count {
            let metadata = ConnectionMetadata {
                user: user.to_string(),
                database: Some("orders".into()),
                protocol: "postgres".into(),
                remote_addr: Some(format!("10.0.0.{}:5432", i + 1)),
                tags: vec![format!("replica-{i}")],
            };
            let conn = DemoConnection::open(user, &events_tx);
            let pid = conn.pid;
            let id = pool.add_connection_sync(conn, user, metadata).unwrap();
            println!("  added connection {id} (backend pid {pid}) for {user}");
        }
    }
    let resolution = clock_resolution(&pool);
    println!(
        "  the pool's clock is coarse (cheap to read): it advances in steps of {} ms here",
        resolution.as_millis()
    );

    // ---- 2. Load ----------------------------------------------------------------
    section(
        "2. Borrowing under load: 8 threads for 1 s (6 on app's 4 connections, 2 on reporting's 2)",
    );
    let violations = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(1);
    let borrows: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let (pool, violations) = (&pool, &violations);
                std::thread::Builder::new()
                    .name(format!("worker-{t}"))
                    .spawn_scoped(s, move || {
                        let user = if t % 4 == 3 { "reporting" } else { "app" };
                        let mut borrows = 0u64;
                        while Instant::now() < deadline {
                            let conn = pool.blocking_acquire(user).expect("acquire");
                            if conn.owner != user || conn.in_use.swap(true, Ordering::Acquire) {
                                violations.fetch_add(1, Ordering::Relaxed);
                            }
                            conn.queries.fetch_add(1, Ordering::Relaxed);
                            conn.in_use.store(false, Ordering::Release);
                            borrows += 1;
                        }
                        borrows
                    })
                    .expect("spawning a worker")
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let violations = violations.into_inner();
    println!(
        "  {borrows} borrows, {violations} exclusivity or cross-user violations (the sentinel in each connection)"
    );
    if violations != 0 {
        problems.push(format!("{violations} exclusivity violations"));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let async_started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let conn = pool.acquire("app").await.expect("acquire");
                        conn.queries.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(runtime);
    println!(
        "  64 async tasks x 100 borrows over app's 4 connections (acquire().await): {:.0} ms",
        async_started.elapsed().as_secs_f64() * 1e3
    );
    drain(&events, resolution);

    // ---- 3. A leak --------------------------------------------------------------
    section(&format!(
        "3. A borrow held too long: Alert at {} ms, Critical at {} ms, then reclaimed",
        pool.config().leak_detection_threshold_ms,
        critical.as_millis()
    ));
    let (release_tx, release_rx) = channel::<()>();
    let (result_tx, result_rx) = channel::<String>();
    std::thread::scope(|s| {
        let pool = &pool;
        std::thread::Builder::new()
            .name("report-job".into())
            .spawn_scoped(s, move || {
                // The leak: borrowed here, kept while the job "hangs".
                let conn = pool.blocking_acquire("reporting").expect("acquire");
                let _ = result_tx.send(format!(
                    "report-job borrowed connection {} (backend pid {}) at {}",
                    conn.connection_id(),
                    conn.pid,
                    conn.call_site()
                ));
                let _ = release_rx.recv();
                let outcome = match conn.release() {
                    Ok(()) => "Ok".to_string(),
                    Err(e) => format!("Err({e})"),
                };
                let _ = result_tx.send(format!("report-job's late release: {outcome}"));
            })
            .expect("spawning report-job");
        println!("  {}", result_rx.recv().unwrap());

        let mut seen = (false, false, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(seen.0 && seen.1 && seen.2) {
            let Some(event) = next_event(&events, deadline) else {
                problems.push("the leak was not reported at both levels and reclaimed".into());
                break;
            };
            print_event(&event, resolution);
            match &event {
                Event::Leak(r) if r.level == LeakLevel::Alert => {
                    seen.0 = true;
                    // What a caller sees meanwhile, on demand (the guide's monitoring):
                    for b in pool.borrows() {
                        println!(
                            "  pool.borrows(): connection {} of {} held {} at {} by thread {}",
                            b.connection_id,
                            b.user,
                            duration(b.held_for, resolution),
                            b.call_site.map(|c| c.to_string()).unwrap_or_default(),
                            b.thread.as_deref().unwrap_or("?"),
                        );
                    }
                }
                Event::Leak(_) => seen.1 = true,
                Event::Reclaimed(_) => seen.2 = true,
                _ => {}
            }
        }
        release_tx.send(()).unwrap();
        println!("  {}", result_rx.recv().unwrap());
    });
    drain(&events, resolution);
    println!(
        "  reporting is down to {} connection; stats().evictions.reclaimed = {}",
        user_stats(&pool, "reporting").total_connections,
        pool.stats().evictions.reclaimed
    );

    // ---- 4. Health --------------------------------------------------------------
    section("4. A connection fails its health check: evicted, and the factory replaces it");
    let (sick_id, sick_pid) = {
        let conn = pool.try_acquire("app").unwrap();
        conn.healthy.store(false, Ordering::Relaxed); // the server went away
        (conn.connection_id(), conn.pid)
    };
    println!(
        "  connection {sick_id} (backend pid {sick_pid}) stops answering; health checks run on idle connections every 100 ms, 2 failures in a row evict"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut closed, mut opened) = (false, false);
    while !(closed && opened) {
        let Some(event) = next_event(&events, deadline) else {
            problems.push("the unhealthy connection was not evicted and replaced".into());
            break;
        };
        match &event {
            Event::Closed { pid, .. } if *pid == sick_pid => closed = true,
            Event::Opened { .. } if closed => opened = true,
            _ => {}
        }
        print_event(&event, resolution);
    }
    // The factory reports a connection when it opens it, a moment before the pool has
    // it: let the replacement land before counting.
    let settle = Instant::now() + Duration::from_secs(2);
    while user_stats(&pool, "app").total_connections < 4 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(1));
    }
    let app = user_stats(&pool, "app");
    println!(
        "  app has {} connections again; {} health checks so far, {} failed",
        app.total_connections,
        pool.stats().health_checks,
        pool.stats().health_failures
    );

    // ---- 4b. Discard -------------------------------------------------------------
    section("4b. A query fails on a broken connection: the caller discards it");
    let (broken_id, broken_pid) = {
        let conn = pool.try_acquire("app").unwrap();
        let ids = (conn.connection_id(), conn.pid);
        // Not returned for the next borrower: closed now, exactly once.
        conn.discard().unwrap();
        ids
    };
    println!("  connection {broken_id} (backend pid {broken_pid}): discard()");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let Some(event) = next_event(&events, deadline) else {
            problems.push("the discarded connection was not closed".into());
            break;
        };
        print_event(&event, resolution);
        if matches!(event, Event::Closed { pid, .. } if pid == broken_pid) {
            break;
        }
    }
    println!(
        "  stats().evictions.discarded = {}; app is down to {} connections",
        pool.stats().evictions.discarded,
        user_stats(&pool, "app").total_connections
    );
    // Its place is free: the next caller who has to wait is served by the factory.
    let mut busy: Vec<PooledConnection<'_, DemoConnection>> = Vec::new();
    while let Ok(conn) = pool.try_acquire("app") {
        busy.push(conn);
    }
    let (asked, first_new_pid) = (Instant::now(), NEXT_PID.load(Ordering::Relaxed));
    match pool.blocking_acquire_timeout("app", Duration::from_secs(2)) {
        Ok(conn) if conn.pid >= first_new_pid => {
            drain(&events, resolution);
            println!(
                "  with app's {} connections busy, the next caller waited {} and got backend pid {}, opened for it by the factory",
                busy.len(),
                duration(asked.elapsed(), resolution),
                conn.pid
            );
        }
        Ok(conn) => problems.push(format!(
            "the waiter got an old connection (pid {}) with every connection busy",
            conn.pid
        )),
        Err(e) => problems.push(format!(
            "the factory did not replace the discarded connection: {e}"
        )),
    }
    drop(busy);

    // ---- 5. Waiting -------------------------------------------------------------
    section("5. The waiting path: app's 4 connections are all borrowed");
    let mut held: Vec<PooledConnection<'_, DemoConnection>> =
        (0..4).map(|_| pool.try_acquire("app").unwrap()).collect();
    println!(
        "  borrowed at {}, held for {}",
        held[0].call_site(),
        duration(held[0].held_for(), resolution)
    );
    std::thread::scope(|s| {
        let pool = &pool;
        let waiter = std::thread::Builder::new()
            .name("waiter".into())
            .spawn_scoped(s, move || {
                let asked = Instant::now();
                let conn = pool.blocking_acquire("app");
                (asked.elapsed(), conn.map(|c| c.connection_id()))
            })
            .expect("spawning the waiter");
        let until = Instant::now() + Duration::from_secs(2);
        while pool.stats().waiting == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        println!(
            "  a thread asks for app: it queues (stats().waiting = {})",
            pool.stats().waiting
        );
        std::thread::sleep(Duration::from_millis(50));
        let returned = held.pop().unwrap();
        let returned_id = returned.connection_id();
        drop(returned);
        let (waited, got) = waiter.join().unwrap();
        match got {
            Ok(id) => println!(
                "  connection {returned_id} returned 50 ms later goes straight to the waiter: it got {id} after {:.0} ms",
                waited.as_secs_f64() * 1e3
            ),
            Err(e) => {
                problems.push(format!("the waiter failed: {e}"));
                println!("  the waiter failed: {e}");
            }
        }
    });
    held.push(pool.try_acquire("app").unwrap());
    let asked = Instant::now();
    match pool.blocking_acquire("app") {
        Err(e @ Error::Timeout { .. }) => println!(
            "  with all 4 still borrowed, the next caller waits acquire_timeout_ms and gets:\n    {e}  [measured: {:.0} ms]",
            asked.elapsed().as_secs_f64() * 1e3
        ),
        other => problems.push(format!("expected a timeout, got {:?}", other.err())),
    }
    drop(held);

    // ---- 6. Bad input -----------------------------------------------------------
    section("6. Bad input, and what callers get");
    let bad = EnhancedPoolConfig {
        max_per_user: 500,
        ..EnhancedPoolConfig::default()
    };
    show(
        "try_new(max_per_user: 500)",
        EnhancedConnectionPool::<DemoConnection>::try_new(bad).map(|_| ()),
    );
    show(
        "builder.leak_critical_threshold(1 s) under a 10 s alert threshold",
        EnhancedConnectionPool::<DemoConnection>::builder(EnhancedPoolConfig::development())
            .leak_critical_threshold(Duration::from_secs(1))
            .build()
            .map(|_| ()),
    );
    let plain = EnhancedConnectionPool::<DemoConnection>::new(EnhancedPoolConfig::default());
    show(
        "a pool without a factory: try_acquire(\"mallory\")",
        plain.try_acquire("mallory").map(|_| ()),
    );
    show(
        "with the factory: blocking_acquire_timeout(\"mallory\", 150 ms)",
        pool.blocking_acquire_timeout("mallory", Duration::from_millis(150))
            .map(|_| ()),
    );
    drain(&events, resolution);
    show(
        "a fifth connection for app (max_per_user 4)",
        pool.add_connection_sync(
            DemoConnection::open("app", &events_tx),
            "app",
            ConnectionMetadata::for_user("app"),
        )
        .map(|_| ()),
    );
    drain(&events, resolution);
    let handle = pool.try_acquire("app").unwrap().into_raw_handle();
    show(
        "h = try_acquire(\"app\")?.into_raw_handle(); release_raw_handle(h)",
        pool.release_raw_handle(handle),
    );
    show(
        "release_raw_handle(h) again",
        pool.release_raw_handle(handle),
    );
    show(
        "remove_connection(an id never issued)",
        pool.remove_connection(ConnectionId::from_raw(42))
            .map(|_| ()),
    );
    drain(&events, resolution);

    // ---- 7. Statistics ------------------------------------------------------------
    section("7. pool.stats() and pool.prometheus()");
    print_stats(&pool);
    let exposition = pool.prometheus();
    let wanted = [
        "heliosdb_pool_connections{",
        "heliosdb_pool_acquires_total{",
        "heliosdb_pool_acquire_timeouts_total{",
        "heliosdb_pool_leak_reports_total{",
        "heliosdb_pool_evictions_total{",
        "heliosdb_pool_health_check_failures_total{",
        "heliosdb_pool_factory_creates_total{",
        "heliosdb_pool_user_connections{",
    ];
    let excerpt: Vec<&str> = exposition
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .collect();
    println!(
        "\n  Prometheus text ({} of {} lines):",
        excerpt.len(),
        exposition.lines().count()
    );
    for line in excerpt {
        println!("    {line}");
    }

    // ---- Close ----------------------------------------------------------------
    section("Closing");
    pool.close();
    show(
        "try_acquire(\"app\") after close()",
        pool.try_acquire("app").map(|_| ()),
    );
    drop(plain);
    drop(pool);
    drop(events_tx);
    let at_close = events
        .try_iter()
        .filter(|e| matches!(e, Event::Closed { .. }))
        .count();
    let opened = (NEXT_PID.load(Ordering::Relaxed) - FIRST_PID) as usize;
    let mut closed = CLOSED.lock().unwrap().clone();
    closed.sort_unstable();
    closed.dedup();
    let total = CLOSED.lock().unwrap().len();
    println!(
        "  close() closed the remaining {at_close}; in all {opened} connections opened, {total} closes, {} distinct",
        closed.len()
    );
    if total != opened || closed.len() != total {
        problems.push(format!(
            "{opened} connections opened but {total} closes of {} distinct",
            closed.len()
        ));
    }
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("PROBLEM: {p}");
        }
        std::process::exit(1);
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn print_config(c: &EnhancedPoolConfig, critical: Duration) {
    let on = |b: bool| if b { "on" } else { "off" };
    let rows = [
        (
            "max_connections / max_per_user",
            format!("{} / {}", c.max_connections, c.max_per_user),
        ),
        ("acquire_timeout_ms", c.acquire_timeout_ms.to_string()),
        (
            "leak_detection_threshold_ms",
            format!(
                "{} (Alert), {} (Critical, builder), detection {}",
                c.leak_detection_threshold_ms,
                critical.as_millis(),
                on(c.leak_detection_enabled)
            ),
        ),
        (
            "auto_cleanup_enabled",
            format!("{} (reclaim critical leaks)", c.auto_cleanup_enabled),
        ),
        (
            "health_check_interval_ms",
            format!(
                "{} (checks {})",
                c.health_check_interval_ms,
                on(c.health_check_enabled)
            ),
        ),
        (
            "idle_timeout_ms / max_connection_age_ms",
            format!("{} / {}", c.idle_timeout_ms, c.max_connection_age_ms),
        ),
        ("cleanup_interval_ms", c.cleanup_interval_ms.to_string()),
    ];
    for (name, value) in rows {
        println!("  {name:<40} {value}");
    }
}

/// The step of the pool's coarse clock, seen through a borrow's `held_for()` (the
/// clock itself is private): the largest of a few consecutive steps.
fn clock_resolution(pool: &EnhancedConnectionPool<DemoConnection>) -> Duration {
    let conn = pool.try_acquire("app").unwrap();
    let until = Instant::now() + Duration::from_millis(100);
    let (mut last, mut changes, mut step) = (conn.held_for(), 0, Duration::ZERO);
    while changes < 4 && Instant::now() < until {
        let now = conn.held_for();
        if now != last {
            if changes > 0 {
                step = step.max(now - last);
            }
            changes += 1;
            last = now;
        }
        std::hint::spin_loop();
    }
    step.max(Duration::from_millis(1))
}

/// A duration as the coarse clock can tell it: below its resolution, say so.
fn duration(d: Duration, resolution: Duration) -> String {
    if d < resolution {
        format!("< {} ms (clock resolution)", resolution.as_millis())
    } else if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn next_event(events: &Receiver<Event>, deadline: Instant) -> Option<Event> {
    events
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Prints whatever the hooks reported meanwhile.
fn drain(events: &Receiver<Event>, resolution: Duration) {
    while let Ok(event) = events.try_recv() {
        print_event(&event, resolution);
    }
}

/// One line per event, tagged with who reported it (continuation lines indented).
fn print_event(event: &Event, resolution: Duration) {
    let line = |tag: &str, text: String| println!("  {:<11} {text}", format!("[{tag}]"));
    match event {
        Event::Leak(r) => {
            line(
                &r.level.to_string(),
                format!(
                    "connection {} of {} held {}",
                    r.resource_id,
                    r.acquired_by,
                    duration(r.age, resolution)
                ),
            );
            let site = r.call_site.map(|c| c.to_string());
            let metadata: Vec<String> =
                r.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "              taken at {} by thread {}",
                site.as_deref().unwrap_or("?"),
                r.thread.as_deref().unwrap_or("?")
            );
            println!("              metadata: {}", metadata.join(", "));
        }
        Event::Reclaimed(r) => line(
            "RECLAIM",
            format!(
                "connection {}: capacity given back to {}; closed when its holder returns it",
                r.resource_id, r.acquired_by
            ),
        ),
        Event::HealthFailed { pid } => line(
            "health",
            format!("check of backend pid {pid} failed: server closed the connection unexpectedly"),
        ),
        Event::Opened { user, pid } => line(
            "factory",
            format!("opened a connection for {user} (backend pid {pid})"),
        ),
        Event::FactoryRefused { user } => {
            line("factory", format!("refused {user:?}: no credentials"))
        }
        Event::Closed { user, pid } => line("closed", format!("backend pid {pid} ({user})")),
    }
}

fn show(what: &str, result: Result<(), Error>) {
    match result {
        Ok(()) => println!("  {what}\n    -> Ok"),
        Err(e) => println!("  {what}\n    -> Err({:?}): {e}", e.status()),
    }
}

fn user_stats(
    pool: &EnhancedConnectionPool<DemoConnection>,
    user: &str,
) -> heliosdb_pool::UserStats {
    pool.stats()
        .users
        .into_iter()
        .find(|u| u.user == user)
        .unwrap_or_default()
}

fn print_stats(pool: &EnhancedConnectionPool<DemoConnection>) {
    let s = pool.stats();
    println!(
        "  {:<10} {:>6} {:>7} {:>5} {:>8} {:>9} {:>15}",
        "user", "total", "active", "idle", "waiting", "timeouts", "factory errors"
    );
    for u in &s.users {
        println!(
            "  {:<10} {:>6} {:>7} {:>5} {:>8} {:>9} {:>15}",
            u.user,
            u.total_connections,
            u.active_connections,
            u.idle_connections,
            u.waiting,
            u.timeouts,
            u.factory_errors
        );
    }
    println!(
        "  {:<10} {:>6} {:>7} {:>5} {:>8} {:>9} {:>15}",
        "(all)",
        s.total_connections,
        s.active_connections,
        s.idle_connections,
        s.waiting,
        s.timeouts,
        s.factory_errors
    );
    let l = &s.leak_stats;
    let e = &s.evictions;
    let rows = [
        ("acquires", s.acquires.to_string()),
        (
            "leaks",
            format!(
                "{} detected ({} alert, {} critical reports), {} returned late",
                l.leaks_detected, l.alerts, l.criticals, l.returned_after_leak
            ),
        ),
        (
            "evictions",
            format!(
                "health {}, reclaimed {}, idle {}, age {}, removed {}",
                e.health, e.reclaimed, e.idle, e.age, e.removed
            ),
        ),
        (
            "health checks",
            format!("{} ({} failed)", s.health_checks, s.health_failures),
        ),
        (
            "factory",
            format!("{} created, {} errors", s.factory_creates, s.factory_errors),
        ),
        (
            "acquire wait",
            format!(
                "p50 <= {:?}, p99 <= {:?} (histogram bucket bounds)",
                s.acquire_wait.quantile(0.5).unwrap_or_default(),
                s.acquire_wait.quantile(0.99).unwrap_or_default()
            ),
        ),
        (
            "sweeper",
            format!(
                "{} passes, last took {:?}",
                s.sweep.passes, s.sweep.last_duration
            ),
        ),
    ];
    println!();
    for (name, value) in rows {
        println!("  {name:<14} {value}");
    }
}
