//! The measuring client of `bench/gateway.sh`: what wrk cannot see in a streamed response.
//!
//! ```text
//! bench_client ttfb --url URL [--n 300] [--warmup 30] [--chunks 10] [--delay-ms 2]
//! bench_client hold --url URL [--streams 1000] [--chunks 40] [--delay-ms 500]
//! ```
//! Both POST a streaming chat request (`"stream": true`, plus `bench_chunks` / `bench_delay_ms`
//! for `bench_upstream`) over plain HTTP/1.1 on raw TCP, so no client library sits between the
//! socket and the clock.
//!
//! - `ttfb`: `n` streams one after another on one keep-alive connection. Time to first byte is
//!   from writing the request to the first byte of the first event. Every event's arrival is
//!   compared with when the upstream produced it (event i is produced `i·delay` after event 0):
//!   `lag` is how late it arrived beyond that, `coalesced` counts reads that carried more than one
//!   event (a buffering proxy merges events; a streaming one never does at these delays).
//! - `hold`: `streams` connections at once, each held open for `chunks·delay`. Prints a line
//!   `READY ...` once every stream has its first event (the harness then reads the gateway's
//!   memory and measures latency beside them), then a summary when they have all finished.
//!
//! Output is `key=value` pairs on one line, for the harness to parse. Latencies in µs.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Target {
    addr: String,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Target {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| fail("only http:// URLs"));
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Target {
        addr,
        host: host.to_string(),
        path: path.to_string(),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_client: {msg}");
    std::process::exit(2)
}

fn request(t: &Target, model: &str, chunks: u64, delay_ms: u64) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"{model}","stream":true,"bench_chunks":{chunks},"bench_delay_ms":{delay_ms},"messages":[{{"role":"user","content":"Say hello."}}]}}"#
    );
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{}",
        t.path,
        t.host,
        body.len(),
        body
    )
    .into_bytes()
}

/// One streamed response, as seen from the socket.
#[derive(Default)]
struct Seen {
    status: u16,
    ttfb: Duration,
    /// Arrival of each complete event (its blank line), relative to the request.
    events: Vec<Duration>,
    /// Reads that completed more than one event.
    coalesced: usize,
}

/// Incremental decoder for `Transfer-Encoding: chunked` (or a plain length / close-delimited body).
enum Framing {
    Chunked {
        /// Bytes left in the current chunk's data; `None` while reading a size line.
        left: Option<usize>,
        line: Vec<u8>,
        /// After the data: skipping its CRLF.
        crlf: usize,
        last: bool,
        done: bool,
    },
    Length(usize),
    Close,
}

impl Framing {
    /// Feeds raw body bytes; appends decoded data to `out`; true once the body is complete.
    fn feed(&mut self, mut raw: &[u8], out: &mut Vec<u8>) -> bool {
        match self {
            Framing::Length(left) => {
                let n = raw.len().min(*left);
                out.extend_from_slice(&raw[..n]);
                *left -= n;
                *left == 0
            }
            Framing::Close => {
                out.extend_from_slice(raw);
                false
            }
            Framing::Chunked {
                left,
                line,
                crlf,
                last,
                done,
            } => {
                while !raw.is_empty() && !*done {
                    if *crlf > 0 {
                        raw = &raw[1..];
                        *crlf -= 1;
                        continue;
                    }
                    match left {
                        Some(n) => {
                            let take = raw.len().min(*n);
                            out.extend_from_slice(&raw[..take]);
                            raw = &raw[take..];
                            *n -= take;
                            if *n == 0 {
                                *left = None;
                                *crlf = 2;
                            }
                        }
                        None => {
                            let b = raw[0];
                            raw = &raw[1..];
                            if b != b'\n' {
                                line.push(b);
                                continue;
                            }
                            let text = String::from_utf8_lossy(line).trim().to_string();
                            line.clear();
                            if *last {
                                // Trailer section: an empty line ends the body.
                                if text.is_empty() {
                                    *done = true;
                                }
                                continue;
                            }
                            let size = text.split(';').next().unwrap_or("");
                            let size = usize::from_str_radix(size.trim(), 16)
                                .unwrap_or_else(|_| fail("bad chunk size"));
                            if size == 0 {
                                *last = true;
                            } else {
                                *left = Some(size);
                            }
                        }
                    }
                }
                *done
            }
        }
    }
}

