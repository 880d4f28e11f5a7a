//! Connections to a target, split into a sending half (`Sender`) and a receiving half
//! (`Receiver`) so that one writer task and one reader task can pipeline on each connection;
//! replies come back in request order on every target. This module owns sockets and framing
//! (TCP lines, WebSocket frames, HTTP/1.1 messages, RESP, in-process futures); it does not
//! know the schedule or the statistics.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use nudge::{Candidate, DecideRequest, DecisionId, Engine, Event, ItemSpec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http;
use crate::redis::{self, Shas, Value};
use crate::wire::{self, Reply};
use crate::workload::{EventOp, Op, Shown, Workload};

/// Where the harness sends its load.
#[derive(Clone)]
pub enum Target {
    /// nudge's TCP line protocol.
    Tcp(SocketAddr),
    /// nudge's WebSocket endpoint (the full `ws://` URL).
    Ws(String),
    /// nudge's HTTP API (base address).
    Http(SocketAddr),
    /// An in-process engine, no network.
    Embedded(Engine),
    /// Redis with the Lua baseline scripts.
    Redis(SocketAddr),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "tcp://{a}"),
            Target::Ws(u) => f.write_str(u),
            Target::Http(a) => write!(f, "http://{a}"),
            Target::Embedded(_) => f.write_str("embedded"),
            Target::Redis(a) => write!(f, "redis://{a}"),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a connection.
pub enum Sender {
    /// Line-delimited JSON.
    Tcp(OwnedWriteHalf),
    /// One text frame per op.
    Ws(SplitSink<Ws, Message>),
    /// Pipelined HTTP/1.1 requests.
    Http(OwnedWriteHalf),
    /// Spawned engine calls, handed to the receiver in order.
    Embedded(Engine, mpsc::UnboundedSender<JoinHandle<Reply>>),
    /// RESP commands.
    Redis(OwnedWriteHalf, Shas),
}

/// The receiving half of a connection.
pub enum Receiver {
    /// Line-delimited JSON.
    Tcp(BufReader<OwnedReadHalf>, Vec<u8>),
    /// Text frames.
    Ws(SplitStream<Ws>),
    /// HTTP/1.1 responses: bytes read, and where the next response starts in them.
    Http(OwnedReadHalf, Vec<u8>, usize),
    /// The spawned engine calls, in order.
    Embedded(mpsc::UnboundedReceiver<JoinHandle<Reply>>),
    /// RESP replies.
    Redis(BufReader<OwnedReadHalf>, Vec<u8>),
}

const READ_BUFFER_BYTES: usize = 256 * 1024;

async fn tcp(addr: SocketAddr) -> anyhow::Result<(OwnedReadHalf, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream.into_split())
}

