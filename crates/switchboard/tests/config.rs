//! Configuration: the example file is valid, bad configuration exits 64
//! listing every problem, the environment wins over the file.

mod common;

use std::process::Command;

use common::bin;

fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run switchboard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn example() -> String {
    format!("{}/../../deploy/switchboard.example.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_file_is_valid() {
    let (code, out) = check(&["--config", &example(), "check-config"], &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn bad_configuration_exits_64_with_every_problem() {
    let (code, out) = check(
        &["--config", &example(), "check-config"],
        &[
            ("SWITCHBOARD_EDGE__RATE_PER_SEC", "0"),
            ("SWITCHBOARD_ROUTER__NODE_TIMEOUT", "30s"),
            ("SWITCHBOARD_NATS__PRESENCE_BUCKET", "bad.name"),
        ],
    );
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("edge.rate_per_sec"), "{out}");
    assert!(out.contains("router.node_timeout"), "{out}");
    assert!(out.contains("nats.presence_bucket"), "{out}");

    let (code, out) = check(&["check-config"], &[("SWITCHBOARD_EDGE__HEARTBEAT", "soon")]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("heartbeat"), "{out}");

    let (code, out) = check(&["check-config"], &[("SWITCHBOARD_EDGE__LISTN", "x")]);
    assert_eq!(code, 64, "an unknown key is a mistake: {out}");

    // Variables that are not configuration sections are not ours.
    let (code, out) = check(
        &["check-config"],
        &[
            ("SWITCHBOARD_SERVICE_HOST", "10.0.0.1"),
            ("SWITCHBOARD_PORT", "tcp://10.0.0.1:8080"),
        ],
    );
    assert_eq!(code, 0, "{out}");

    let (code, out) = check(&["--config", "/nonexistent.toml", "check-config"], &[]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("does not exist"), "{out}");
}
