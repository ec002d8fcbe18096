//! A RESP2 reply reader of Concord's own, for the replies that carry pages of events.
//!
//! redis-rs reads every reply into its `Value` tree with a parser-combinator that can
//! resume across reads. Measured (criterion `redis_reply/resp_global_page`), that costs
//! about 4.5 µs per global-log entry (some 22 values), and a perf profile of a consumer
//! group on Redis put 69 % of the process's CPU there. Pages of events are large and their
//! shape is known, so the reads that return them go over connections of Concord's own
//! (`direct`) and their replies are read here, in two passes:
//! - [`Scanner`] finds where one reply ends. It keeps its place between reads, so a reply
//!   that arrives in many reads is scanned once, not again from its start at every read.
//! - [`parse`] cuts the complete reply into [`Reply`] values whose strings borrow from the
//!   read buffer: no copy, no allocation and no reference count per string.
//!
//! Only what RESP2 servers send is understood (`+ - : $ *`); anything else is a protocol
//! error, after which the connection is dropped, never reused out of step.

/// Arrays nested deeper than this are refused (Concord's replies nest three deep), so a
/// reply cannot exhaust the stack of the parser.
const DEPTH_MAX: usize = 16;

/// The longest string accepted: Redis's own default `proto-max-bulk-len`.
const BULK_MAX: usize = 512 * 1024 * 1024;

/// One reply, or one element of an array reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Reply<'a> {
    /// A bulk or simple string, borrowed from the read buffer.
    Bytes(&'a [u8]),
    /// An integer.
    Int(i64),
    /// A null bulk string or null array.
    Nil,
    /// An array.
    Array(Vec<Reply<'a>>),
    /// An error reply (`-ERR …`): the command failed; the connection is still in step.
    Error(String),
}

/// Bytes that are not RESP2, or not RESP2 Concord accepts.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("malformed reply at byte {at}: {what}")]
pub(crate) struct ProtocolError {
    /// Where in the reply.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

fn malformed(at: usize, what: &'static str) -> ProtocolError {
    ProtocolError { at, what }
}

/// Finds where one reply ends in a buffer that grows, keeping its place between calls.
#[derive(Default, Debug)]
pub(crate) struct Scanner {
    /// Where the next element starts.
    at: usize,
    /// For each array being scanned, how many of its elements are still to come.
    open: Vec<usize>,
}

impl Scanner {
    /// Scans on from where the last call stopped. `Some(end)` when a whole reply is
    /// `buf[..end]`; the scanner is then ready for the next reply, to start at
    /// `buf[end..]` moved to the front. `None` when more bytes are needed.
    ///
    /// # Errors
    /// Bytes that are not RESP2.
    pub(crate) fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            let Some((kind, header, body)) = header(buf, self.at)? else {
                return Ok(None);
            };
            match kind {
                b'+' | b'-' | b':' => self.at = body,
                b'$' => match length(header, self.at)? {
                    None => self.at = body,
                    Some(n) => {
                        let end = body
                            .checked_add(n)
                            .and_then(|e| e.checked_add(2))
                            .ok_or_else(|| malformed(self.at, "string length overflows"))?;
                        let Some(tail) = buf.get(end - 2..end) else {
                            return Ok(None);
                        };
                        if tail != b"\r\n" {
                            return Err(malformed(end - 2, "string not followed by CRLF"));
                        }
                        self.at = end;
                    }
                },
                b'*' => {
                    let start = self.at;
                    self.at = body;
                    if let Some(n) = length(header, start)?.filter(|n| *n > 0) {
                        if self.open.len() == DEPTH_MAX {
                            return Err(malformed(start, "arrays nested too deep"));
                        }
                        self.open.push(n);
                        continue;
                    }
                }
                _ => return Err(malformed(self.at, "unknown reply type")),
            }
            // One element is complete: it may complete the arrays around it.
            loop {
                let Some(due) = self.open.last_mut() else {
                    let end = self.at;
                    self.at = 0;
                    return Ok(Some(end));
                };
                *due -= 1;
                if *due > 0 {
                    break;
                }
                self.open.pop();
            }
        }
    }
}

