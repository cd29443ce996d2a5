//! A private PostgreSQL server for tests: `initdb` in a temporary directory, `pg_ctl` on a
//! free loopback port (TCP only, no Unix socket), trust authentication for the `postgres`
//! role, stopped (immediate mode) and removed when dropped. Debian's `postgresql` package
//! provides the binaries (`bash tests/run.sh` installs it when missing); as root they run
//! as the `postgres` OS user, since PostgreSQL refuses to run as root.
//!
//! [`Postgres::start`] returns `None`, after a loud message, only when PostgreSQL is not
//! installed and this is not CI (CI installs it, so there a missing server fails the
//! test). A server that is installed but does not start fails the test with its log.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TempDir;

/// A running PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    /// The loopback port it listens on.
    pub port: u16,
    /// Run the binaries through `runuser -u postgres` (we are root).
    as_postgres: bool,
    fsync: bool,
}

impl Postgres {
    /// Starts a server with `fsync` off (tests check our commits, not the disk's; the
    /// benchmark keeps it on). `None` if PostgreSQL is not installed (see the module doc).
    pub fn start() -> Option<Postgres> {
        Self::start_with(false)
    }

    /// Starts a server; `fsync`: as in production.
    pub fn start_with(fsync: bool) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is not installed (tests/run.sh installs Debian's postgresql package)"
            );
            eprintln!(
                "\n==== SKIPPED: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); \
                 run `bash tests/run.sh` or `apt-get install postgresql` ====\n"
            );
            return None;
        };
        let dir = TempDir::new("pg");
        let as_postgres = is_root();
        if as_postgres {
            chown_postgres(dir.path());
        }
        let mut pg = Postgres {
            bin,
            dir,
            port: 0,
            as_postgres,
            fsync,
        };
        let out = pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        // A port that was free a moment ago; another process may take it first, so retry.
        for _ in 0..5 {
            pg.port = free_port();
            if pg.try_start() {
                return Some(pg);
            }
        }
        panic!("PostgreSQL did not start:\n{}", pg.log());
    }

    /// `postgres://postgres@127.0.0.1:PORT/{db}`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name`; returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs `sql` in database `db` with psql; returns its output (unaligned, tuples only).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
        );
        assert!(out.status.success(), "psql {sql:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: connections are cut, as when
    /// the database host goes away). Blocking.
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        let out = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// Starts it again on the same port after [`Postgres::stop`]. Blocking.
    pub fn restart(&self) {
        assert!(
            self.try_start(),
            "PostgreSQL did not restart:\n{}",
            self.log()
        );
    }

    fn try_start(&self) -> bool {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync={} \
             -c max_connections=60 -c shared_buffers=32MB",
            self.port,
            if self.fsync { "on" } else { "off" }
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        )
        .status
        .success()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// The newest installed server's binaries.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_postgres(dir: &Path) {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .output()
        .expect("chown runs");
    assert!(out.status.success(), "chown: {}", text(&out));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
