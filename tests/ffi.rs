//! The C ABI from the outside: compiles the C11 and C++17 programs of `ffi-tests/`
//! against the staticlib (and one against the cdylib) with
//! `-Wall -Wextra -Wpedantic -Werror`, and runs them (lifecycle, threads, bad input,
//! the sweeper's C callbacks and the leak/Prometheus exports, the standalone leak
//! detector and health monitor, the C++ wrapper, the C benchmark program with a few
//! cycles); checks the header's version macros against Cargo.toml; and checks that
//! acquire/release through the C functions allocate nothing.
//!
//! Knobs, used by `.ci/ffi.sh` to rerun the same programs under other tools:
//! - `HELIOSDB_FFI_CFLAGS`: extra compile and link flags (e.g. `-fsanitize=address`);
//! - `HELIOSDB_FFI_RUNNER`: a command the programs run under (e.g. `valgrind ...`);
//! - `HELIOSDB_FFI_SKIP_DYLIB=1`: skip the program linked against the cdylib;
//! - `HELIOSDB_FFI_OUT_DIR`: where to build the programs (default: a directory under
//!   `target/tmp/ffi-tests/` per set of flags).
//!
//! Needs `gcc` and `g++` on PATH.

use std::collections::hash_map::DefaultHasher;
use std::ffi::c_void;
use std::hash::{Hash, Hasher};
use std::mem::{MaybeUninit, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;
use std::sync::OnceLock;

use ::heliosdb_pool::Status;
use ::heliosdb_pool::ffi::*;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// `target/<profile>/deps`: where `cargo test` put the staticlib and cdylib of the
/// library this test was built against (it uplifts them to `target/<profile>` only on
/// `cargo build`, so the copies there may be stale).
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/ffi-<hash>
    exe.parent().expect("target/<profile>/deps").to_path_buf()
}

/// A private snapshot of the staticlib and cdylib, taken once per test run: the target
/// directory is shared, and another cargo command may rewrite the libraries while the
/// programs are being linked. Holds `libheliosdb_pool.a`, the cdylib under its SONAME
/// and a `libheliosdb_pool.so` link to it.
fn libs() -> &'static Path {
    static LIBS: OnceLock<PathBuf> = OnceLock::new();
    LIBS.get_or_init(|| {
        let dir = out_dir().join("lib");
        std::fs::create_dir_all(&dir).expect("create the library snapshot directory");
        let soname = format!("libheliosdb_pool.so.{}", sover());
        for (from, to) in [
            ("libheliosdb_pool.a", "libheliosdb_pool.a"),
            ("libheliosdb_pool.so", soname.as_str()),
        ] {
            copy_with_retry(&deps_dir().join(from), &dir.join(to));
        }
        let link = dir.join("libheliosdb_pool.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&soname, &link).expect("symlink the cdylib");
        dir
    })
}

/// Copies a file that a concurrent cargo build may be replacing right now.
fn copy_with_retry(from: &Path, to: &Path) {
    let tmp = to.with_extension("partial");
    for attempt in 0.. {
        match std::fs::copy(from, &tmp) {
            Ok(_) => {
                std::fs::rename(&tmp, to).expect("move the library snapshot into place");
                return;
            }
            Err(_) if attempt < 50 => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => panic!("copying {}: {e}", from.display()),
        }
    }
}

fn env_words(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `HELIOSDB_FFI_OUT_DIR`, or a build directory per set of extra flags, so flavors do
/// not overwrite each other.
fn out_dir() -> PathBuf {
    let dir = match std::env::var_os("HELIOSDB_FFI_OUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let mut h = DefaultHasher::new();
            env_words("HELIOSDB_FFI_CFLAGS").hash(&mut h);
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("ffi-tests")
                .join(format!("{:016x}", h.finish()))
        }
    };
    std::fs::create_dir_all(&dir).expect("create the ffi-tests build directory");
    dir
}

#[derive(Clone, Copy, PartialEq)]
enum Lang {
    C11,
    C99,
    Cxx17,
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Static,
    Dynamic,
}

fn sover() -> String {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    if major == "0" {
        format!("0.{}", env!("CARGO_PKG_VERSION_MINOR"))
    } else {
        major.to_owned()
    }
}