/// Opens one connection to `target`.
pub async fn connect(target: &Target) -> anyhow::Result<(Sender, Receiver)> {
    Ok(match target {
        Target::Tcp(addr) => {
            let (r, w) = tcp(*addr).await?;
            (
                Sender::Tcp(w),
                Receiver::Tcp(BufReader::with_capacity(READ_BUFFER_BYTES, r), Vec::new()),
            )
        }
        Target::Http(addr) => {
            let (r, w) = tcp(*addr).await?;
            (
                Sender::Http(w),
                Receiver::Http(r, Vec::with_capacity(READ_BUFFER_BYTES), 0),
            )
        }
        Target::Ws(url) => {
            let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .with_context(|| format!("connecting to {url}"))?;
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.set_nodelay(true)?;
            }
            let (sink, stream) = ws.split();
            (Sender::Ws(sink), Receiver::Ws(stream))
        }
        Target::Embedded(engine) => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Sender::Embedded(engine.clone(), tx), Receiver::Embedded(rx))
        }
        Target::Redis(addr) => {
            let (r, mut w) = tcp(*addr).await?;
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, r);
            let mut shas = Shas::default();
            for (script, sha) in [
                (redis::EVENT_SCRIPT, &mut shas.event),
                (redis::DECIDE_SCRIPT, &mut shas.decide),
            ] {
                let mut out = Vec::new();
                redis::script_load(script, &mut out);
                w.write_all(&out).await?;
                match read_resp(&mut reader, &mut Vec::new()).await? {
                    Value::Text(s) => *sha = s,
                    other => bail!("SCRIPT LOAD answered {other:?}"),
                }
            }
            (Sender::Redis(w, shas), Receiver::Redis(reader, Vec::new()))
        }
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Sender {
    /// Sends `ops` (numbered from `first_id`) in one write where the transport allows.
    pub async fn send(
        &mut self,
        ops: &[Op],
        first_id: u64,
        w: &Workload,
        buf: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        buf.clear();
        match self {
            Sender::Tcp(s) => {
                for (k, op) in ops.iter().enumerate() {
                    wire::encode(op, first_id + k as u64, w, buf);
                    buf.push(b'\n');
                }
                s.write_all(buf).await?;
            }
            Sender::Http(s) => {
                let mut body = Vec::new();
                for op in ops {
                    body.clear();
                    wire::encode_body(op, w, &mut body);
                    let (method, path) = wire::http_route(op);
                    let json = [("content-type", "application/json")];
                    http::write_request(buf, method, &path, &json, &body);
                }
                s.write_all(buf).await?;
            }
            Sender::Ws(sink) => {
                for (k, op) in ops.iter().enumerate() {
                    buf.clear();
                    wire::encode(op, first_id + k as u64, w, buf);
                    // The encoder writes ASCII only.
                    let text = String::from_utf8_lossy(buf).into_owned();
                    sink.feed(Message::Text(text)).await?;
                }
                sink.flush().await?;
            }
            Sender::Redis(s, shas) => {
                let now = now_ms();
                for op in ops {
                    redis::encode(op, w, shas, now, buf);
                }
                s.write_all(buf).await?;
            }
            Sender::Embedded(engine, tx) => {
                for op in ops {
                    let call = embedded_call(engine.clone(), op.clone());
                    tx.send(tokio::spawn(call))
                        .map_err(|_| anyhow!("receiver gone"))?;
                }
            }
        }
        Ok(())
    }

    /// Closes the sending direction where the transport has one.
    pub async fn close(&mut self) {
        match self {
            Sender::Tcp(s) | Sender::Http(s) | Sender::Redis(s, _) => {
                let _ = s.shutdown().await;
            }
            // A close frame would make the server drop replies still in flight; the socket
            // closes when the reader is done and both halves are dropped.
            Sender::Ws(_) | Sender::Embedded(..) => {}
        }
    }
}

fn result(r: Result<(), nudge::Error>) -> Reply {
    match r {
        Ok(()) => Reply::Ack,
        Err(e) => Reply::Error(e.code().to_string()),
    }
}

fn embedded_event(e: EventOp) -> Event {
    let mut ev = Event::new(format!("u{}", e.user), e.kind);
    if let Some(item) = e.item {
        ev = ev.item(format!("i{item}"));
    }
    if let Some(v) = e.value {
        ev = ev.value(v as f64);
    }
    if let Some(d) = e.decision {
        ev = ev.decision(DecisionId(d));
    }
    ev
}

async fn embedded_call(engine: Engine, op: Op) -> Reply {
    match op {
        Op::Item(i) => Reply::Error(format!("item i{i} must be loaded with load_catalog")),
        Op::Batch(events) => {
            let events = events.into_iter().map(embedded_event).collect();
            let (mut acked, mut errors) = (0, Vec::new());
            for r in engine.ingest_batch_async(events).await {
                match r {
                    Ok(_) => acked += 1,
                    Err(e) => errors.push(e.code().to_string()),
                }
            }
            Reply::Batch { acked, errors }
        }
        Op::Event(e) => result(engine.ingest_async(embedded_event(e)).await.map(|_| ())),
        Op::Decide(d) => {
            let candidates = d.candidates.iter().map(|c| Candidate::Id(format!("i{c}")));
            let req = DecideRequest::new(format!("u{}", d.user), candidates, d.n as usize);
            match engine.decide_async(req).await {
                Ok(dec) => Reply::Decision(Shown {
                    decision: dec.id.0,
                    items: dec
                        .items
                        .iter()
                        .filter_map(|p| wire::item_index(&p.item))
                        .collect(),
                }),
                Err(e) => Reply::Error(e.code().to_string()),
            }
        }
        Op::Reward(r) => result(
            engine
                .reward_async(
                    DecisionId(r.decision),
                    &format!("i{}", r.item),
                    r.value as f64,
                    None,
                )
                .await,
        ),
    }
}

