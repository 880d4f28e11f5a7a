//! Issue 13, item 5: the dashboard in a real browser. Headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`) loads `GET /` from a running server with a live experiment; the
//! test drives it over the Chrome DevTools protocol (a real WebSocket), checks the rendered
//! DOM (the arms are there, their numbers change as traffic flows, the page is connected to
//! the event stream) and saves a screenshot.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::server_support::{http, start, Lines};

const CREATE: &str = r#"{"op":"create_experiment","reason":"dashboard test","experiment":{"name":"headline","salt":"d1","arms":[{"name":"control","policy":"control"},{"name":"treatment","policy":"nudge"}]}}"#;

/// Decisions and a click on each for `users` users.
fn traffic(c: &mut Lines, round: usize, users: usize) {
    for u in 0..users {
        let d = c.call(&format!(
            r#"{{"op":"decide","user":"u{u}","candidates":["a","b","c"],"n":1,"context":{{"round":"{round}"}}}}"#
        ));
        let item = d["items"][0]["item"]
            .as_str()
            .expect("a placement")
            .to_string();
        let click = format!(r#"{{"op":"event","user":"u{u}","type":"click","item":"{item}"}}"#);
        assert_eq!(c.call(&click)["ok"], true);
    }
}

/// Chromium, headless, with the DevTools protocol on a free port; killed on drop.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Browser {
    let profile = tempfile::tempdir().unwrap();
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let mut child = Command::new(&binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start `{binary}` ({e}): install Debian's `chromium` (.ci/run does)")
        });
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…" on stderr.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                let port: u16 = rest.split('/').next().unwrap().parse().unwrap();
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("chromium announced its DevTools port");
    Browser {
        child,
        port,
        _profile: profile,
    }
}

/// A request to Chromium's DevTools HTTP endpoint, which keeps the connection open: the
/// reply is read up to its length, not to the end of the stream.
fn devtools_put(addr: SocketAddr, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Chromium wants a `Host` that is an address (the codec's request writer names `nudge`).
    let req = format!("PUT {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let (mut raw, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        let n = s.read(&mut chunk).expect("a DevTools reply");
        raw.extend_from_slice(&chunk[..n]);
        if let Some((response, _)) = loadtest::http::parse_response(&raw, n == 0).unwrap() {
            return response.json();
        }
        assert!(n > 0, "DevTools closed without a reply");
    }
}

/// One DevTools session on a page.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    async fn open(browser: &Browser, url: &str) -> Page {
        let devtools: SocketAddr = format!("127.0.0.1:{}", browser.port).parse().unwrap();
        let target = devtools_put(devtools, &format!("/json/new?{url}"));
        let ws_url = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("a page target");
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
        Page { ws, next: 1 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg)).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("a DevTools reply in time")
                .expect("the DevTools socket open")
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                return v["result"].clone();
            }
        }
    }

    /// The value of a script expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Polls `expression` until `done` holds for its value (bounded: 30 s).
    async fn until(&mut self, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let v = self.eval(expression).await;
            if done(&v) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "`{expression}` stayed {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const TREATMENT_DECISIONS: &str = r#"(document.querySelector('[data-experiment="headline"] tr[data-arm="treatment"] .decisions') || {}).textContent || null"#;

#[test]
fn issue13_the_dashboard_renders_live_experiments_in_a_real_browser() {
    let (_engine, server) = start(|_| {});
    let http_addr = server.http_addr().unwrap();
    let mut c = Lines::connect(server.tcp_addr().unwrap());
    for id in ["a", "b", "c"] {
        assert_eq!(
            c.call(&format!(r#"{{"op":"item","item":"{id}"}}"#))["ok"],
            true
        );
    }
    assert!(c.call(CREATE).get("error").is_none());
    traffic(&mut c, 0, 40);

    let page = http(http_addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>nudge</title>"));

    let browser = chromium();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let screenshot = rt.block_on(async {
        let mut page = Page::open(&browser, &format!("http://{http_addr}/")).await;
        // Both arms are rendered, with the traffic so far.
        let arms = page
            .until(
                r#"[...document.querySelectorAll('[data-experiment="headline"] tr[data-arm]')].map(r => r.dataset.arm)"#,
                |v| v.as_array().is_some_and(|a| a.len() == 2),
            )
            .await;
        assert_eq!(arms, json!(["control", "treatment"]));
        let before = page
            .until(TREATMENT_DECISIONS, |v| {
                v.as_str().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 0))
            })
            .await;
        // The page follows the event stream.
        page.until("document.getElementById('connection').textContent", |v| {
            v == "live"
        })
        .await;
        // More traffic: the numbers move without a reload.
        traffic(&mut c, 1, 40);
        let after = page
            .until(TREATMENT_DECISIONS, |v| v.is_string() && *v != before)
            .await;
        let (b, a) = (
            before.as_str().unwrap().replace(',', ""),
            after.as_str().unwrap().replace(',', ""),
        );
        assert!(a.parse::<u64>().unwrap() > b.parse::<u64>().unwrap(), "{b} → {a}");
        let segments = page.eval("document.querySelector('#segments h2').textContent").await;
        assert_eq!(segments, json!("Segments"));
        let rps = page.eval("document.getElementById('rps').textContent").await;
        assert!(rps.as_str().is_some_and(|s| s != "–"), "{rps}");
        let shot = page
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("a screenshot"))
            .unwrap()
    });
    assert_eq!(&screenshot[1..4], b"PNG");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &screenshot).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
}
