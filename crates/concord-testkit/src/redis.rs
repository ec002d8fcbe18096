//! A real `redis-server` for tests, started and stopped by the test itself.
//!
//! Each server gets its own temporary directory and an ephemeral port on 127.0.0.1 (never
//! the machine's service on 6379). It runs under a small `sh` guard that holds the read end
//! of a pipe from the test process: when the test binary exits, even by a panic or a
//! signal, the pipe closes and the guard `kill -9`s the server, so no server outlives its
//! tests. [`RedisServer`] also kills and waits for it in `Drop`.
//!
//! Most tests share one server per test binary ([`shared`]) and keep apart by giving each
//! store its own key prefix ([`unique_prefix`]), which is cheaper than a server per test and
//! safer than `FLUSHDB`. Tests that kill or restart Redis start their own.
//!
//! A missing `redis-server` is a failure naming the Debian package, never a silent skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::server::{START_ATTEMPTS, free_port, retry_start};

/// How a test server persists data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// `--save "" --appendonly no`: nothing survives a restart (the default).
    #[default]
    None,
    /// `--appendonly yes --appendfsync always`: every acknowledged write survives `kill -9`.
    AppendFsyncAlways,
    /// `--appendonly yes --appendfsync everysec`.
    AppendFsyncEverySec,
}

/// Options for [`RedisServer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct RedisServerOptions {
    /// Persistence mode.
    pub persistence: Persistence,
    /// Serve TLS only (`--port 0 --tls-port <port>`), with a certificate for `127.0.0.1` and
    /// `localhost` signed by a throw-away CA ([`RedisServer::tls_ca_pem`]). Needs `openssl`.
    pub tls: bool,
    /// Ask clients for this password (`--requirepass`); [`RedisServer::url`] carries it.
    pub password: Option<String>,
}

/// A `redis-server` child process with its own directory and port.
#[derive(Debug)]
pub struct RedisServer {
    options: RedisServerOptions,
    dir: tempfile::TempDir,
    port: u16,
    process: Option<Running>,
    /// Whether the guard deletes the directory when the test binary exits: for the shared
    /// server, which is never dropped (and never restarted).
    remove_dir_on_exit: bool,
}

#[derive(Debug)]
struct Running {
    /// The `sh` guard; it exits when the server does.
    guard: Child,
    /// The write end of the guard's pipe; dropping it makes the guard kill the server.
    _lifeline: ChildStdin,
    /// The server's own pid, for `kill -9`.
    pid: u32,
}

const READY_TIMEOUT: Duration = Duration::from_secs(15);

