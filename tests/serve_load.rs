//! Load: 1,000 concurrent streaming requests through `aigw serve` (in-process, one stand-in
//! upstream on 127.0.0.1), a quarter of the clients hanging up right after the headers and a
//! quarter after the first chunk. Every request is answered (200 with a stream), nothing panics,
//! the open-stream gauge returns to 0 and the process's memory stays bounded. The memory figures
//! (resident set before, at peak, after) are printed.

#[path = "gateway_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aigw::gateway::GatewayOptions;
use futures_util::StreamExt;
use serde_json::json;
use support::standin::{Kind, StandIn};

const STREAMS: usize = 1000;

/// Resident set size of this process in KiB (Linux), 0 elsewhere.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Client {
    /// Reads the whole stream.
    Full,
    /// Hangs up once the headers arrived.
    AfterHeaders,
    /// Hangs up after the first chunk.
    AfterFirstChunk,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_with_disconnecting_clients() {
    let up = StandIn::start(Kind::OpenAi)
        .await
        .with_label("local")
        .with_models(&["made-up-chat"])
        .with_chunk_delay(Duration::from_millis(10));
    let gw = support::start_policy(
        support::LOCAL_CHAT_POLICY,
        &[("local", up.url())],
        &[],
        GatewayOptions {
            upstream_loopback_only: true,
            ..GatewayOptions::default()
        },
    )
    .await;
    // Warm up (lazy statics, the connection pool's first connection).
    let warm = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "made-up-chat", "messages": [{"role": "user", "content": "warm"}]}),
        )
        .await;
    assert_eq!(warm.status(), 200);
    let before = rss_kib();
    let (counts, peak1) = wave(&gw, &up).await;
    let after1 = rss_kib();
    // A second wave: memory is reused, not accumulated.
    let (_, peak2) = wave(&gw, &up).await;
    let metrics = gw.metrics().await;
    assert!(metrics.contains("aigw_open_streams 0"), "{metrics}");
    let after = rss_kib();
    eprintln!(
        "1000 streams (per wave): {} read fully, {} left after the headers, {} after the first chunk; \
         RSS before {} MiB, wave 1 peak {} MiB (+{} MiB), after it {} MiB, wave 2 peak {} MiB, after {} MiB; \
         upstream saw {} requests",
        counts[0],
        counts[1],
        counts[2],
        before / 1024,
        peak1 / 1024,
        peak1.saturating_sub(before) / 1024,
        after1 / 1024,
        peak2 / 1024,
        after / 1024,
        up.hits("/v1/chat/completions")
    );
    let peak = peak1.max(peak2);
    // Bounded: the whole process (clients, gateway and upstream together) grows by well under
    // 1 GiB for 1,000 concurrent streams (measured: see the line above).
    if before > 0 {
        assert!(
            peak.saturating_sub(before) < 1024 * 1024,
            "memory grew by {} MiB",
            (peak - before) / 1024
        );
        // No accumulation: the second wave needs at most a little more than the first.
        assert!(
            peak2 < peak1 + 128 * 1024,
            "memory kept growing: wave 1 peak {} MiB, wave 2 peak {} MiB",
            peak1 / 1024,
            peak2 / 1024
        );
    }
}

/// One wave of [`STREAMS`] concurrent streams; returns how many of each client kind finished
/// and the peak resident set (KiB) seen meanwhile.
async fn wave(gw: &support::Started, up: &StandIn) -> ([usize; 3], u64) {
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let url = gw.url("/v1/chat/completions");
    let _ = up;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut tasks = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let kind = match i % 4 {
            1 => Client::AfterHeaders,
            3 => Client::AfterFirstChunk,
            _ => Client::Full,
        };
        let (client, url) = (client.clone(), url.clone());
        let body = json!({"model": "made-up-chat", "stream": true, "messages": [{"role": "user", "content": format!("{i} {words}")}]});
        tasks.push(tokio::spawn(async move {
            let r = client.post(&url).json(&body).send().await;
            let r = r.map_err(|e| format!("#{i}: no answer: {e}"))?;
            if r.status() != 200 {
                return Err(format!("#{i}: status {}", r.status()));
            }
            match kind {
                Client::AfterHeaders => Ok(kind),
                Client::AfterFirstChunk => {
                    let mut s = r.bytes_stream();
                    match s.next().await {
                        Some(Ok(_)) => Ok(kind),
                        other => Err(format!("#{i}: no first chunk: {other:?}")),
                    }
                }
                Client::Full => {
                    let text = r.text().await.map_err(|e| format!("#{i}: {e}"))?;
                    if text.trim_end().ends_with("data: [DONE]") && text.contains("twenty") {
                        Ok(kind)
                    } else {
                        Err(format!("#{i}: incomplete stream: {text}"))
                    }
                }
            }
        }));
    }
    let mut failures = Vec::new();
    let mut counts = [0usize; 3];
    for t in tasks {
        match t.await.expect("a client task panicked") {
            Ok(kind) => counts[kind as usize] += 1,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {STREAMS} requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Every stream ends (the ones whose client left are cancelled): the gauge returns to 0.
    let mut open = gw.gw.metrics.open_streams();
    for _ in 0..1200 {
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = gw.gw.metrics.open_streams();
    }
    assert_eq!(open, 0, "streams still open after the clients left");
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(counts.iter().sum::<usize>(), STREAMS);
    (counts, peak.load(Ordering::Relaxed))
}
