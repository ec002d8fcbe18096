//! A throwaway PostgreSQL for tests, started and stopped by the test itself.
//!
//! `initdb` makes a cluster in a fresh temporary directory; the server listens on an
//! ephemeral port on 127.0.0.1 and on a Unix socket in its own directory, with `fsync` on
//! (the durability the tests check is the real one). It never touches a server that is
//! already running (the machine's own on 5432 is left alone). PostgreSQL refuses to run as
//! root, so as root every server command runs as the user `postgres` (through `setpriv`)
//! and the directory is handed to that user.
//!
//! As with `redis-server`, the postmaster runs under a small `sh` guard that holds the read
//! end of a pipe from the test process: when the test binary exits, even by a panic or a
//! signal, the pipe closes and the guard `kill -9`s the server and deletes its directory.
//! [`PostgresServer`] also kills it in `Drop`.
//!
//! Tests share one server per test binary ([`shared`]) and keep apart by schema
//! ([`unique_schema`], the store URL's `?schema=`), which is cheaper than a server per test.
//!
//! Missing binaries are a failure naming the Debian package `postgresql`, never a skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::server::{free_port, retry_start};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL server (postmaster) with its own cluster directory, port and socket dir.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    process: Option<Running>,
    /// Whether the guard deletes the directory when the test binary exits (the shared
    /// server, which is never dropped).
    remove_dir_on_exit: bool,
    /// More `-c name=value` settings (a standby's `cluster_name`).
    settings: Vec<String>,
}

#[derive(Debug)]
struct Running {
    guard: Child,
    _lifeline: ChildStdin,
    pid: u32,
}

/// The directory holding `initdb`, `postgres` and `pg_isready`: the newest
/// `/usr/lib/postgresql/<major>/bin`, or `CONCORD_PG_BIN`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONCORD_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL was not found under /usr/lib/postgresql/*/bin. The Postgres tests need \
             a real PostgreSQL: install the Debian package `postgresql` \
             (apt-get install -y postgresql), or set CONCORD_PG_BIN to its bin directory"
        )
    })
}