/// Compiles `ffi-tests/<source>` into `<out>/<name>` and returns the program's path.
fn compile(source: &str, name: &str, lang: Lang, link: Link) -> PathBuf {
    let root = Path::new(MANIFEST_DIR);
    let out = out_dir().join(name);
    let libs = libs();
    let (compiler, std) = match lang {
        Lang::C11 => ("gcc", "-std=c11"),
        Lang::C99 => ("gcc", "-std=c99"),
        Lang::Cxx17 => ("g++", "-std=c++17"),
    };
    let mut cmd = Command::new(compiler);
    if lang == Lang::Cxx17 {
        cmd.args(["-x", "c++"]);
    }
    cmd.arg(std)
        .args(["-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g", "-O1"])
        .args(env_words("HELIOSDB_FFI_CFLAGS"))
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("ffi-tests"))
        .arg(root.join("ffi-tests").join(source));
    if lang == Lang::Cxx17 {
        cmd.args(["-x", "none"]);
    }
    match link {
        Link::Static => {
            cmd.arg(libs.join("libheliosdb_pool.a"));
        }
        Link::Dynamic => {
            // The cdylib's SONAME is libheliosdb_pool.so.<sover>: the snapshot directory
            // has it under that name.
            cmd.arg("-L")
                .arg(libs)
                .arg("-lheliosdb_pool")
                .arg(format!("-Wl,-rpath,{}", libs.display()));
        }
    }
    cmd.args(["-lpthread", "-ldl", "-lm"]).arg("-o").arg(&out);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
    assert!(
        output.status.success(),
        "compiling {source} failed:\n{cmd:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Runs a program (under `HELIOSDB_FFI_RUNNER` if set) and asserts it succeeds.
fn run(program: &Path) -> String {
    run_with(program, &[])
}

/// [`run`] with arguments.
fn run_with(program: &Path, args: &[&str]) -> String {
    let runner = env_words("HELIOSDB_FFI_RUNNER");
    let mut cmd = match runner.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args);
    let output = cmd.output().expect("run the test program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn c_lifecycle() {
    let out = run(&compile(
        "lifecycle.c",
        "lifecycle",
        Lang::C11,
        Link::Static,
    ));
    assert!(out.contains("lifecycle: ok"), "{out}");
}

#[test]
fn c_example_from_the_docs() {
    let out = run(&compile("example.c", "example", Lang::C11, Link::Static));
    assert!(out.contains("closed 4 connections"), "{out}");
}

#[test]
fn c_lifecycle_against_the_cdylib() {
    if std::env::var_os("HELIOSDB_FFI_SKIP_DYLIB").is_some() {
        return;
    }
    let out = run(&compile(
        "lifecycle.c",
        "lifecycle-dylib",
        Lang::C11,
        Link::Dynamic,
    ));
    assert!(out.contains("lifecycle: ok"), "{out}");
}

#[test]
fn c_threads_exclusivity_and_timeouts() {
    let out = run(&compile("threads.c", "threads", Lang::C11, Link::Static));
    assert!(out.contains("timeouts: ok"), "{out}");
}

#[test]
fn c_edges_wraparound_waiters_reentrancy_and_free_racing_release() {
    let out = run(&compile("edges.c", "edges", Lang::C11, Link::Static));
    assert!(out.contains("edges ok"), "{out}");
}

#[test]
fn c_bad_input() {
    let out = run(&compile(
        "bad_input.c",
        "bad_input",
        Lang::C11,
        Link::Static,
    ));
    assert!(out.contains("bad_input: ok"), "{out}");
}

#[test]
fn c_fairness_bound_default_range_and_refusal() {
    let out = run(&compile("fairness.c", "fairness", Lang::C11, Link::Static));
    assert!(out.contains("fairness: ok"), "{out}");
}

#[test]
fn c_sweeper_callbacks_leaks_and_prometheus() {
    let out = run(&compile("sweeper.c", "sweeper", Lang::C11, Link::Static));
    assert!(out.contains("sweeper: ok"), "{out}");
}

#[test]
fn c_standalone_leak_detector_and_health_monitor() {
    let out = run(&compile(
        "standalone.c",
        "standalone",
        Lang::C11,
        Link::Static,
    ));
    assert!(out.contains("standalone: ok"), "{out}");
}

#[test]
fn c_bench_program_builds_and_runs() {
    // A few cycles only: this checks the program (warnings, memory), not the speed;
    // `scripts/bench-c-api.sh` runs it for real.
    let out = run_with(
        &compile("bench_c_api.c", "bench_c_api", Lang::C11, Link::Static),
        &["2000", "3"],
    );
    assert!(out.contains("ns/cycle"), "{out}");
}

#[test]
fn header_alone_and_twice_in_c11_c99_and_cxx17() {
    run(&compile(
        "header_twice.c",
        "header_twice_c11",
        Lang::C11,
        Link::Static,
    ));
    run(&compile(
        "header_twice.c",
        "header_twice_c99",
        Lang::C99,
        Link::Static,
    ));
    run(&compile(
        "header_twice.c",
        "header_twice_cxx",
        Lang::Cxx17,
        Link::Static,
    ));
    run(&compile(
        "header_twice.cpp",
        "header_twice_hpp",
        Lang::Cxx17,
        Link::Static,
    ));
}

#[test]
fn cxx_wrapper() {
    let out = run(&compile(
        "wrapper.cpp",
        "wrapper",
        Lang::Cxx17,
        Link::Static,
    ));
    assert!(out.contains("wrapper: ok"), "{out}");
}

#[test]
fn cxx_pool_destroyed_while_a_lease_is_released_on_another_thread() {
    let out = run(&compile(
        "cxx_free_race.cpp",
        "cxx_free_race",
        Lang::Cxx17,
        Link::Static,
    ));
    assert!(out.contains("cxx_free_race: ok"), "{out}");
}

#[test]
fn cxx_typed_pool() {
    // Pool<T>: unique_ptr ownership, destruction on every path, hooks on T&, string_view
    // users with 0 allocations per acquire (a counting operator new), durations,
    // try_acquire_for, error codes, and the connect hook's text in the timeout error.
    let out = run(&compile(
        "typed_pool.cpp",
        "typed_pool",
        Lang::Cxx17,
        Link::Static,
    ));
    assert!(
        out.contains("typed_pool (call sites: builtins): ok"),
        "{out}"
    );
}

#[test]
fn cxx_wrapper_cxx20_macro_form_and_strict_warnings() {
    // The C++ programs again with -Wconversion -Wshadow -Wold-style-cast: as C++20 (call
    // sites through std::source_location) and as C++17 with HELIOSDB_CPP_NO_SOURCE_LOCATION
    // (the HELIOSDB_HERE macro form). The typed_pool builds are also run.
    let root = Path::new(MANIFEST_DIR);
    let flavors = [
        (
            "typed_pool.cpp",
            "typed_pool_cxx20",
            "-std=c++20",
            None,
            Some("std::source_location"),
        ),
        (
            "typed_pool.cpp",
            "typed_pool_macro",
            "-std=c++17",
            Some("-DHELIOSDB_CPP_NO_SOURCE_LOCATION"),
            Some("HELIOSDB_HERE"),
        ),
        ("wrapper.cpp", "wrapper_strict", "-std=c++17", None, None),
        ("service.cpp", "service_cxx20", "-std=c++20", None, None),
        (
            "bench_cpp.cpp",
            "bench_cpp_strict",
            "-std=c++17",
            None,
            None,
        ),
    ];
    for (source, name, std, define, expect) in flavors {
        let out = out_dir().join(name);
        let mut cmd = Command::new("g++");
        cmd.args(["-x", "c++", std])
            .args(["-Wall", "-Wextra", "-Wpedantic", "-Werror"])
            .args(["-Wconversion", "-Wshadow", "-Wold-style-cast", "-g", "-O1"])
            .args(define)
            .args(env_words("HELIOSDB_FFI_CFLAGS"))
            .arg("-I")
            .arg(root.join("include"))
            .arg("-I")
            .arg(root.join("ffi-tests"))
            .arg(root.join("ffi-tests").join(source))
            .args(["-x", "none"])
            .arg(libs().join("libheliosdb_pool.a"))
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(&out);
        let output = cmd.output().expect("run g++");
        assert!(
            output.status.success(),
            "compiling {source} ({std}) failed:\n{cmd:?}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(expect) = expect {
            let stdout = run(&out);
            let want = format!("typed_pool (call sites: {expect}): ok");
            assert!(stdout.contains(&want), "{stdout}");
        }
    }
}

#[test]
fn cxx_misuse_does_not_compile() {
    // Each MISUSE_* case of ffi-tests/cxx_misuse.cpp must be a compile error (a literal 0
    // timeout, a raw pointer handed to a typed pool, a copied lease, ...); with none
    // defined the well-formed calls compile.
    let root = Path::new(MANIFEST_DIR);
    let check = |case: Option<&str>| -> (bool, String) {
        let mut cmd = Command::new("g++");
        cmd.args(["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
            .arg("-fsyntax-only")
            .arg("-I")
            .arg(root.join("include"))
            .args(case.map(|c| format!("-DMISUSE_{c}")))
            .arg(root.join("ffi-tests").join("cxx_misuse.cpp"));
        let output = cmd.output().expect("run g++");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stderr) = check(None);
    assert!(ok, "the well-formed calls must compile:\n{stderr}");
    for (case, why) in [
        ("LITERAL_ZERO_TIMEOUT", "no matching function"),
        ("INTEGER_TIMEOUT", "no matching function"),
        ("LITERAL_ZERO_LOCATION", "no matching function"),
        ("ZERO_USER", "deleted function"),
        ("NULLPTR_USER", "deleted function"),
        ("RAW_POINTER_TO_TYPED_POOL", "no matching function"),
        ("VOID_POINTER_TO_TYPED_POOL", "no matching function"),
        ("COPY_LEASE", "deleted function"),
        ("WRONG_LEASE_TYPE", "conversion from"),
        ("UNCHECKED_CAST_ON_TYPED_LEASE", "no matching function"),
        ("ARROW_ON_UNTYPED_LEASE", "no matching function"),
        ("EMPLACE_ON_UNTYPED_POOL", "needs a typed Pool<T>"),
        ("COPY_POOL", "deleted function"),
    ] {
        let (ok, stderr) = check(Some(case));
        assert!(!ok, "MISUSE_{case} compiled");
        assert!(
            stderr.contains(why),
            "MISUSE_{case}: expected {why:?}:\n{stderr}"
        );
    }
}

#[test]
fn cxx_example_service() {
    let out = run(&compile(
        "service.cpp",
        "service",
        Lang::Cxx17,
        Link::Static,
    ));
    assert!(out.contains("LEAK alert"), "{out}");
    assert!(out.contains("service.cpp"), "{out}");
    assert!(out.contains("service: ok"), "{out}");
}

#[test]
fn cxx_bench_program_builds_and_runs() {
    // A few cycles only: this checks the program (warnings, memory), not the speed;
    // BENCHMARKS.md gives the command that runs it for real.
    let out = run_with(
        &compile("bench_cpp.cpp", "bench_cpp", Lang::Cxx17, Link::Static),
        &["2000", "3"],
    );
    assert!(out.contains("ratio"), "{out}");
}

#[test]
fn header_version_macros_agree_with_cargo_toml() {
    let toml = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("Cargo.toml")).unwrap();
    let version = toml
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("package version");
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    let header =
        std::fs::read_to_string(Path::new(MANIFEST_DIR).join("include/heliosdb_pool.h")).unwrap();
    let define = |name: &str| -> String {
        header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} missing from the header"))
            .trim()
            .to_owned()
    };
    assert_eq!(define("HELIOSDB_VERSION_MAJOR"), parts[0].to_string());
    assert_eq!(define("HELIOSDB_VERSION_MINOR"), parts[1].to_string());
    assert_eq!(define("HELIOSDB_VERSION_PATCH"), parts[2].to_string());
    assert_eq!(
        define("HELIOSDB_VERSION_NUMBER"),
        (parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]).to_string()
    );
    assert_eq!(define("HELIOSDB_VERSION_STRING"), format!("\"{version}\""));
    assert_eq!(
        (
            heliosdb_version_major(),
            heliosdb_version_minor(),
            heliosdb_version_patch()
        ),
        (
            u32::try_from(parts[0]).unwrap(),
            u32::try_from(parts[1]).unwrap(),
            u32::try_from(parts[2]).unwrap()
        )
    );
}

