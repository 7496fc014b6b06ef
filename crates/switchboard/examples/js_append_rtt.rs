//! JetStream append floor: one publish + PubAck round trip at a time, at a
//! fixed rate (1k/s by default), 100-byte payloads, to a throwaway stream
//! with file or memory storage. Reports ack latency percentiles.
//!
//! ```sh
//! cargo run --release -p switchboard --example js_append_rtt -- nats://127.0.0.1:4222 [file|memory] [count]
//! ```

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let storage = match args.next().as_deref() {
        Some("memory") => stream::StorageType::Memory,
        _ => stream::StorageType::File,
    };
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000).max(1);
    let js = jetstream::new(async_nats::connect(&url).await?);
    let name = format!("JS_APPEND_RTT_{}", std::process::id());
    let subject = format!("js_append_rtt.{}", std::process::id());
    let _ = js.delete_stream(&name).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage,
        max_age: Duration::from_secs(300),
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from("x".repeat(100));
    // Warm up (first publish pays for interest/route setup).
    for _ in 0..100 {
        js.publish(subject.clone(), payload.clone()).await?.await?;
    }
    let mut rtts = Vec::with_capacity(count);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..count {
        tick.tick().await;
        let t = Instant::now();
        js.publish(subject.clone(), payload.clone()).await?.await?;
        rtts.push(t.elapsed().as_micros() as u64);
    }
    js.delete_stream(&name).await?;
    rtts.sort_unstable();
    let q = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    println!(
        "{{\"storage\":\"{:?}\",\"count\":{count},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{}}}",
        storage,
        q(0.5),
        q(0.99),
        q(0.999),
        rtts[rtts.len() - 1],
        rtts.iter().sum::<u64>() / rtts.len() as u64
    );
    Ok(())
}
