//! What the PostgreSQL adapter's reset costs per release, against the floor of one
//! round trip (an empty query) on the same connection in the same run: each
//! [`ResetMode`] after a clean borrow, after one that left a transaction open, and
//! after one that left it aborted (only the reset is timed). Needs the local
//! PostgreSQL (127.0.0.1:5432, trust auth, database `test`, or `HELIOSDB_PG`); without
//! one it says so and measures nothing.
//!
//! `cargo bench --features postgres --bench postgres_reset`

use std::str::FromStr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use heliosdb_pool::postgres::{PgConnection, ResetMode, reset};
use postgres::{Config, NoTls};

fn connect() -> Option<PgConnection> {
    let conninfo = std::env::var("HELIOSDB_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 dbname=test user=postgres".into());
    let mut config = Config::from_str(&conninfo).expect("HELIOSDB_PG is a connection string");
    config.connect_timeout(Duration::from_secs(3));
    match config.connect(NoTls) {
        Ok(client) => Some(PgConnection::new(client)),
        Err(e) => {
            eprintln!("SKIPPED: postgres_reset: no PostgreSQL answered ({conninfo}): {e}");
            None
        }
    }
}

fn postgres_reset(c: &mut Criterion) {
    let Some(mut conn) = connect() else { return };
    let mut group = c.benchmark_group("postgres_reset");
    group.bench_function("round_trip_floor", |b| {
        b.iter(|| conn.client().batch_execute("").expect("an empty query"))
    });
    for mode in [ResetMode::DiscardAll, ResetMode::KeepDriverStatements] {
        for (state, dirty) in [
            ("clean", ""),
            ("open_transaction", "BEGIN"),
            ("aborted_transaction", "BEGIN; SELECT 1/0"),
        ] {
            group.bench_function(format!("{mode:?}/{state}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if !dirty.is_empty() {
                            // The aborted script fails by design.
                            let _ = conn.client().batch_execute(dirty);
                        }
                        let start = Instant::now();
                        reset(&mut conn, mode).expect("reset");
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, postgres_reset);
criterion_main!(benches);