// ---- acquire/release through the C functions allocate nothing ----

#[path = "support/alloc_counter.rs"]
mod alloc_counter;

#[global_allocator]
static GLOBAL: alloc_counter::Counting = alloc_counter::Counting;

#[test]
fn c_acquire_and_release_allocate_nothing() {
    let mut cfg = MaybeUninit::<heliosdb_pool_config>::uninit();
    let mut pool: *mut heliosdb_pool = ptr::null_mut();
    // SAFETY: valid out-pointers of the right sizes; the connections are never
    // dereferenced (no close callback).
    unsafe {
        assert_eq!(
            heliosdb_pool_config_init(cfg.as_mut_ptr(), size_of::<heliosdb_pool_config>()),
            Status::Ok
        );
        assert_eq!(heliosdb_pool_new(cfg.as_ptr(), &mut pool), Status::Ok);
        for i in 1..=2usize {
            let conn = ptr::without_provenance_mut::<c_void>(i * 8);
            let status = heliosdb_pool_add_connection(
                pool,
                conn,
                c"alice".as_ptr(),
                ptr::null(),
                ptr::null_mut(),
            );
            assert_eq!(status, Status::Ok);
        }
    }
    let mut lease = MaybeUninit::<heliosdb_lease>::uninit();
    let cycle = |lease: &mut MaybeUninit<heliosdb_lease>| {
        // SAFETY: a live pool, NUL-terminated strings, a writable lease that the
        // successful acquire initialized before release reads it.
        unsafe {
            assert_eq!(
                heliosdb_pool_try_acquire(pool, c"alice".as_ptr(), lease.as_mut_ptr()),
                Status::Ok
            );
            assert_eq!(heliosdb_pool_release(pool, lease.as_ptr()), Status::Ok);
            assert_eq!(
                heliosdb_pool_acquire_at(
                    pool,
                    c"alice".as_ptr(),
                    1000,
                    lease.as_mut_ptr(),
                    c"bench.c".as_ptr(),
                    42,
                    c"main".as_ptr()
                ),
                Status::Ok
            );
            assert_eq!(heliosdb_pool_release(pool, lease.as_ptr()), Status::Ok);
        }
    };
    for _ in 0..1000 {
        cycle(&mut lease);
    }
    let allocations = alloc_counter::count_allocations(|| {
        for _ in 0..100_000 {
            cycle(&mut lease);
        }
    });
    // SAFETY: a live pool, no lease out.
    unsafe { heliosdb_pool_free(pool) };
    assert_eq!(
        allocations, 0,
        "acquire/release through the C ABI allocated"
    );
}