fn redis_server_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`redis-server` was not found on PATH. The Redis tests need a real Redis >= 7: \
                 install the Debian package `redis-server` (apt-get install -y redis-server)"
            )
        })
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run `openssl` ({e}); the TLS tests need the Debian package `openssl` (apt-get install -y openssl)")
    });
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A throw-away CA (`ca.crt`) and a server certificate for 127.0.0.1 and localhost signed by
/// it (`redis.crt`, `redis.key`). A CA separate from the leaf, because rustls refuses a CA
/// certificate used as a server's own.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the certificate extensions");
    let subject_ca = "/CN=concord test CA";
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", subject_ca,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// Sends `PING` and reads the reply; `true` on `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    // A server that asks for a password answers NOAUTH: it is up all the same.
    matches!(s.read(&mut buf), Ok(n) if buf.get(..n).is_some_and(|b| b.starts_with(b"+PONG") || b.starts_with(b"-NOAUTH")))
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> RedisServer {
        Self::start_with(RedisServerOptions::default())
    }

    /// Starts a server with `options` on a fresh directory and ephemeral port.
    pub fn start_with(options: RedisServerOptions) -> RedisServer {
        Self::launch(options, false)
    }

    fn launch(options: RedisServerOptions, remove_dir_on_exit: bool) -> RedisServer {
        let binary = redis_server_binary();
        let new_dir = || {
            let dir = tempfile::Builder::new()
                .prefix("concord-redis-")
                .tempdir()
                .expect("create a temp dir for redis-server");
            if options.tls {
                make_certificates(dir.path());
            }
            dir
        };
        let mut dir = new_dir();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut server = RedisServer {
                options: options.clone(),
                dir,
                port,
                process: None,
                remove_dir_on_exit,
            };
            match server.spawn(&binary) {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    dir = server.take_dir();
                    // The guard of a failed attempt may have deleted it.
                    if !dir.path().exists() {
                        dir = new_dir();
                    }
                }
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        // Move the directory out; `self` is dropped without a process.
        let placeholder = tempfile::tempdir().expect("create a placeholder temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = if self.options.tls {
            let file = |name: &str| self.dir.path().join(name).display().to_string();
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
                "--tls-cert-file".into(),
                file("redis.crt"),
                "--tls-key-file".into(),
                file("redis.key"),
                "--tls-ca-cert-file".into(),
                file("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        } else {
            vec!["--port".into(), self.port.to_string()]
        };
        args.extend::<[String; 10]>([
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--save".into(),
            String::new(),
            "--logfile".into(),
            "redis.log".into(),
        ]);
        let (appendonly, fsync) = match self.options.persistence {
            Persistence::None => ("no", "everysec"),
            Persistence::AppendFsyncAlways => ("yes", "always"),
            Persistence::AppendFsyncEverySec => ("yes", "everysec"),
        };
        if let Some(password) = &self.options.password {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        args.extend([
            "--appendonly".into(),
            appendonly.into(),
            "--appendfsync".into(),
            fsync.into(),
        ]);
        args
    }

    /// Starts the process on this server's port and directory and waits for `PING`.
    fn spawn(&mut self, binary: &Path) -> Result<(), String> {
        // The guard starts the server, prints its pid, and kills it when its stdin (our
        // pipe) closes. `<&3` because a background job's stdin is otherwise /dev/null.
        let script = r#"exec 3<&0
"$0" "$@" </dev/null >/dev/null 2>&1 &
pid=$!
echo "$pid"
( cat <&3 >/dev/null; kill -9 "$pid" 2>/dev/null; [ -z "$CONCORD_REDIS_RM_DIR" ] || rm -rf "$CONCORD_REDIS_RM_DIR" ) &
wait "$pid""#;
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(binary)
            .args(self.args())
            .env(
                "CONCORD_REDIS_RM_DIR",
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
            .map_err(|e| format!("cannot run sh to start redis-server: {e}"))?;
        let lifeline = guard
            .stdin
            .take()
            .ok_or("no stdin pipe to the redis-server guard")?;
        let stdout = guard
            .stdout
            .take()
            .ok_or("no stdout pipe from the redis-server guard")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the redis-server pid: {e}"))?;
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
            // A TLS server cannot be PINGed in plain text; an open port means it listens.
            let ready = if self.options.tls {
                TcpStream::connect_timeout(
                    &([127, 0, 0, 1], self.port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            } else {
                ping(self.port)
            };
            if ready {
                return Ok(());
            }
            let exited = self
                .process
                .as_mut()
                .is_some_and(|p| matches!(p.guard.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING: {tail}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://` for a TLS server, `redis://:<password>@…`
    /// for one that asks for a password).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        let auth = match &self.options.password {
            Some(password) => format!(":{password}@"),
            None => String::new(),
        };
        format!("{scheme}://{auth}127.0.0.1:{}/0", self.port)
    }

    /// The PEM of the CA that signed a TLS server's certificate (`None` without TLS).
    pub fn tls_ca_pem(&self) -> Option<Vec<u8>> {
        self.options.tls.then(|| {
            std::fs::read(self.dir.path().join("ca.crt")).expect("read the test CA certificate")
        })
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (the AOF lives under it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// `kill -9`s the server and waits for it to exit. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(p.pid.to_string())
                .status();
            let _ = p.guard.wait();
            // The server has exited once the guard's `wait` returned; dropping the lifeline
            // ends the guard's watcher.
        }
    }

    /// Starts the server again on the same directory and port (after [`RedisServer::kill`]),
    /// so clients reconnect to the same address and the AOF is replayed, after repairing
    /// the AOF as an operator must after a crash ([`repair_aof`]).
    pub fn restart(&mut self) {
        self.kill();
        if self.options.persistence != Persistence::None {
            repair_aof(self.dir.path());
        }
        let binary = redis_server_binary();
        let what = format!("redis-server (again, on port {})", self.port);
        retry_start(&what, Duration::from_millis(200), || self.spawn(&binary));
    }
}

/// Runs `redis-check-aof --fix` on the AOF in `dir`, as docs/design/redis-layout.md
/// ("Crash") tells operators to after Redis died: Redis 7 itself, loading an AOF whose last
/// write was cut short inside a `MULTI` block (a function's effects), truncates it after the
/// last whole command but leaves the `MULTI` open, so its next load runs the first half of
/// that block together with the next one (shown with `redis-server` 7.0.15; fixed in Valkey
/// by valkey-io/valkey#4342). `redis-check-aof` truncates before the `MULTI` instead.
///
/// # Panics
/// When `redis-check-aof` (Debian package `redis-tools`, a dependency of `redis-server`)
/// is missing or cannot repair the file.
fn repair_aof(dir: &Path) {
    let manifest = dir.join("appendonlydir").join("appendonly.aof.manifest");
    if !manifest.is_file() {
        return;
    }
    let mut child = Command::new("redis-check-aof")
        .arg("--fix")
        .arg(&manifest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `redis-check-aof` ({e}); restarting Redis after a kill needs it: \
                 install the Debian package `redis-tools` (apt-get install -y redis-tools)"
            )
        });
    // It asks before truncating; the answer goes in up front.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"y\n");
    }
    let output = child.wait_with_output().expect("wait for redis-check-aof");
    assert!(
        output.status.success(),
        "redis-check-aof --fix {} failed: {}{}",
        manifest.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server shared by every test of this test binary (started on first use; stopped by
/// its guard when the binary exits).
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    // A static is never dropped: the guard deletes the directory at exit instead.
    SERVER.get_or_init(|| RedisServer::launch(RedisServerOptions::default(), true))
}

/// A key prefix no other test of any test binary uses: `test-<pid>-<n>`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
