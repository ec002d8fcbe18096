//! What the harnesses that start a real server (`redis-server`, PostgreSQL) share: an
//! ephemeral port, and a start retried when another process took that port first.

use std::net::TcpListener;
use std::time::Duration;

/// How many times a server start is tried before the test gives up.
pub(crate) const START_ATTEMPTS: usize = 5;

/// A port that was free a moment ago (another process may still take it: hence retries).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the probe socket")
        .port()
}

/// Runs `attempt` up to [`START_ATTEMPTS`] times, `pause` apart, until it succeeds.
///
/// # Panics
/// When every attempt failed, naming `what` and the last error.
pub(crate) fn retry_start<T>(
    what: &str,
    pause: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let mut last_error = String::new();
    for n in 0..START_ATTEMPTS {
        if n > 0 {
            std::thread::sleep(pause);
        }
        match attempt() {
            Ok(started) => return started,
            Err(e) => last_error = e,
        }
    }
    panic!("{what} did not start after {START_ATTEMPTS} attempts: {last_error}");
}
