//! Client authentication: the JWT accept/reject matrix (HS256 on a
//! cluster edge, RS256 and ES256 on standalone), algorithm pinning, token
//! expiry closing with 4001, token groups, and the Origin allow-list.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn hs(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn claims(sub: &str, biz: &str) -> Value {
    json!({"sub": sub, "biz": biz, "exp": now() + 3600})
}

async fn status_of(url: &str, headers: &[(&str, &str)]) -> u16 {
    match Ws::connect_with(url, headers).await {
        Ok(_) => 101,
        Err((status, _)) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_matrix_on_a_cluster_edge() {
    let c = Cluster::start(
        1,
        1,
        &[
            ("SWITCHBOARD_AUTH__MODE", "jwt"),
            ("SWITCHBOARD_AUTH__SECRET", SECRET),
            ("SWITCHBOARD_AUTH__LEEWAY", "0s"),
            (
                "SWITCHBOARD_EDGE__ALLOWED_ORIGINS",
                r#"["https://app.example.com", "https://*.example.org"]"#,
            ),
        ],
    )
    .await;
    let key = SECRET.as_bytes();

    // The token decides identity: no bizCode/clientId needed in the query.
    let t = hs(&claims("alice", "d1"), key);
    let (_alice, w) = Ws::join(&c.url(0, &format!("token={t}"))).await;
    assert_eq!(
        (w["data"]["clientId"].clone(), w["data"]["bizCode"].clone()),
        (json!("alice"), json!("d1"))
    );
    // Or by header, with a matching query.
    let t = hs(&claims("bob", "d1"), key);
    let auth = format!("Bearer {t}");
    let mut bob = Ws::connect_with(&c.url(0, "bizCode=d1&clientId=bob"), &[("Authorization", &auth)])
        .await
        .expect("header token accepted");
    assert_eq!(bob.recv().await["data"]["clientId"], "bob");

    let cases: Vec<(&str, String, u16)> = vec![
        ("no token", String::new(), 401),
        ("garbage", "token=abc.def.ghi".into(), 401),
        (
            "bad signature",
            format!(
                "token={}",
                hs(&claims("eve", "d1"), b"another-secret-0123456789abcdef!!")
            ),
            401,
        ),
        (
            "expired",
            format!("token={}", hs(&json!({"sub":"eve","biz":"d1","exp": now() - 60}), key)),
            401,
        ),
        (
            "not yet valid",
            format!(
                "token={}",
                hs(
                    &json!({"sub":"eve","biz":"d1","exp": now() + 3600, "nbf": now() + 600}),
                    key
                )
            ),
            401,
        ),
        (
            "no exp",
            format!("token={}", hs(&json!({"sub":"eve","biz":"d1"}), key)),
            401,
        ),
        (
            "biz mismatch",
            format!("bizCode=d2&token={}", hs(&claims("eve", "d1"), key)),
            403,
        ),
        (
            "client mismatch",
            format!("clientId=mallory&token={}", hs(&claims("eve", "d1"), key)),
            403,
        ),
        (
            "group not allowed",
            format!(
                "group=g2&token={}",
                hs(
                    &json!({"sub":"eve","biz":"d1","exp": now() + 3600, "groups":["g1"]}),
                    key
                )
            ),
            403,
        ),
        ("bad sub", format!("token={}", hs(&claims("a>b", "d1"), key)), 403),
    ];
    for (name, query, want) in &cases {
        assert_eq!(status_of(&c.url(0, query), &[]).await, *want, "{name}");
    }
    // alg "none" is never accepted.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims("eve", "d1").to_string())
    );
    assert_eq!(
        status_of(&c.url(0, &format!("token={none}")), &[]).await,
        401,
        "alg none"
    );

    // Token groups: may join g1, may not send to g2.
    let t = hs(
        &json!({"sub":"gina","biz":"d1","exp": now() + 3600, "groups":["g1"]}),
        key,
    );
    let (mut gina, _) = Ws::join(&c.url(0, &format!("group=g1&token={t}"))).await;
    gina.send(&json!({"msgId":"1","mode":200,"group":"g2","content":1}))
        .await;
    assert_eq!(gina.recv_mode(2).await["code"], 1006);
    gina.send(&json!({"msgId":"2","mode":200,"group":"g1","content":1}))
        .await;
    assert_eq!(gina.recv_mode(2).await["code"], 0);

    // Origin allow-list: browsers from elsewhere are refused before the upgrade.
    let t = hs(&claims("olga", "d1"), key);
    let url = c.url(0, &format!("token={t}"));
    assert_eq!(status_of(&url, &[("Origin", "https://evil.com")]).await, 403);
    assert_eq!(
        status_of(&url, &[("Origin", "https://app.example.com.evil.com")]).await,
        403
    );
    assert_eq!(status_of(&url, &[("Origin", "https://shop.example.org")]).await, 101);
    assert_eq!(status_of(&url, &[("Origin", "https://app.example.com")]).await, 101);

    // A connection is closed with 4001 when its token expires.
    let t = hs(&json!({"sub":"short","biz":"d1","exp": now() + 2}), key);
    let (mut short, _) = Ws::join(&c.url(0, &format!("token={t}"))).await;
    let closed = short.closed_within(Duration::from_secs(6)).await.0;
    assert_eq!(closed.map(|c| c.code), Some(4001));
    bob.send(&json!({"msgId":"still","mode":1})).await;
    assert_eq!(bob.recv_mode(1).await["msgId"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_are_pinned() {
    let rsa_pub = fixture_path("rsa_public.pem");
    let rs = Standalone::start(&[
        ("SWITCHBOARD_AUTH__MODE", "jwt"),
        ("SWITCHBOARD_AUTH__ALGORITHM", "RS256"),
        ("SWITCHBOARD_AUTH__PUBLIC_KEY_FILE", rsa_pub.as_str()),
        ("SWITCHBOARD_AUTH__AUDIENCE", "switchboard"),
        ("SWITCHBOARD_AUTH__ISSUER", "https://idp.example.com"),
    ])
    .await;
    let es_pub = fixture_path("ec_public.pem");
    let es = Standalone::start(&[
        ("SWITCHBOARD_AUTH__MODE", "jwt"),
        ("SWITCHBOARD_AUTH__ALGORITHM", "ES256"),
        ("SWITCHBOARD_AUTH__PUBLIC_KEY_FILE", es_pub.as_str()),
    ])
    .await;
    let rsa = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa key");
    let ec = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    let full = json!({"sub":"r1","biz":"d1","exp": now() + 3600, "aud":"switchboard", "iss":"https://idp.example.com"});
    let rs_token = encode(&Header::new(Algorithm::RS256), &full, &rsa).expect("sign");
    let es_token = encode(&Header::new(Algorithm::ES256), &full, &ec).expect("sign");

    assert_eq!(status_of(&rs.url(&format!("token={rs_token}")), &[]).await, 101);
    assert_eq!(
        status_of(&rs.url(&format!("token={es_token}")), &[]).await,
        401,
        "ES256 on an RS256 node"
    );
    // Algorithm confusion: HS256 signed with the RSA public key as secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &full,
        &EncodingKey::from_secret(&fixture("rsa_public.pem")),
    )
    .expect("sign");
    assert_eq!(
        status_of(&rs.url(&format!("token={confused}")), &[]).await,
        401,
        "alg confusion"
    );
    let wrong_aud = json!({"sub":"r1","biz":"d1","exp": now() + 3600, "aud":"other", "iss":"https://idp.example.com"});
    let t = encode(&Header::new(Algorithm::RS256), &wrong_aud, &rsa).expect("sign");
    assert_eq!(status_of(&rs.url(&format!("token={t}")), &[]).await, 401, "audience");
    let wrong_iss = json!({"sub":"r1","biz":"d1","exp": now() + 3600, "aud":"switchboard", "iss":"https://evil"});
    let t = encode(&Header::new(Algorithm::RS256), &wrong_iss, &rsa).expect("sign");
    assert_eq!(status_of(&rs.url(&format!("token={t}")), &[]).await, 401, "issuer");

    assert_eq!(status_of(&es.url(&format!("token={es_token}")), &[]).await, 101);
    assert_eq!(
        status_of(&es.url(&format!("token={rs_token}")), &[]).await,
        401,
        "RS256 on an ES256 node"
    );
}

/// The kinds of claim values JWT libraries emit (RFC 7519 §2 NumericDate:
/// any JSON number; `aud` and list claims as one string or an array), the
/// Bearer scheme in any case, and the leeway as one rule for the handshake
/// and the expiry close (4001 at `exp` + leeway, never earlier, and a token
/// past that is refused at the handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_types_scheme_case_and_leeway_on_standalone() {
    let s = Standalone::start(&[
        ("SWITCHBOARD_AUTH__MODE", "jwt"),
        ("SWITCHBOARD_AUTH__SECRET", SECRET),
        ("SWITCHBOARD_AUTH__LEEWAY", "30s"),
        ("SWITCHBOARD_AUTH__AUDIENCE", "sb"),
    ])
    .await;
    let key = SECRET.as_bytes();
    let t = now();
    #[allow(clippy::cast_precision_loss)]
    let tf = t as f64;
    let base = |extra: Value| {
        let mut c = json!({"sub": "c1", "biz": "d1", "aud": "sb", "exp": now() + 3600});
        if let (Some(c), Value::Object(e)) = (c.as_object_mut(), extra) {
            c.extend(e);
        }
        c
    };
    for (name, extra) in [
        ("fractional exp", json!({"exp": tf + 3600.5})),
        ("fractional nbf and iat", json!({"nbf": tf - 0.5, "iat": tf - 0.5})),
        ("negative nbf", json!({"nbf": -1, "iat": 0})),
        ("aud as an array", json!({"aud": ["other", "sb"]})),
        ("groups as one string", json!({"groups": "g1"})),
    ] {
        let token = hs(&base(extra), key);
        let mut ws = Ws::connect(&s.url(&format!("group=g1&token={token}")))
            .await
            .unwrap_or_else(|e| panic!("{name}: refused {e:?}"));
        let w = ws.recv().await;
        assert_eq!(
            (w["mode"].clone(), w["data"]["clientId"].clone()),
            (json!(0), json!("c1")),
            "{name}: {w}"
        );
    }
    // Exponent notation, as some encoders write large floats.
    let raw = format!(r#"{{"sub":"c1","biz":"d1","aud":"sb","exp":9.9e9,"iat":{tf}e0}}"#);
    let raw = serde_json::value::RawValue::from_string(raw).expect("raw claims");
    let token = encode(&Header::new(Algorithm::HS256), &raw, &EncodingKey::from_secret(key)).expect("sign");
    let (_ws, w) = Ws::join(&s.url(&format!("token={token}"))).await;
    assert_eq!(w["data"]["clientId"], "c1");
    // A string where a NumericDate belongs is still refused.
    let token = hs(&base(json!({"exp": (t + 3600).to_string()})), key);
    assert_eq!(
        status_of(&s.url(&format!("token={token}")), &[]).await,
        401,
        "exp as a string"
    );

    // `Authorization: <scheme> <token>` with the scheme in any case.
    let token = hs(&base(json!({})), key);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {token}");
        let mut ws = Ws::connect_with(&s.url(""), &[("Authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("{scheme}: refused {e:?}"));
        assert_eq!(ws.recv().await["mode"], 0, "{scheme}");
    }
    assert_eq!(
        status_of(&s.url(""), &[("Authorization", &format!("Basic {token}"))]).await,
        401
    );

    // exp passed 10 s ago, leeway 30 s: admitted, and not cut at once (it
    // used to get 4001 within half a second, in a loop on every retry).
    let token = hs(&base(json!({"exp": now() - 10})), key);
    let url = s.url(&format!("token={token}"));
    let (mut late, _) = Ws::join(&url).await;
    let (closed, _) = late.closed_within(Duration::from_secs(3)).await;
    assert!(closed.is_none(), "closed within leeway: {closed:?}");
    let (mut retry, _) = Ws::join(&url).await;
    let (closed, _) = retry.closed_within(Duration::from_secs(1)).await;
    assert!(closed.is_none(), "retry closed within leeway: {closed:?}");

    // exp + leeway 3 s from now: admitted, closed with 4001 then, not before.
    let token = hs(&base(json!({"exp": now() - 27})), key);
    let (mut edge_case, _) = Ws::join(&s.url(&format!("token={token}"))).await;
    let started = std::time::Instant::now();
    let (closed, _) = edge_case.closed_within(Duration::from_secs(8)).await;
    let after = started.elapsed();
    assert_eq!(closed.map(|c| c.code), Some(4001));
    assert!(
        after >= Duration::from_millis(1500),
        "closed {after:?} after the welcome, before exp + leeway"
    );

    // Past exp + leeway: refused at the handshake, not admitted and cut.
    let token = hs(&base(json!({"exp": now() - 31})), key);
    assert_eq!(
        status_of(&s.url(&format!("token={token}")), &[]).await,
        401,
        "past the leeway"
    );
    #[allow(clippy::cast_precision_loss)]
    let tf = now() as f64;
    let token = hs(&base(json!({"exp": tf - 30.5})), key);
    assert_eq!(
        status_of(&s.url(&format!("token={token}")), &[]).await,
        401,
        "fractionally past the leeway"
    );
}

#[test]
fn jwt_misconfiguration_exits_64() {
    for env in [
        vec![("SWITCHBOARD_AUTH__MODE", "jwt")],
        vec![("SWITCHBOARD_AUTH__MODE", "jwt"), ("SWITCHBOARD_AUTH__SECRET", "short")],
        vec![
            ("SWITCHBOARD_AUTH__MODE", "jwt"),
            ("SWITCHBOARD_AUTH__ALGORITHM", "none"),
        ],
        vec![
            ("SWITCHBOARD_AUTH__MODE", "jwt"),
            ("SWITCHBOARD_AUTH__ALGORITHM", "RS256"),
            ("SWITCHBOARD_AUTH__PUBLIC_KEY_FILE", "/nonexistent.pem"),
        ],
    ] {
        let out = std::process::Command::new(bin())
            .arg("check-config")
            .envs(env.iter().copied())
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(64),
            "{env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