/// Every `extern "C"` function runs its body inside the panic boundary
/// (`boundary::call` or `boundary::call_or`), so no panic can unwind into C: checked
/// over the source of `src/ffi/`, export by export, so a new export without it fails.
#[test]
fn every_export_runs_inside_the_panic_boundary() {
    let dir = Path::new(MANIFEST_DIR).join("src").join("ffi");
    let mut exports = 0;
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/ffi") {
        let path = entry.expect("dir entry").path();
        let source = std::fs::read_to_string(&path).expect("read a source file");
        let mut rest = source.as_str();
        while let Some(at) = rest.find("extern \"C\" fn ") {
            let after = &rest[at + "extern \"C\" fn ".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // The body: from the `{` that follows the signature (after `-> Type`).
            let body_start = after.find(") ").map(|i| i + 1).unwrap_or(0);
            let body = &after[body_start..];
            let Some(open) = body.find('{') else { break };
            let first = body[open + 1..]
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("//"))
                .unwrap_or("");
            // Type aliases of callbacks (`Option<unsafe extern "C" fn(...)>`) have no body
            // of their own: they end at `>;` before any `{`.
            let is_alias = body[..open].contains(">;");
            if !is_alias && rest[..at].rfind("#[unsafe(no_mangle)]").is_some() {
                exports += 1;
                if !(first.starts_with("boundary::call(")
                    || first.starts_with("boundary::call_or(")
                    || first.starts_with("boundary::call_recorded("))
                {
                    missing.push(format!("{}: {name}", path.display()));
                }
            }
            rest = after;
        }
    }
    assert!(
        exports > 40,
        "found only {exports} exports: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "exports outside the panic boundary: {missing:#?}"
    );
}

#[test]
fn c_bad_day_discard_reset_failover_thread_names() {
    let out = run(&compile("bad_day.c", "bad_day", Lang::C11, Link::Static));
    assert!(out.contains("bad_day: ok"), "{out}");
}

#[test]
fn c_bounded_users() {
    let out = run(&compile("users.c", "users", Lang::C11, Link::Static));
    assert!(out.contains("users: ok"), "{out}");
}

#[test]
fn c_factory_metadata_backoff_bound_and_free_during_a_connect() {
    let out = run(&compile("factory.c", "factory", Lang::C11, Link::Static));
    assert!(out.contains("factory: ok"), "{out}");
}
