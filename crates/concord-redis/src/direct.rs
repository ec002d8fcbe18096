//! Connections of Concord's own for the reads that return pages of events, read with
//! [`crate::resp`] instead of redis-rs's parser (why: see that module), and for the
//! library's function calls of a few appends at a time (why: docs/design/redis-layout.md).
//!
//! A small pool: a request takes an idle connection (or opens one), sends its pipeline,
//! reads the replies and gives the connection back. A request that is cancelled or fails
//! midway drops its connection, so no connection is ever reused out of step with its
//! replies. A connection that sat idle may have been closed by a Redis restart since: a
//! read that fails on one with an I/O error is sent once more on a new connection (reads
//! change nothing, so sending one twice is harmless). A write is never sent twice: an idle
//! connection is checked for a close before the write goes out on it, and a write that
//! fails after that is the caller's error (Redis may have run it).
//!
//! Plain TCP and Unix sockets only: a `rediss://` store reads through the multiplexed
//! redis-rs connection as before ([`Direct::for_client`] gives `None`).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::error::RedisError;
use crate::resp::{self, Reply, Scanner};

/// Idle connections kept for reuse; more are closed when given back.
const IDLE_MAX: usize = 16;

/// How much a read asks the socket for at least.
const READ_CHUNK: usize = 64 * 1024;

/// Where the connections go, and what to send on each before its first read.
#[derive(Debug)]
pub(crate) struct Direct {
    target: Target,
    /// `AUTH` and `SELECT` as one pipeline (empty when neither is needed), and how many
    /// replies it gets.
    handshake: (Vec<u8>, usize),
    idle: Mutex<Vec<Connection>>,
}

#[derive(Debug)]
enum Target {
    Tcp(String, u16),
    Unix(PathBuf),
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

#[derive(Debug)]
struct Connection {
    socket: Socket,
    buf: BytesMut,
}

impl Direct {
    /// Direct reads for the store `info` points at; `None` for TLS, which keeps reading
    /// through redis-rs.
    pub(crate) fn for_client(info: &ConnectionInfo) -> Option<Direct> {
        let target = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Target::Tcp(host.clone(), *port),
            ConnectionAddr::Unix(path) => Target::Unix(path.clone()),
            _ => return None,
        };
        let settings = info.redis_settings();
        let mut handshake = redis::pipe();
        if let Some(password) = settings.password() {
            let auth = handshake.cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
        }
        if settings.db() != 0 {
            handshake.cmd("SELECT").arg(settings.db());
        }
        Some(Direct {
            target,
            handshake: (handshake.get_packed_pipeline(), handshake.len()),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `pipe` and returns its replies, one per command, within `timeout`: the bytes
    /// of each whole reply, for [`resp::parse`].
    ///
    /// # Errors
    /// [`RedisError::Io`] when Redis cannot be reached, [`RedisError::Timeout`], or
    /// [`RedisError::Reply`] for bytes that are not RESP2. An error reply to one of the
    /// commands is not an error here: it parses as that command's [`Reply::Error`].
    pub(crate) async fn query(
        &self,
        command: &'static str,
        pipe: &redis::Pipeline,
        timeout: Duration,
    ) -> Result<Vec<Bytes>, RedisError> {
        let request = pipe.get_packed_pipeline();
        self.send(command, &request, pipe.len(), timeout, Resend::Read)
            .await
    }

    /// One command that writes, sent at most once (see the module's doc): an I/O error
    /// after it went out is returned, not retried. Its reply's bytes.
    ///
    /// # Errors
    /// As [`Direct::query`].
    pub(crate) async fn write(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<Bytes, RedisError> {
        let request = cmd.get_packed_command();
        let mut replies = self
            .send(command, &request, 1, timeout, Resend::Never)
            .await?;
        replies
            .pop()
            .ok_or_else(|| RedisError::reply(command, "no reply"))
    }

    async fn send(
        &self,
        command: &'static str,
        request: &[u8],
        replies: usize,
        timeout: Duration,
        resend: Resend,
    ) -> Result<Vec<Bytes>, RedisError> {
        let exchange = async {
            let reused = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match (reused, resend) {
                (Some(mut connection), Resend::Read) => {
                    match connection.exchange(command, request, replies).await {
                        Ok(r) => {
                            self.give_back(connection);
                            return Ok(r);
                        }
                        Err(RedisError::Io { .. }) => {} // Closed while idle: once more, anew.
                        Err(e) => return Err(e),
                    }
                }
                (Some(mut connection), Resend::Never) if connection.open() => {
                    let r = connection.exchange(command, request, replies).await?;
                    self.give_back(connection);
                    return Ok(r);
                }
                // Closed while idle (or none idle): a new connection.
                _ => {}
            }
            let mut connection = self.connect(command).await?;
            let r = connection.exchange(command, request, replies).await?;
            self.give_back(connection);
            Ok(r)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RedisError::Timeout { command, timeout })?
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_MAX {
            idle.push(connection);
        }
    }

    async fn connect(&self, command: &'static str) -> Result<Connection, RedisError> {
        let io = |source| RedisError::Io { command, source };
        let socket = match &self.target {
            Target::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(io)?;
                stream.set_nodelay(true).map_err(io)?;
                Socket::Tcp(stream)
            }
            Target::Unix(path) => Socket::Unix(UnixStream::connect(path).await.map_err(io)?),
        };
        let mut connection = Connection {
            socket,
            buf: BytesMut::with_capacity(READ_CHUNK),
        };
        let (request, replies) = &self.handshake;
        if *replies > 0 {
            // Named as the store's own first connection is: AUTH, SELECT or both.
            let command = "CONNECT";
            for frame in connection.exchange(command, request, *replies).await? {
                let reply = resp::parse_reply(command, &frame)?;
                if let Reply::Error(message) = reply {
                    return Err(RedisError::Server { command, message });
                }
            }
        }
        Ok(connection)
    }
}

/// Whether a request may be sent again after an I/O error on a reused connection.
#[derive(Clone, Copy, Debug)]
enum Resend {
    Read,
    Never,
}

impl Connection {
    /// Whether the connection still looks open: nothing is waiting on it, and Redis has
    /// not closed it (a restart while it sat idle). A close the runtime has not noticed
    /// yet passes; the write on it then fails and is not sent again.
    fn open(&self) -> bool {
        let mut probe = [0u8; 1];
        let read = match &self.socket {
            Socket::Tcp(s) => s.try_read(&mut probe),
            Socket::Unix(s) => s.try_read(&mut probe),
        };
        matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn exchange(
        &mut self,
        command: &'static str,
        request: &[u8],
        replies: usize,
    ) -> Result<Vec<Bytes>, RedisError> {
        let io = |source| RedisError::Io { command, source };
        match &mut self.socket {
            Socket::Tcp(s) => s.write_all(request).await,
            Socket::Unix(s) => s.write_all(request).await,
        }
        .map_err(io)?;
        let mut out = Vec::with_capacity(replies);
        let mut scanner = Scanner::default();
        while out.len() < replies {
            let scanned = scanner
                .scan(&self.buf)
                .map_err(|e| RedisError::reply(command, e.to_string()))?;
            if let Some(end) = scanned {
                out.push(self.buf.split_to(end).freeze());
                continue;
            }
            self.buf.reserve(READ_CHUNK);
            let read = match &mut self.socket {
                Socket::Tcp(s) => s.read_buf(&mut self.buf).await,
                Socket::Unix(s) => s.read_buf(&mut self.buf).await,
            }
            .map_err(io)?;
            if read == 0 {
                return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Ok(out)
    }
}
