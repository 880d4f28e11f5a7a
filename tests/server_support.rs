//! Helpers shared by the server tests: start an in-process server on 127.0.0.1:0, a blocking
//! line client for TCP, one HTTP/1.1 request over a raw socket (with the harness's client
//! codec, `loadtest::http`), and a Prometheus text parser. Every read has a timeout, so a broken server fails a test instead of hanging it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nudge::config::ServerConfig;
use nudge::server::RunningServer;
use nudge::Engine;
use serde_json::Value;

/// Longest any test read waits.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts a 2-shard engine and a server on ephemeral loopback ports; `edit` adjusts the
/// server configuration first.
pub fn start(edit: impl FnOnce(&mut ServerConfig)) -> (Engine, RunningServer) {
    let engine = Engine::builder().shards(2).seed(7).build().expect("engine");
    serve(engine, edit)
}

/// Serves `engine` on ephemeral loopback ports; `edit` adjusts the server configuration.
pub fn serve(engine: Engine, edit: impl FnOnce(&mut ServerConfig)) -> (Engine, RunningServer) {
    let mut cfg = ServerConfig {
        tcp: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        tcp_threads: 2,
        http_workers: 1,
        ..ServerConfig::default()
    };
    edit(&mut cfg);
    let server = nudge::server::spawn(engine.clone(), cfg).expect("server");
    (engine, server)
}

/// A blocking line-JSON client.
pub struct Lines {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Lines {
    pub fn connect(addr: SocketAddr) -> Lines {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let writer = stream.try_clone().unwrap();
        Lines {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    /// The next reply line, parsed; `None` at end of stream.
    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a reply line");
        if n == 0 {
            return None;
        }
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}")))
    }

    /// Sends one line and returns its reply.
    pub fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv().expect("a reply")
    }
}

/// An HTTP response: status, headers (lower-case names) and body; the harness's client.
pub use loadtest::http::Response;

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), with the project's one
/// HTTP client (`loadtest::http`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut all = vec![("connection", "close")];
    all.extend_from_slice(headers);
    let mut req = Vec::new();
    loadtest::http::write_request(&mut req, method, path, &all, body);
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read http response");
    let parsed = loadtest::http::parse_response(&raw, true);
    let (response, _) = parsed
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw)))
        .expect("a whole response at the end of the connection");
    response
}

/// Parses Prometheus text format into `series → value` (the series key is the text before
/// the value, labels included). Panics on a malformed line.
pub fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split(' ').nth(1).expect("a metric type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad TYPE line {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
            for pair in series[name_end + 1..series.len() - 1].split("\",") {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(!k.is_empty() && !v.contains('\n'), "bad label in {line:?}");
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    out
}
