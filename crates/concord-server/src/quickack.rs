//! HTTP/2 connections acknowledge what they receive at once (`TCP_QUICKACK` after every
//! read), on Linux.
//!
//! KurrentDB's Rust client (`kurrentdb` 1.2.0) leaves Nagle's algorithm on (its hyper
//! connector sets `TCP_NODELAY` off) and writes a call's HEADERS and DATA frames in two
//! writes: the DATA waits for the ACK of the HEADERS, which the server's kernel delays by
//! up to 40 ms while it has nothing to send back. Every unary call then took ~45 ms on
//! loopback. Acknowledging at once costs one `setsockopt` per read and an ACK segment the
//! reply would otherwise have carried; HTTP/1.1 connections (a request is one write) are
//! left as they are.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that, when `on`, re-arms `TCP_QUICKACK` after each read that returned
/// bytes (the kernel leaves quick-ACK mode on its own, so once at accept is not enough).
#[derive(Debug)]
pub(crate) struct QuickAck {
    tcp: TcpStream,
    on: bool,
}

impl QuickAck {
    pub(crate) fn new(tcp: TcpStream, on: bool) -> Self {
        QuickAck { tcp, on }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if self.on && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            rearm(&self.tcp);
        }
        polled
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn rearm(tcp: &TcpStream) {
    // Best effort: a socket that refuses only keeps the kernel's delayed ACKs.
    let _ = tcp.set_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn rearm(_tcp: &TcpStream) {}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