/// Sends one streaming request on `conn` and reads its whole response.
async fn stream_once(
    conn: &mut TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
    on_first: Option<tokio::sync::mpsc::UnboundedSender<Duration>>,
) -> std::io::Result<Seen> {
    let mut seen = Seen::default();
    let mut on_first = on_first;
    let sent = Instant::now();
    conn.write_all(req).await?;
    buf.clear();
    let mut raw = [0u8; 16 * 1024];
    // Headers.
    let (framing, mut body_start) = loop {
        let n = conn.read(&mut raw).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the headers"));
        }
        buf.extend_from_slice(&raw[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            seen.status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let framing = if head.contains("transfer-encoding: chunked") {
                Framing::Chunked {
                    left: None,
                    line: Vec::new(),
                    crlf: 0,
                    last: false,
                    done: false,
                }
            } else if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
            {
                Framing::Length(len)
            } else {
                Framing::Close
            };
            break (framing, buf.split_off(end + 4));
        }
    };
    let mut framing = framing;
    let mut data = Vec::new();
    let mut scanned = 0usize;
    let mut pending = std::mem::take(&mut body_start);
    loop {
        let now = sent.elapsed();
        let done = framing.feed(&pending, &mut data);
        pending.clear();
        if seen.ttfb.is_zero() && !data.is_empty() {
            seen.ttfb = now;
            if let Some(tx) = on_first.take() {
                let _ = tx.send(now);
            }
        }
        let mut completed = 0;
        while let Some(i) = data[scanned..].windows(2).position(|w| w == b"\n\n") {
            scanned += i + 2;
            completed += 1;
            seen.events.push(now);
        }
        if completed > 1 {
            seen.coalesced += 1;
        }
        if done {
            return Ok(seen);
        }
        let n = conn.read(&mut raw).await?;
        if n == 0 {
            if matches!(framing, Framing::Close) {
                return Ok(seen);
            }
            return Err(std::io::Error::other("closed mid-body"));
        }
        pending.extend_from_slice(&raw[..n]);
    }
}

/// How late each event arrived beyond its production time, taking event 0 as the reference.
fn lags(seen: &Seen, delay: Duration) -> impl Iterator<Item = Duration> + '_ {
    let t0 = seen.events.first().copied().unwrap_or_default();
    seen.events
        .iter()
        .enumerate()
        .map(move |(i, t)| t.saturating_sub(t0 + delay * i as u32))
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

struct Opts {
    url: String,
    model: String,
    n: usize,
    warmup: usize,
    streams: usize,
    chunks: u64,
    delay_ms: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .unwrap_or_else(|| fail("usage: bench_client ttfb|hold --url URL ..."));
    let mut o = Opts {
        url: String::new(),
        model: "bench".into(),
        n: 300,
        warmup: 30,
        streams: 1000,
        chunks: 0,
        delay_ms: 0,
    };
    while let Some(flag) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let num = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| fail(&format!("bad {flag}"))) };
        match flag.as_str() {
            "--url" => o.url = v,
            "--model" => o.model = v,
            "--n" => o.n = num(&v) as usize,
            "--warmup" => o.warmup = num(&v) as usize,
            "--streams" => o.streams = num(&v) as usize,
            "--chunks" => o.chunks = num(&v),
            "--delay-ms" => o.delay_ms = num(&v),
            _ => fail(&format!("unknown flag {flag}")),
        }
    }
    if o.url.is_empty() {
        fail("--url is required");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match mode.as_str() {
        "ttfb" => rt.block_on(ttfb(o)),
        "hold" => rt.block_on(hold(o)),
        _ => fail("mode must be ttfb or hold"),
    }
}

