//! `switchboard-loadgen`: load scenarios against Switchboard, speaking only
//! the public client protocol (SPEC §2) and the HTTP API (SPEC §3).
//!
//! Scenarios (each bounded in count and time): `idle`, `unicast`, `fanout`,
//! `broadcast`, `churn`, `storm`. Connections are spread over `--targets` (ws URLs)
//! and `--sources` (local addresses 127.0.0.x: one source address reaches
//! ~28k connections to one port). Output: a human summary on stderr and one
//! JSON line on stdout per run.

mod api;
mod client;
mod common;
mod frames;
mod open;
mod report;
mod scenarios;
mod traffic;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::common::Common;
use crate::scenarios::{broadcast, churn, fanout, idle, storm, unicast};

/// Load generator for Switchboard.
#[derive(Debug, Parser)]
#[command(name = "switchboard-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N connections (welcome received), hold them, report connect
    /// rate and connect→welcome latency.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connects per second (0: as fast as the concurrency allows).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// How long to hold them once all are open.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        hold: Duration,
    },
    /// Open-loop unicast between clients on different targets.
    Unicast {
        #[command(flatten)]
        common: Common,
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages per second (all senders together).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to send.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Group sends to groups whose members are split across targets.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Groups.
        #[arg(long, default_value_t = 10)]
        groups: usize,
        /// Members per group (one of them sends).
        #[arg(long, default_value_t = 100)]
        group_size: usize,
        /// Group sends per second (all groups together).
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Members of each group that send (taking turns).
        #[arg(long, default_value_t = 1)]
        senders_per_group: usize,
        /// Sends fired together at each tick (consecutive senders, so a
        /// burst of `senders_per_group` hits one group from all its
        /// senders at once: frames queue up at the edges).
        #[arg(long, default_value_t = 1)]
        burst: u64,
        /// How long to send.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// Extra members per group that never read their socket (slow
        /// consumers): the others' latency is measured next to them, and
        /// how each ended (4008, cut, still open) is reported.
        #[arg(long, default_value_t = 0)]
        stalled: usize,
        /// Payload bytes per message (padding).
        #[arg(long, default_value_t = 0)]
        size: usize,
    },
    /// One broadcast at a time to N clients of one bizCode.
    Broadcast {
        #[command(flatten)]
        common: Common,
        /// Receiving clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Broadcasts.
        #[arg(long, default_value_t = 20)]
        repetitions: usize,
        /// Broadcasts per second (at most).
        #[arg(long, default_value_t = 10)]
        rate: u64,
    },
    /// Connects and disconnects at a fixed rate; presence drift at the end.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Connections kept open while churning.
        #[arg(long, default_value_t = 500)]
        pool: usize,
        /// Connects per second (and as many disconnects).
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// How long to churn.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// HTTP API base URL for the presence check (router or standalone).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// API key (or SWITCHBOARD_API_KEY).
        #[arg(long, env = "SWITCHBOARD_API_KEY", default_value = "")]
        api_key: String,
    },
    /// Kills an edge under N clients that reconnect with full-jitter
    /// exponential backoff; reports time until every dropped client is
    /// registered and reachable again (an API probe arrives), the
    /// reconnects' connect→welcome latency and presence drift.
    Storm {
        #[command(flatten)]
        common: Common,
        /// Clients, spread over --targets (list a target twice to give it
        /// twice the clients).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Shell command run once every client is connected, to kill an
        /// edge (e.g. "kill -9 1234").
        #[arg(long)]
        kill: String,
        /// Backoff: reconnect attempt k waits a uniform random time in
        /// [0, min(cap, base * 2^k)] (full jitter).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        backoff_base: Duration,
        /// Backoff ceiling.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        backoff_cap: Duration,
        /// Longest one reconnect attempt may take (TCP connect to welcome).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        attempt_timeout: Duration,
        /// A probe that did not arrive after this is sent again.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        probe_timeout: Duration,
        /// Longest wait for every client to be reachable again.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        recover_timeout: Duration,
        /// Wait after recovery before the last presence check and probe
        /// round: longer than the routers' node_timeout (6 s by default),
        /// so the dead edge has been purged.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
        settle: Duration,
        /// HTTP API base URL (router or standalone) for probes and presence.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// API key (or SWITCHBOARD_API_KEY).
        #[arg(long, env = "SWITCHBOARD_API_KEY", default_value = "")]
        api_key: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let (common, fut): (
            Common,
            std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<report::Report>>>>,
        ) = match cli.scenario {
            Scenario::Idle {
                common,
                connections,
                rate,
                hold,
            } => (common.clone(), Box::pin(idle::run(common, connections, rate, hold))),
            Scenario::Unicast {
                common,
                pairs,
                rate,
                duration,
                size,
            } => (
                common.clone(),
                Box::pin(unicast::run(
                    common,
                    unicast::UnicastShape {
                        pairs,
                        rate,
                        duration,
                        size,
                    },
                )),
            ),
            Scenario::Fanout {
                common,
                groups,
                group_size,
                rate,
                senders_per_group,
                burst,
                duration,
                stalled,
                size,
            } => (
                common.clone(),
                Box::pin(fanout::run(
                    common,
                    fanout::FanoutShape {
                        groups,
                        size: group_size,
                        senders: senders_per_group,
                        burst,
                        stalled,
                        payload: size,
                    },
                    rate,
                    duration,
                )),
            ),
            Scenario::Broadcast {
                common,
                clients,
                repetitions,
                rate,
            } => (
                common.clone(),
                Box::pin(broadcast::run(common, clients, repetitions, rate)),
            ),
            Scenario::Churn {
                common,
                pool,
                rate,
                duration,
                api,
                api_key,
            } => (
                common.clone(),
                Box::pin(churn::run(common, pool, rate, duration, api, api_key)),
            ),
            Scenario::Storm {
                common,
                clients,
                kill,
                backoff_base,
                backoff_cap,
                attempt_timeout,
                probe_timeout,
                recover_timeout,
                settle,
                api,
                api_key,
            } => (
                common.clone(),
                Box::pin(storm::run(
                    common,
                    storm::options::StormOptions {
                        clients,
                        kill,
                        backoff: storm::backoff::Backoff {
                            base: backoff_base,
                            cap: backoff_cap,
                        },
                        attempt_timeout,
                        probe_timeout,
                        recover_timeout,
                        settle,
                        api,
                        api_key,
                    },
                )),
            ),
        };
        match tokio::time::timeout(common.deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("run exceeded --deadline {:?}", common.deadline)),
        }
    });
    match result {
        Ok(report) => {
            eprintln!("{}", report.human());
            println!("{}", report.json());
            if report.ok() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
