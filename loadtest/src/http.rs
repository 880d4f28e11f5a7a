//! `http`: the one hand-written HTTP/1.1 client of the project, shared by the harness
//! (pipelined, on tokio) and nudge's server tests (blocking, `tests/server_support.rs`). It is
//! sans-I/O: it writes requests into a buffer and parses responses from one; the caller owns
//! the socket, so the same code serves a pipelined async reader and a blocking
//! read-to-end.
//!
//! It knows `Content-Length`, `Transfer-Encoding: chunked` and a body that ends with the
//! connection; not TLS, not HTTP/2, not `Expect: 100-continue` (nudge needs none of them).

use std::collections::HashMap;
use std::io::Write as _;

/// An HTTP response: status, headers (names in lower case) and body (de-chunked).
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, by lower-case name (a repeated header keeps its last value).
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; panics (naming the body) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Appends one request to `out`: the request line, `Host`, `Content-Length`, then `headers`.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    // Writing into a `Vec` cannot fail.
    let _ = write!(
        out,
        "{method} {path} HTTP/1.1\r\nhost: nudge\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Parses the response at the front of `buf`: `Ok(Some((response, bytes used)))`, or
/// `Ok(None)` when more bytes are needed. `at_eof` says the connection has closed, which ends
/// a body that has neither a length nor chunks (and makes a cut-off response an error).
pub fn parse_response(buf: &[u8], at_eof: bool) -> Result<Option<(Response, usize)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return incomplete(at_eof, "the headers");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[head_end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let (body, used) = if chunked {
        match dechunk(rest)? {
            Some(found) => found,
            None => return incomplete(at_eof, "the chunked body"),
        }
    } else if let Some(length) = headers.get("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        if rest.len() < length {
            return incomplete(at_eof, "the body");
        }
        (rest[..length].to_vec(), length)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        (Vec::new(), 0)
    } else if at_eof {
        (rest.to_vec(), rest.len())
    } else {
        return Ok(None);
    };
    let response = Response {
        status,
        headers,
        body,
    };
    Ok(Some((response, head_end + 4 + used)))
}

fn incomplete<T>(at_eof: bool, what: &str) -> Result<Option<T>, String> {
    if at_eof {
        Err(format!("the connection closed in {what}"))
    } else {
        Ok(None)
    }
}

/// A chunked body at the front of `b`: the body and the bytes it took, or `None` when
/// incomplete. Bounded: one iteration per chunk.
fn dechunk(b: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&b[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&b[at..at + eol]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        let data = at + eol + 2;
        if size == 0 {
            // The last chunk, then (no trailers) the final CRLF.
            return Ok(find(&b[data..], b"\r\n").map(|end| (out, data + end + 2)));
        }
        if b.len() < data + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&b[data..data + size]);
        at = data + size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_responses_parse_one_at_a_time() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab\n\r\n0\r\n\r\n";
        let (first, used) = parse_response(raw, false).unwrap().unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"{}"[..]));
        let (second, rest) = parse_response(&raw[used..], false).unwrap().unwrap();
        assert_eq!((second.status, second.body.as_slice()), (404, &b"ab\n"[..]));
        assert_eq!(used + rest, raw.len());
        for cut in 0..used {
            assert_eq!(parse_response(&raw[..cut], false), Ok(None), "cut at {cut}");
            assert!(parse_response(&raw[..cut], true).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_body_without_length_ends_with_the_connection() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello";
        assert_eq!(parse_response(raw, false), Ok(None));
        let (r, used) = parse_response(raw, true).unwrap().unwrap();
        assert_eq!((r.text().as_str(), used), ("hello", raw.len()));
        let mut out = Vec::new();
        write_request(&mut out, "POST", "/v1/x", &[("a", "b")], b"{}");
        assert!(out.starts_with(b"POST /v1/x HTTP/1.1\r\n") && out.ends_with(b"a: b\r\n\r\n{}"));
    }
}