impl Receiver {
    /// The next reply, in request order.
    pub async fn recv(&mut self) -> anyhow::Result<Reply> {
        match self {
            Receiver::Tcp(r, line) => {
                line.clear();
                if r.read_until(b'\n', line).await? == 0 {
                    bail!("connection closed by the server");
                }
                Ok(wire::parse_reply(line))
            }
            Receiver::Ws(stream) => loop {
                match stream.next().await {
                    None => bail!("connection closed by the server"),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(t))) => return Ok(wire::parse_reply(t.as_bytes())),
                    Some(Ok(Message::Binary(b))) => return Ok(wire::parse_reply(&b)),
                    Some(Ok(Message::Close(_))) => bail!("connection closed by the server"),
                    Some(Ok(_)) => continue,
                }
            },
            Receiver::Http(r, buf, start) => read_http(r, buf, start).await,
            Receiver::Embedded(rx) => match rx.recv().await {
                Some(handle) => Ok(handle.await?),
                None => bail!("sender gone"),
            },
            Receiver::Redis(r, buf) => Ok(match read_resp(r, buf).await? {
                // Redis errors have no stable codes: report the start of the message.
                Value::Error(e) => Reply::Error(format!(
                    "redis: {}",
                    e.chars().take(100).collect::<String>()
                )),
                Value::Array(values) => {
                    let mut ints = values.into_iter().map(|v| match v {
                        Value::Int(n) => n as u64,
                        _ => 0,
                    });
                    let decision = ints.next().unwrap_or(0);
                    Reply::Decision(Shown {
                        decision,
                        items: ints.map(|n| n as u32).collect(),
                    })
                }
                _ => Reply::Ack,
            }),
        }
    }
}

/// Reads one HTTP/1.1 response (`http::parse_response`) and parses its body. `buf` holds
/// the bytes read, from `start` on not yet used: pipelined responses arrive together.
async fn read_http(
    r: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    start: &mut usize,
) -> anyhow::Result<Reply> {
    let mut at_eof = false;
    let response = loop {
        if let Some((response, used)) =
            http::parse_response(&buf[*start..], at_eof).map_err(|e| anyhow!(e))?
        {
            *start += used;
            break response;
        }
        if at_eof {
            bail!("connection closed by the server");
        }
        if *start > 0 {
            buf.drain(..*start);
            *start = 0;
        }
        buf.reserve(READ_BUFFER_BYTES / 4);
        at_eof = r.read_buf(buf).await? == 0;
    };
    let status = response.status;
    let reply = if response.body.is_empty() {
        Reply::Ack
    } else {
        wire::parse_reply(&response.body)
    };
    Ok(match reply {
        Reply::Error(code) if code == "bad_reply" && (200..300).contains(&status) => Reply::Ack,
        Reply::Error(code) if code != "bad_reply" => Reply::Error(code),
        _ if !(200..300).contains(&status) => Reply::Error(format!("http_{status}")),
        ok => ok,
    })
}

/// Reads one RESP value; arrays may hold only scalars (all the scripts return).
async fn read_resp(r: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> anyhow::Result<Value> {
    let first = read_scalar(r, line).await?;
    if let Value::Array(mut items) = first {
        // `read_scalar` returns an array header as `Array` with its length in a placeholder.
        let n = match items.pop() {
            Some(Value::Int(n)) => n.max(0) as usize,
            _ => 0,
        };
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(read_scalar(r, line).await?);
        }
        return Ok(Value::Array(values));
    }
    Ok(first)
}

