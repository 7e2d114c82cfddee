#!/usr/bin/env sh
# Installs the C library of heliosdb-pool: static and shared library (with SONAME),
# include/heliosdb_pool.h, include/heliosdb_pool.hpp and heliosdb_pool.pc.
#
#   scripts/install.sh [--prefix DIR] [--profile release|dev|NAME] [--no-build]
#
# PREFIX (default /usr/local) and DESTDIR (staging root, for packagers) are also read
# from the environment. Idempotent: rerunning overwrites the same files.
#
# So that a program linked with `$(pkg-config --cflags --libs heliosdb_pool)` starts:
# when PREFIX/lib is on the dynamic linker's path (/usr/lib, or listed in
# /etc/ld.so.conf, as /usr/local/lib is on Debian and Fedora) the script runs
# `ldconfig` (as root; otherwise it says to); for any other prefix it prints the rpath
# recipe. With DESTDIR it does neither (the package's own scripts run ldconfig).
# Linux: the shared library is an ELF .so with a SONAME.
set -eu

prefix=${PREFIX:-/usr/local}
profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --profile) profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
destdir=${DESTDIR:-}

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
major=${version%%.*}
rest=${version#*.}
minor=${rest%%.*}
# The shared-object version (as build.rs sets the SONAME): 0.<minor> before 1.0.
if [ "$major" = 0 ]; then sover="0.$minor"; else sover=$major; fi

if [ "$build" = 1 ]; then
  cargo build --quiet --lib --profile "$profile" --manifest-path "$root/Cargo.toml"
fi
case "$profile" in
  dev|test) profile_dir=debug ;;
  bench) profile_dir=release ;;
  *) profile_dir=$profile ;;
esac
libs=${CARGO_TARGET_DIR:-$root/target}/$profile_dir

libdir=$destdir$prefix/lib
incdir=$destdir$prefix/include
pcdir=$libdir/pkgconfig
install -d "$libdir" "$incdir" "$pcdir"
install -m 644 "$libs/libheliosdb_pool.a" "$libdir/libheliosdb_pool.a"
install -m 755 "$libs/libheliosdb_pool.so" "$libdir/libheliosdb_pool.so.$version"
ln -sf "libheliosdb_pool.so.$version" "$libdir/libheliosdb_pool.so.$sover"
ln -sf "libheliosdb_pool.so.$sover" "$libdir/libheliosdb_pool.so"
install -m 644 "$root/include/heliosdb_pool.h" "$incdir/heliosdb_pool.h"
install -m 644 "$root/include/heliosdb_pool.hpp" "$incdir/heliosdb_pool.hpp"

# Libs.private: what the Rust staticlib needs (`--print native-static-libs` on Linux).
cat > "$pcdir/heliosdb_pool.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: heliosdb_pool
Description: Lock-free connection pool with leak detection (C ABI of heliosdb-pool)
Version: $version
Libs: -L\${libdir} -lheliosdb_pool
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
Cflags: -I\${includedir}
PC
echo "installed heliosdb_pool $version into $destdir$prefix"

# --- make programs linked against the shared library start ---
if [ -n "$destdir" ]; then
  exit 0
fi
syslibdir=$prefix/lib
# Whether the dynamic linker searches DIR: its built-in directories, or a line of
# ld.so.conf (and the files it includes).
on_linker_path() {
  case "$1" in
    /lib | /usr/lib | /lib64 | /usr/lib64) return 0 ;;
  esac
  cat /etc/ld.so.conf /etc/ld.so.conf.d/*.conf 2>/dev/null | sed 's/#.*//; s/[[:space:]]*$//' |
    grep -qx "$1"
}
if on_linker_path "$syslibdir"; then
  # The loader finds /usr/local/lib through ld.so.cache only: refresh it.
  ldconfig_bin=$(command -v ldconfig || echo /sbin/ldconfig)
  if [ "$(id -u)" = 0 ] && [ -x "$ldconfig_bin" ]; then
    "$ldconfig_bin"
    echo "ran ldconfig: $syslibdir is on the dynamic linker's path"
  else
    echo "note: run 'sudo ldconfig' so programs find libheliosdb_pool.so.$sover in $syslibdir"
  fi
else
  cat <<HINT
note: $syslibdir is not on the dynamic linker's path, so a program linked against
the shared library needs to be told where it is. Build it with an rpath:
  export PKG_CONFIG_PATH=$pcdir
  cc app.c \$(pkg-config --cflags --libs heliosdb_pool) \\
     -Wl,-rpath,\$(pkg-config --variable=libdir heliosdb_pool) -o app
or run it with LD_LIBRARY_PATH=$syslibdir, or link the static library
(docs/using-from-c.md, "Building and linking").
HINT
fi
