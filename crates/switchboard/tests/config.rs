//! Configuration: the example file is valid, bad configuration exits 64
//! listing every problem, the environment wins over the file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
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

/// Top-level keys that are values, not sections (`SWITCHBOARD_API_KEY`).
const TOP_LEVEL_VALUES: [&str; 1] = ["api_key"];

/// The names listed after "expected" in the binary's refusal of an unknown key.
fn expected_names(out: &str) -> BTreeSet<String> {
    let expected = out
        .split_once("expected")
        .and_then(|(_, rest)| rest.split_once("(from"))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no list of expected keys: {out}"));
    expected
        .split('`')
        .filter(|k| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .collect()
}

/// The sections the binary accepts, from its refusal of an unknown one.
fn accepted_sections() -> BTreeSet<String> {
    let dir = tempfile_dir();
    let file = dir.join("unknown-section.toml");
    std::fs::write(&file, "not_a_section = 1\n").expect("write a config file");
    let (code, out) = check(&["--config", &file.display().to_string(), "check-config"], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 64, "{out}");
    let mut sections = expected_names(&out);
    for v in TOP_LEVEL_VALUES {
        assert!(sections.remove(v), "{v} is no longer a top-level key: {out}");
    }
    sections
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Every key the binary accepts in `section`, read from its own refusal of
/// an unknown key (serde lists the expected fields), so a key added to the
/// code is a key this test knows about.
fn accepted_keys(section: &str) -> BTreeSet<String> {
    let var = format!("SWITCHBOARD_{}__NOT_A_KEY", section.to_uppercase());
    let (code, out) = check(&["check-config"], &[(&var, "1")]);
    assert_eq!(code, 64, "{out}");
    let keys = expected_names(&out);
    assert!(!keys.is_empty(), "no keys for [{section}]: {out}");
    keys
}

/// The keys of the example file by section: `key = value` lines, and
/// `# key = value` for keys without a default.
fn documented_keys() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(example()).expect("read the example file");
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            keys.entry(section.clone()).or_default();
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = line.split_once(" = ") {
            if !section.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                keys.entry(section.clone()).or_default().insert(key.to_owned());
            }
        }
    }
    keys
}

#[test]
fn the_example_file_has_every_key() {
    let documented = documented_keys();
    let sections = accepted_sections();
    assert_eq!(
        documented.keys().collect::<BTreeSet<_>>(),
        sections.iter().collect::<BTreeSet<_>>(),
        "sections of deploy/switchboard.example.toml"
    );
    let mut problems = Vec::new();
    for section in &sections {
        let accepted = accepted_keys(section);
        let listed = &documented[section];
        for k in accepted.difference(listed) {
            problems.push(format!("[{section}] {k} is missing from the example file"));
        }
        for k in listed.difference(&accepted) {
            problems.push(format!("[{section}] {k} is in the example file but not a key"));
        }
    }
    let text = std::fs::read_to_string(example()).expect("read the example file");
    assert!(
        text.contains("SWITCHBOARD_API_KEY"),
        "api_key (SWITCHBOARD_API_KEY) is not described"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
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

#[test]
fn api_keys_are_at_least_16_characters() {
    for env in [
        [("SWITCHBOARD_API_KEY", "fifteen-chars-x")],
        [("SWITCHBOARD_API__KEYS", r#"["fifteen-chars-x"]"#)],
    ] {
        let (code, out) = check(&["check-config"], &env);
        assert_eq!(code, 64, "{env:?}: {out}");
        assert!(out.contains("at least 16 characters"), "{out}");
    }
    for env in [
        [("SWITCHBOARD_API_KEY", "sixteen-chars-xx")],
        [("SWITCHBOARD_API__KEYS", r#"["sixteen-chars-xx"]"#)],
    ] {
        let (code, out) = check(&["check-config"], &env);
        assert_eq!(code, 0, "{env:?}: {out}");
    }
}
