//! The bus's own floor under routed latency: request/reply round trips
//! through nats-server between two clients of this process, one at a time
//! at a fixed rate (like the 1k msg/s unicast benchmark).
//!
//! ```sh
//! cargo run --release -p switchboard --example bus_rtt -- nats://127.0.0.1:4222 [count]
//! ```

use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5000).max(1);
    let responder = async_nats::connect(&url).await?;
    let requester = async_nats::connect(&url).await?;
    let mut sub = responder.subscribe("bus_rtt.echo").await?;
    responder.flush().await?;
    let r2 = responder.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = r2.publish(reply, m.payload).await;
            }
        }
    });
    let mut rtts = Vec::with_capacity(count);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..count {
        tick.tick().await;
        let t = Instant::now();
        requester.request("bus_rtt.echo", "x".repeat(100).into()).await?;
        rtts.push(t.elapsed().as_micros() as u64);
    }
    rtts.sort_unstable();
    let q = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    println!(
        "{{\"count\":{count},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"mean_us\":{}}}",
        q(0.5),
        q(0.9),
        q(0.99),
        rtts.iter().sum::<u64>() / rtts.len().max(1) as u64
    );
    Ok(())
}
