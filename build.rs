//! Generates `include/heliosdb_pool.h` with cbindgen from `src/ffi/` and `src/error.rs`.
//!
//! The header is committed; this writes it only when its content changed, so a build
//! with no C ABI change leaves the tree untouched and CI can check drift with
//! `git diff --exit-code include/`. With `HELIOSDB_HEADER_STRICT=1` a failure to
//! generate is an error rather than a warning.
//!
//! It also gives the cdylib its SONAME on Linux (`libheliosdb_pool.so.<sover>`).

use std::env;
use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/error.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    // A hand edit of the header is overwritten on the next build, so drift shows up in
    // `git diff include/`.
    println!("cargo:rerun-if-changed=include/heliosdb_pool.h");
    println!("cargo:rerun-if-env-changed=HELIOSDB_HEADER_STRICT");

    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets the version");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,-soname,libheliosdb_pool.so.{}",
            sover(&major, &minor)
        );
    }

    let strict = env::var_os("HELIOSDB_HEADER_STRICT").is_some_and(|v| v == "1");
    if let Err(e) = generate_header() {
        if strict {
            panic!("generating include/heliosdb_pool.h: {e}");
        }
        println!("cargo:warning=include/heliosdb_pool.h not regenerated: {e}");
    }
}

/// The shared-object version: the major version, or `0.<minor>` before 1.0 (where
/// every minor release may break the ABI), as cargo-c does.
fn sover(major: &str, minor: &str) -> String {
    if major == "0" {
        format!("0.{minor}")
    } else {
        major.to_owned()
    }
}

fn generate_header() -> Result<(), String> {
    let root = env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let root = Path::new(&root);
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml"))?;
    let version = |k: &str| env::var(k).map_err(|e| format!("{k}: {e}"));
    let (major, minor, patch) = (
        version("CARGO_PKG_VERSION_MAJOR")?,
        version("CARGO_PKG_VERSION_MINOR")?,
        version("CARGO_PKG_VERSION_PATCH")?,
    );
    let number = major.parse::<u64>().map_err(|e| e.to_string())? * 1_000_000
        + minor.parse::<u64>().map_err(|e| e.to_string())? * 1_000
        + patch.parse::<u64>().map_err(|e| e.to_string())?;
    let macros = format!(
        "\n/** The version of this header; compare with heliosdb_version_major() etc. */\n\
         #define HELIOSDB_VERSION_MAJOR {major}\n\
         #define HELIOSDB_VERSION_MINOR {minor}\n\
         #define HELIOSDB_VERSION_PATCH {patch}\n\
         /** MAJOR * 1000000 + MINOR * 1000 + PATCH. */\n\
         #define HELIOSDB_VERSION_NUMBER {number}\n\
         #define HELIOSDB_VERSION_STRING \"{major}.{minor}.{patch}\"\n"
    );
    config.after_includes = Some(macros + config.after_includes.as_deref().unwrap_or(""));

    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/error.rs"))
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    let text = String::from_utf8(out).map_err(|e| e.to_string())?;
    let text = rename_status_variants(&text);

    let path = root.join("include/heliosdb_pool.h");
    if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    fs::create_dir_all(root.join("include")).map_err(|e| e.to_string())?;
    fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// cbindgen names the variants `HELIOSDB_STATUS_<X>` and has no per-variant rename;
/// the C names are `HELIOSDB_OK` and `HELIOSDB_ERR_<X>`.
fn rename_status_variants(header: &str) -> String {
    header
        .replace("HELIOSDB_STATUS_OK", "HELIOSDB_OK")
        .replace("HELIOSDB_STATUS_", "HELIOSDB_ERR_")
}