fn is_root() -> bool {
    // `id -u` rather than libc: the testkit has no unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A command for a PostgreSQL binary, run as `postgres` when we are root.
fn pg_command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    /// Makes a fresh cluster and starts it.
    pub fn start() -> PostgresServer {
        Self::launch(false, Vec::new())
    }

    /// As [`PostgresServer::start`], with more `name=value` settings on the command line
    /// (for a test that needs one the shared server lacks, such as a preloaded library).
    ///
    /// # Panics
    /// As [`PostgresServer::start`].
    pub fn start_with(settings: &[&str]) -> PostgresServer {
        Self::launch(false, settings.iter().map(|s| (*s).to_owned()).collect())
    }

    fn launch(remove_dir_on_exit: bool, settings: Vec<String>) -> PostgresServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("concord-pg-")
            .tempdir()
            .expect("create a temp dir for PostgreSQL");
        let root = is_root();
        let chown = |path: &Path| {
            if root {
                let status = Command::new("chown")
                    .arg("-R")
                    .arg("postgres:postgres")
                    .arg(path)
                    .status()
                    .expect("run chown");
                assert!(status.success(), "chown postgres {} failed", path.display());
            }
        };
        std::fs::create_dir(dir.path().join("sock")).expect("create the socket dir");
        chown(dir.path());
        let output = pg_command(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb ({e})"));
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut server = PostgresServer {
            bin,
            dir,
            port: 0,
            process: None,
            remove_dir_on_exit,
            settings,
        };
        retry_start("PostgreSQL", Duration::ZERO, || {
            server.port = free_port();
            server.spawn()
        });
        server
    }

    fn spawn(&mut self) -> Result<(), String> {
        let sock = self.dir.path().join("sock");
        // The guard starts the postmaster, prints its pid, and kills it when its stdin (our
        // pipe) closes. `<&3` because a background job's stdin is otherwise /dev/null.
        let script = r#"exec 3<&0
"$@" </dev/null >>"$CONCORD_PG_LOG" 2>&1 &
pid=$!
echo "$pid"
( cat <&3 >/dev/null; kill -9 "$pid" 2>/dev/null; [ -z "$CONCORD_PG_RM_DIR" ] || { sleep 1; rm -rf "$CONCORD_PG_RM_DIR"; } ) &
wait "$pid""#;
        let server = pg_command(&self.bin.join("postgres"));
        let mut args: Vec<String> = vec![server.get_program().to_string_lossy().into_owned()];
        args.extend(server.get_args().map(|a| a.to_string_lossy().into_owned()));
        args.extend([
            "-D".into(),
            self.dir.path().join("data").display().to_string(),
            "-c".into(),
            format!("port={}", self.port),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            format!("unix_socket_directories={}", sock.display()),
            "-c".into(),
            "fsync=on".into(),
            "-c".into(),
            "synchronous_commit=on".into(),
            "-c".into(),
            "max_connections=200".into(),
            "-c".into(),
            "shared_buffers=32MB".into(),
            "-c".into(),
            "wal_level=replica".into(),
        ]);
        for setting in &self.settings {
            args.extend(["-c".into(), setting.clone()]);
        }
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(&args)
            .env("CONCORD_PG_LOG", self.dir.path().join("server.log"))
            .env(
                "CONCORD_PG_RM_DIR",
                if self.remove_dir_on_exit {
                    self.dir.path().as_os_str()
                } else {
                    "".as_ref()
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh to start postgres: {e}"))?;
        let lifeline = guard.stdin.take().ok_or("no stdin pipe to the guard")?;
        let stdout = guard.stdout.take().ok_or("no stdout pipe from the guard")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the postgres pid: {e}"))?;
        let pid: u32 = line
            .trim()
            .parse()
            .map_err(|_| format!("the guard printed {line:?}, not a pid"))?;
        self.process = Some(Running {
            guard,
            _lifeline: lifeline,
            pid,
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&sock)
                .arg("-p")
                .arg(self.port.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            let exited = self
                .process
                .as_mut()
                .is_some_and(|p| matches!(p.guard.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                self.kill();
                return Err(format!(
                    "postgres on port {} did not become ready: {tail}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A primary with a synchronous streaming standby (every commit waits for it), and the
    /// store URL that lists both with `target_session_attrs=read-write`, so a client finds
    /// whichever is primary: the setting of the failover tests.
    ///
    /// # Panics
    /// As [`PostgresServer::start`] and [`PostgresServer::start_standby_of`].
    pub fn start_with_synchronous_standby() -> (PostgresServer, PostgresServer, String) {
        let primary = PostgresServer::start();
        let standby = PostgresServer::start_standby_of(&primary);
        primary.make_synchronous();
        let url = format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            primary.port(),
            standby.port()
        );
        (primary, standby, url)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started on its own port with
    /// `cluster_name=standby`; [`PostgresServer::make_synchronous`] on the primary makes
    /// every commit wait for it.
    ///
    /// # Panics
    /// When the base backup or the start fails.
    pub fn start_standby_of(primary: &PostgresServer) -> PostgresServer {
        let dir = tempfile::Builder::new()
            .prefix("concord-pg-standby-")
            .tempdir()
            .expect("create a temp dir for the standby");
        std::fs::create_dir(dir.path().join("sock")).expect("create the socket dir");
        if is_root() {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown postgres failed");
        }
        let output = pg_command(&primary.bin.join("pg_basebackup"))
            .arg("-h")
            .arg(primary.socket_dir())
            .arg("-p")
            .arg(primary.port.to_string())
            .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .expect("run pg_basebackup");
        assert!(
            output.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut standby = PostgresServer {
            bin: primary.bin.clone(),
            dir,
            port: 0,
            process: None,
            remove_dir_on_exit: false,
            settings: vec!["cluster_name=standby".into(), "hot_standby=on".into()],
        };
        retry_start("the standby", Duration::ZERO, || {
            standby.port = free_port();
            standby.spawn()
        });
        standby
    }

    /// Makes every commit on this primary wait for the standby named `standby`
    /// (`synchronous_commit = on`), and waits until the standby streams synchronously.
    ///
    /// # Panics
    /// When the standby does not become synchronous within 30 s.
    pub fn make_synchronous(&self) {
        self.psql("ALTER SYSTEM SET synchronous_standby_names = 'standby'");
        self.psql("SELECT pg_reload_conf()");
        let deadline = Instant::now() + READY_TIMEOUT;
        while self
            .psql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
            .trim()
            != "1"
        {
            assert!(
                Instant::now() < deadline,
                "the standby did not become synchronous"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Promotes a standby to primary (`pg_ctl promote -w`).
    ///
    /// # Panics
    /// When `pg_ctl promote` fails.
    pub fn promote(&self) {
        let output = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-w", "-t", "60", "promote"])
            .output()
            .expect("run pg_ctl promote");
        assert!(
            output.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`: the store URL of the server's default
    /// database (trust authentication), without a schema.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A store URL of a schema no other test uses ([`unique_schema`]).
    pub fn url_with_fresh_schema(&self) -> String {
        format!("{}?schema={}", self.url(), unique_schema())
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Runs SQL through `psql` as the superuser and returns its unaligned output.
    ///
    /// # Panics
    /// When `psql` fails.
    pub fn psql(&self, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .arg("-X")
            .arg("-At")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// `kill -9`s the postmaster and waits for it. Idempotent. Its backends notice the
    /// postmaster's death and exit; a restart runs crash recovery.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(p.pid.to_string())
                .status();
            let _ = p.guard.wait();
        }
    }

    /// Starts the server again on the same cluster and port (after [`PostgresServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let what = format!("PostgreSQL (again, on port {})", self.port);
        retry_start(&what, Duration::from_millis(500), || self.spawn());
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server shared by every test of this test binary (started on first use; killed and
/// deleted by its guard when the binary exits).
pub fn shared() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| PostgresServer::launch(true, Vec::new()))
}

/// A schema name no other test of any test binary uses: `test_<pid>_<n>`.
pub fn unique_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_server_answers_and_is_gone_after_kill() {
        let mut server = PostgresServer::start();
        assert_eq!(server.psql("SELECT 1 + 1").trim(), "2");
        assert_eq!(server.psql("SHOW fsync").trim(), "on");
        assert_ne!(server.port(), 5432);
        server.kill();
        assert!(!server.is_running());
    }
}