/// An element's first line: its type byte, the rest of the line, and where its body starts.
type Header<'a> = (u8, &'a [u8], usize);

/// The element at `at`'s first line; `None` when it is not complete yet.
fn header(buf: &[u8], at: usize) -> Result<Option<Header<'_>>, ProtocolError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let rest = buf.get(at + 1..).unwrap_or_default();
    let Some(cr) = rest.iter().position(|b| *b == b'\r') else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((
            kind,
            rest.get(..cr).unwrap_or_default(),
            at + 1 + cr + 2,
        ))),
        Some(_) => Err(malformed(at + 1 + cr, "CR not followed by LF")),
    }
}

/// A `$` or `*` header's length; `None` for `-1` (nil).
fn length(header: &[u8], at: usize) -> Result<Option<usize>, ProtocolError> {
    if header == b"-1" {
        return Ok(None);
    }
    let n = digits(header).ok_or_else(|| malformed(at, "length is not a number"))?;
    if n > BULK_MAX as u64 {
        return Err(malformed(at, "length too large"));
    }
    Ok(Some(n as usize))
}

fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0_u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn integer(text: &[u8]) -> Option<i64> {
    match text.split_first() {
        Some((b'-', rest)) => digits(rest).and_then(|n| i64::try_from(n).ok()).map(|n| -n),
        _ => digits(text).and_then(|n| i64::try_from(n).ok()),
    }
}

/// [`parse`], with bytes that are not RESP2 as `command`'s error.
///
/// # Errors
/// As [`parse`], as [`crate::error::RedisError::Reply`].
pub(crate) fn parse_reply<'a>(
    command: &'static str,
    frame: &'a [u8],
) -> Result<Reply<'a>, crate::error::RedisError> {
    parse(frame).map_err(|e| crate::error::RedisError::reply(command, e.to_string()))
}

/// The reply that `frame` holds whole (as [`Scanner::scan`] found it).
///
/// # Errors
/// Bytes that are not RESP2, or a frame that does not end with the reply.
pub(crate) fn parse(frame: &[u8]) -> Result<Reply<'_>, ProtocolError> {
    let mut at = 0;
    let reply = element(frame, &mut at, 0)?;
    if at != frame.len() {
        return Err(malformed(at, "bytes after the reply"));
    }
    Ok(reply)
}

