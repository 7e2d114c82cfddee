//! Memory of a 10k and a 1M pool: heap bytes per slot (a counting global allocator)
//! and resident memory (`VmRSS` from `/proc/self/status`), for the empty pool as built
//! and after every slot holds a connection (one `u64`, one user, metadata from
//! `ConnectionMetadata::for_user`). Each pool is built and dropped in turn.
//!
//! Prints a table and writes `target/heliosdb-bench/memory.json`.
//!
//! `cargo bench --bench memory`

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use heliosdb_pool::{ConnectionMetadata, EnhancedConnectionPool, EnhancedPoolConfig};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to `System` unchanged, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// `VmRSS` of this process in bytes.
fn rss() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<isize>().ok())
        .map_or(-1, |kb| kb * 1024)
}

struct Row {
    slots: usize,
    heap_empty: isize,
    rss_empty: isize,
    heap_full: isize,
    rss_full: isize,
    fill_ms: f64,
    drop_ms: Option<f64>,
}

fn measure(slots: usize) -> Row {
    let (heap0, rss0) = (live(), rss());
    let pool = EnhancedConnectionPool::<u64>::new(EnhancedPoolConfig {
        max_connections: slots,
        max_per_user: slots,
        ..EnhancedPoolConfig::default()
    });
    let (heap_empty, rss_empty) = (live() - heap0, rss() - rss0);
    let start = Instant::now();
    for i in 0..slots as u64 {
        pool.add_connection_sync(i, "bench", ConnectionMetadata::for_user("bench"))
            .expect("add_connection_sync");
    }
    let fill_ms = start.elapsed().as_secs_f64() * 1e3;
    let (heap_full, rss_full) = (live() - heap0, rss() - rss0);
    // Borrow and return once so the pool is used.
    drop(pool.try_acquire("bench").unwrap());
    // Dropping a full pool closes every connection. At the time of writing that is
    // quadratic in the slot count (a 1M pool did not finish dropping in 10 minutes),
    // so pools above `HELIOSDB_BENCH_MEMORY_DROP_MAX` slots (default 100k) are leaked
    // at the end of the process instead; `drop_ms` is then null.
    let drop_max: usize = std::env::var("HELIOSDB_BENCH_MEMORY_DROP_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let drop_ms = if slots <= drop_max {
        let start = Instant::now();
        drop(pool);
        Some(start.elapsed().as_secs_f64() * 1e3)
    } else {
        std::mem::forget(pool);
        None
    };
    Row {
        slots,
        heap_empty,
        rss_empty,
        heap_full,
        rss_full,
        fill_ms,
        drop_ms,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rows: Vec<Row> = [10_000, 1_000_000]
        .into_iter()
        .map(|slots| {
            let row = measure(slots);
            eprintln!(
                "measured {slots} slots (fill {:.0} ms, drop {})",
                row.fill_ms,
                row.drop_ms
                    .map_or_else(|| String::from("skipped"), |d| format!("{d:.0} ms"))
            );
            row
        })
        .collect();
    let mib = |b: isize| b as f64 / (1024.0 * 1024.0);
    println!(
        "{:>9} {:>16} {:>14} {:>16} {:>14} {:>16} {:>15} {:>9}",
        "slots",
        "heap empty B/slot",
        "RSS empty MiB",
        "heap full B/slot",
        "RSS full MiB",
        "heap empty MiB",
        "heap full MiB",
        "fill ms"
    );
    let mut json = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let per_empty = r.heap_empty as f64 / r.slots as f64;
        let per_full = r.heap_full as f64 / r.slots as f64;
        println!(
            "{:>9} {:>16.1} {:>14.1} {:>16.1} {:>14.1} {:>16.1} {:>15.1} {:>9.0}",
            r.slots,
            per_empty,
            mib(r.rss_empty),
            per_full,
            mib(r.rss_full),
            mib(r.heap_empty),
            mib(r.heap_full),
            r.fill_ms
        );
        let _ = writeln!(
            json,
            "  {{\"slots\": {}, \"heap_bytes_empty\": {}, \"heap_bytes_per_slot_empty\": {per_empty:.1}, \
             \"rss_bytes_empty\": {}, \"heap_bytes_full\": {}, \"heap_bytes_per_slot_full\": {per_full:.1}, \
             \"rss_bytes_full\": {}, \"fill_ms\": {:.1}, \"drop_ms\": {}}}{}",
            r.slots,
            r.heap_empty,
            r.rss_empty,
            r.heap_full,
            r.rss_full,
            r.fill_ms,
            r.drop_ms
                .map_or_else(|| String::from("null"), |d| format!("{d:.1}")),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    json.push_str("]\n");
    let path = common::out_dir().join("memory.json");
    std::fs::write(&path, json).expect("write memory.json");
    println!("written to {}", path.display());
}