async fn ttfb(mut o: Opts) {
    if o.chunks == 0 {
        o.chunks = 10;
    }
    if o.delay_ms == 0 {
        o.delay_ms = 2;
    }
    let t = parse_url(&o.url);
    let req = request(&t, &o.model, o.chunks, o.delay_ms);
    let delay = Duration::from_millis(o.delay_ms);
    let mut conn = TcpStream::connect(&t.addr)
        .await
        .unwrap_or_else(|e| fail(&format!("connect {}: {e}", t.addr)));
    conn.set_nodelay(true).ok();
    let mut buf = Vec::new();
    let (mut firsts, mut lag_all, mut coalesced, mut events, mut bad) =
        (Vec::new(), Vec::new(), 0, 0, 0);
    for i in 0..(o.warmup + o.n) {
        let seen = match stream_once(&mut conn, &req, &mut buf, None).await {
            Ok(s) => s,
            Err(e) => fail(&format!("stream {i}: {e}")),
        };
        if i < o.warmup {
            continue;
        }
        // `chunks` events and `[DONE]`.
        if seen.status != 200 || (seen.events.len() as u64) < o.chunks + 1 {
            bad += 1;
        }
        firsts.push(seen.ttfb.as_micros() as u64);
        lag_all.extend(lags(&seen, delay).map(|d| d.as_micros() as u64));
        coalesced += seen.coalesced;
        events += seen.events.len();
    }
    println!(
        "mode=ttfb n={} ttfb_p50_us={} ttfb_p99_us={} lag_p50_us={} lag_p99_us={} lag_max_us={} events={} coalesced_reads={} bad_streams={}",
        o.n,
        pct(&mut firsts, 0.50),
        pct(&mut firsts, 0.99),
        pct(&mut lag_all, 0.50),
        pct(&mut lag_all, 0.99),
        pct(&mut lag_all, 1.0),
        events,
        coalesced,
        bad
    );
}

async fn hold(mut o: Opts) {
    if o.chunks == 0 {
        o.chunks = 40;
    }
    if o.delay_ms == 0 {
        o.delay_ms = 500;
    }
    let t = parse_url(&o.url);
    let req = std::sync::Arc::new(request(&t, &o.model, o.chunks, o.delay_ms));
    let delay = Duration::from_millis(o.delay_ms);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(o.streams);
    let started = Instant::now();
    for _ in 0..o.streams {
        let (addr, req, tx) = (t.addr.clone(), req.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(&addr).await?;
            conn.set_nodelay(true).ok();
            let mut buf = Vec::new();
            stream_once(&mut conn, &req, &mut buf, Some(tx)).await
        }));
    }
    drop(tx);
    let mut firsts = Vec::new();
    let deadline = tokio::time::Instant::now() + delay * o.chunks as u32;
    while firsts.len() < o.streams {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => firsts.push(d.as_micros() as u64),
            _ => break,
        }
    }
    println!(
        "READY open={} of={} open_after_ms={} ttfb_p50_us={} ttfb_p99_us={}",
        firsts.len(),
        o.streams,
        started.elapsed().as_millis(),
        pct(&mut firsts, 0.50),
        pct(&mut firsts, 0.99)
    );
    let (mut ok, mut failed, mut coalesced, mut lag_all) = (0, 0, 0, Vec::new());
    for task in tasks {
        match task.await {
            Ok(Ok(seen)) if seen.status == 200 && seen.events.len() as u64 == o.chunks + 1 => {
                ok += 1;
                coalesced += seen.coalesced;
                lag_all.extend(lags(&seen, delay).map(|d| d.as_micros() as u64));
            }
            _ => failed += 1,
        }
    }
    println!(
        "DONE complete={ok} failed={failed} lag_p50_us={} lag_p99_us={} coalesced_reads={coalesced}",
        pct(&mut lag_all, 0.50),
        pct(&mut lag_all, 0.99),
    );
}
