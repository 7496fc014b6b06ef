//! The listen backlog (`*.listen_backlog`): the kernel's accept queue of
//! the listening socket is what the configuration asks for (capped by
//! `net.core.somaxconn`), and a value out of range exits 64.

mod common;

use std::process::Command;

use common::{bin, Standalone};

/// The accept queue limit of the socket listening on `port`, as the kernel
/// reports it (`ss -ltn`: a listener's Send-Q is its backlog).
fn backlog_of(port: u16) -> u32 {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("run ss (apt-get install iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    cols.get(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ss line: {line}"))
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read net.core.somaxconn")
        .trim()
        .parse()
        .expect("somaxconn is a number")
}

#[tokio::test]
async fn the_listener_gets_the_configured_backlog() {
    let s = Standalone::start(&[]).await;
    assert_eq!(backlog_of(s.port), 4096.min(somaxconn()), "default");
    drop(s);

    let s = Standalone::start(&[("SWITCHBOARD_STANDALONE__LISTEN_BACKLOG", "200")]).await;
    assert_eq!(backlog_of(s.port), 200.min(somaxconn()), "configured");
}

#[test]
fn a_backlog_out_of_range_exits_64() {
    for key in ["EDGE", "ROUTER", "STANDALONE"] {
        for bad in ["0", "65536"] {
            let out = Command::new(bin())
                .arg("check-config")
                .env(format!("SWITCHBOARD_{key}__LISTEN_BACKLOG"), bad)
                .output()
                .expect("run switchboard");
            let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(64), "{key}={bad}: {text}");
            let name = format!("{}.listen_backlog", key.to_lowercase());
            assert!(text.contains(&name), "{key}={bad} names {name}: {text}");
        }
    }
}