async fn read_scalar(
    r: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> anyhow::Result<Value> {
    line.clear();
    if r.read_until(b'\n', line).await? == 0 {
        bail!("connection closed by the server");
    }
    let text = String::from_utf8_lossy(line).trim_end().to_string();
    let (kind, rest) = text.split_at(1.min(text.len()));
    Ok(match kind {
        "+" => Value::Text(rest.to_string()),
        "-" => Value::Error(rest.to_string()),
        ":" => Value::Int(rest.parse().context("RESP integer")?),
        "$" => {
            let n: i64 = rest.parse().context("RESP bulk length")?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let mut data = vec![0u8; n as usize + 2];
            r.read_exact(&mut data).await?;
            data.truncate(n as usize);
            Value::Text(String::from_utf8_lossy(&data).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().context("RESP array length")?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            Value::Array(vec![Value::Int(n)])
        }
        _ => bail!("unexpected RESP line {text:?}"),
    })
}

/// Events per request of the prefill (a batch op; Redis, which has none: one per request).
const PREFILL_BATCH: u32 = 256;

/// Sends one event per user (`Workload::prefill_event`), pipelined on one connection, so that
/// every user is resident before the run (`--prefill`). Returns the events the target refused.
pub async fn prefill(target: &Target, w: &Workload) -> anyhow::Result<u64> {
    let per_request = match target {
        Target::Redis(_) => 1,
        _ => PREFILL_BATCH,
    };
    let users = w.cfg.users;
    let requests = users.div_ceil(per_request);
    let (mut tx, mut rx) = connect(target).await?;
    let reader = tokio::spawn(async move {
        let mut refused = 0u64;
        for _ in 0..requests {
            refused += match rx.recv().await? {
                Reply::Batch { errors, .. } => errors.len() as u64,
                Reply::Error(_) => per_request as u64,
                Reply::Ack | Reply::Decision(_) => 0,
            };
        }
        anyhow::Ok(refused)
    });
    let mut buf = Vec::new();
    for (k, first) in (0..users).step_by(per_request as usize).enumerate() {
        let last = first.saturating_add(per_request).min(users);
        let op = match per_request {
            1 => Op::Event(w.prefill_event(first)),
            _ => Op::Batch((first..last).map(|u| w.prefill_event(u)).collect()),
        };
        tx.send(std::slice::from_ref(&op), 1 + k as u64, w, &mut buf)
            .await?;
    }
    let refused = reader.await??;
    tx.close().await;
    Ok(refused)
}

/// Loads the catalog of `w` into the target, pipelined on one connection.
pub async fn load_catalog(target: &Target, w: &Workload) -> anyhow::Result<()> {
    if let Target::Embedded(engine) = target {
        let engine = engine.clone();
        let items: Vec<ItemSpec> = (0..w.cfg.items)
            .map(|i| {
                ItemSpec::new(format!("i{i}"))
                    .attr("category", format!("c{}", w.category(i)))
                    .vector(w.vector(i).to_vec())
            })
            .collect();
        return tokio::task::spawn_blocking(move || {
            for item in items {
                engine
                    .upsert_item(item)
                    .map_err(|e| anyhow!("loading the catalog: {e}"))?;
            }
            Ok(())
        })
        .await?;
    }
    let (mut tx, mut rx) = connect(target).await?;
    let total = w.cfg.items as u64;
    let reader = tokio::spawn(async move {
        for _ in 0..total {
            match rx.recv().await? {
                Reply::Error(code) => bail!("loading the catalog failed: {code}"),
                _ => continue,
            }
        }
        Ok(())
    });
    let mut buf = Vec::new();
    let ops: Vec<Op> = (0..w.cfg.items).map(Op::Item).collect();
    // HTTP servers may cap pipelined requests; send in modest chunks.
    for (k, chunk) in ops.chunks(256).enumerate() {
        tx.send(chunk, 1 + (k * 256) as u64, w, &mut buf).await?;
    }
    reader.await??;
    tx.close().await;
    Ok(())
}