fn element<'a>(frame: &'a [u8], at: &mut usize, depth: usize) -> Result<Reply<'a>, ProtocolError> {
    let start = *at;
    let incomplete = || malformed(start, "reply ends early");
    let (kind, line, body) = header(frame, start)?.ok_or_else(incomplete)?;
    *at = body;
    match kind {
        b'+' => Ok(Reply::Bytes(line)),
        b'-' => Ok(Reply::Error(String::from_utf8_lossy(line).into_owned())),
        b':' => integer(line)
            .map(Reply::Int)
            .ok_or_else(|| malformed(start, "integer is not a number")),
        b'$' => {
            let Some(n) = length(line, start)? else {
                return Ok(Reply::Nil);
            };
            let end = body.checked_add(n).ok_or_else(incomplete)?;
            if frame.get(end..end + 2) != Some(b"\r\n".as_slice()) {
                return Err(incomplete());
            }
            *at = end + 2;
            Ok(Reply::Bytes(frame.get(body..end).ok_or_else(incomplete)?))
        }
        b'*' => {
            let Some(n) = length(line, start)? else {
                return Ok(Reply::Nil);
            };
            if depth == DEPTH_MAX {
                return Err(malformed(start, "arrays nested too deep"));
            }
            // Every element takes at least 3 bytes: a count cannot reserve more than that.
            let mut items = Vec::with_capacity(n.min(frame.len().saturating_sub(body) / 3));
            for _ in 0..n {
                items.push(element(frame, at, depth + 1)?);
            }
            Ok(Reply::Array(items))
        }
        _ => Err(malformed(start, "unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Reply<'_> {
        let mut scanner = Scanner::default();
        assert_eq!(scanner.scan(bytes), Ok(Some(bytes.len())));
        parse(bytes).expect("parses")
    }

    fn b(s: &str) -> Reply<'_> {
        Reply::Bytes(s.as_bytes())
    }

    /// An `XRANGE` reply of two entries, with a nil, an integer and an error beside it.
    const PAGE: &[u8] = b"*4\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$6\r\nstream\r\n$5\r\nacc-1\r\n$4\r\ndata\r\n$0\r\n\r\n*2\r\n$3\r\n2-0\r\n*0\r\n$-1\r\n:-42\r\n-ERR no\r\n";

    fn page() -> Reply<'static> {
        Reply::Array(vec![
            Reply::Array(vec![
                Reply::Array(vec![
                    b("1-0"),
                    Reply::Array(vec![b("stream"), b("acc-1"), b("data"), b("")]),
                ]),
                Reply::Array(vec![b("2-0"), Reply::Array(vec![])]),
            ]),
            Reply::Nil,
            Reply::Int(-42),
            Reply::Error("ERR no".into()),
        ])
    }

    #[test]
    fn a_page_of_entries_reads_as_the_values_redis_sent() {
        assert_eq!(whole(PAGE), page());
        assert_eq!(whole(b"+OK\r\n"), b("OK"));
        assert_eq!(whole(b"*-1\r\n"), Reply::Nil);
        assert_eq!(whole(b":0\r\n"), Reply::Int(0));
    }

    #[test]
    fn a_reply_split_anywhere_across_reads_is_found_whole_once_its_last_byte_arrives() {
        for split in 0..PAGE.len() {
            let mut scanner = Scanner::default();
            let first = scanner.scan(&PAGE[..split]);
            assert_eq!(first, Ok(None), "complete after only {split} bytes");
            assert_eq!(scanner.scan(PAGE), Ok(Some(PAGE.len())), "split at {split}");
        }
        // Byte by byte, as a slow network would deliver it.
        let mut scanner = Scanner::default();
        let ends: Vec<_> = (1..=PAGE.len())
            .filter_map(|n| scanner.scan(&PAGE[..n]).expect("valid"))
            .collect();
        assert_eq!(ends, vec![PAGE.len()]);
    }

    #[test]
    fn pipelined_replies_are_found_one_after_the_other() {
        let mut buf = PAGE.to_vec();
        buf.extend_from_slice(b":7\r\n");
        let mut scanner = Scanner::default();
        let end = scanner.scan(&buf).expect("valid").expect("whole");
        assert_eq!(end, PAGE.len());
        let rest = &buf[end..];
        assert_eq!(scanner.scan(rest), Ok(Some(4)));
        assert_eq!(parse(rest), Ok(Reply::Int(7)));
    }

    #[test]
    fn malformed_bytes_are_refused_not_waited_for() {
        for bad in [
            &b"?\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcde\r\n",
            b"*x\r\n",
            b"$99999999999999999999\r\n",
            b"+OK\rX",
        ] {
            assert!(
                Scanner::default().scan(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "*1\r\n".repeat(DEPTH_MAX + 1) + ":1\r\n";
        assert!(Scanner::default().scan(deep.as_bytes()).is_err());
        assert!(parse(b":1\r\n:2\r\n").is_err());
        assert!(parse(b"*2\r\n:1\r\n").is_err());
        assert!(parse(b":12a\r\n").is_err());
    }

    #[test]
    fn a_huge_announced_array_reserves_no_more_than_the_bytes_can_hold() {
        assert!(parse(b"*100000000\r\n:1\r\n").is_err());
    }
}
