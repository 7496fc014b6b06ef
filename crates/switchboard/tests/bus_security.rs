//! The NATS bus with authorization on, as the Helm chart runs it (issue 10):
//! edges and routers log in as their own users with the least-privilege
//! permissions of `k8s/switchboard/files/nats-permissions.conf`
//! (`NatsServer::start_secured`). Every `Cluster` test runs this way; these
//! tests check what the permissions refuse and what a process does with
//! wrong credentials.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use switchboard_protocol::envelope::{self, DeliverTo, NodeCommand};
use switchboard_protocol::event::EventKind;
use switchboard_protocol::subject;
use switchboard_testkit::NatsUser;
use tokio::sync::mpsc;

/// A client of `nats` logged in as `user` whose server errors (permission
/// violations) arrive on the returned channel.
async fn observed_client(nats: &NatsServer, user: NatsUser) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.user.into(), user.password.into())
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .expect("connect");
    (client, rx)
}

/// Waits for a server error naming `subject`.
async fn denied(errors: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, errors.recv()).await {
            Ok(Some(e)) if e.to_lowercase().contains("permissions violation") && e.contains(subject) => {
                assert!(e.contains(what), "{e}");
                return;
            }
            Ok(Some(_)) => continue,
            _ => panic!("NATS did not deny the {what} to {subject}"),
        }
    }
}

fn forged_delivery(biz: &str) -> bytes::Bytes {
    envelope::encode(&NodeCommand::Deliver {
        mode: 300,
        to: DeliverTo::Biz {
            biz: biz.into(),
            exclude: None,
        },
        frame: bytes::Bytes::from_static(br#"{"forged":true}"#),
        seq: None,
        order: None,
    })
    .expect("encode")
}

/// An edge's credentials cannot put frames into another edge's sockets,
/// steal the routers' requests, read routers' replies or touch JetStream;
/// a router's cannot read deliveries. The forged delivery is checked to
/// work with full permissions, so its refusal is what keeps it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_nats_user_is_limited_to_its_own_subjects() {
    let c = Cluster::start(2, 1, &[]).await;
    let (mut victim, welcome) = Ws::join(&c.url(1, "bizCode=d1&clientId=victim")).await;
    let node = welcome["data"]["node"].as_str().expect("node id").to_owned();
    let inbox = subject::node_inbox(&node);

    // Positive control: with every permission the forged delivery arrives.
    let admin = c.nats.connect_admin().await.expect("admin");
    admin
        .publish(inbox.clone(), forged_delivery("d1"))
        .await
        .expect("publish");
    admin.flush().await.expect("flush");
    assert_eq!(victim.recv().await, json!({"forged": true}));

    let (edge, mut errors) = observed_client(&c.nats, EDGE_USER).await;
    edge.publish(inbox.clone(), forged_delivery("d1"))
        .await
        .expect("publish");
    edge.flush().await.expect("flush");
    denied(&mut errors, "Publish", &inbox).await;
    victim.expect_silence(Duration::from_millis(300)).await;

    for s in [
        "sb.router.>",
        "sb.router.route",
        "_INBOX.sb-router.>",
        "$KV.sb-presence.>",
        "sb.events.>",
    ] {
        let _sub = edge.subscribe(s).await.expect("subscribe call");
        edge.flush().await.expect("flush");
        denied(&mut errors, "Subscription", s).await;
    }
    for s in [
        "$JS.API.STREAM.DELETE.KV_sb-presence",
        "$JS.API.STREAM.PURGE.KV_sb-presence",
        "$KV.sb-presence.ZDE.dmljdGlt",
        "sb.node.someone-else",
        "$JS.API.STREAM.DELETE.sb-events",
        "$JS.API.STREAM.PURGE.sb-events",
        "$JS.API.STREAM.CREATE.sb-events",
    ] {
        edge.publish(s, "x".into()).await.expect("publish call");
        edge.flush().await.expect("flush");
        denied(&mut errors, "Publish", s).await;
    }

    let (router, mut errors) = observed_client(&c.nats, ROUTER_USER).await;
    for s in ["sb.node.*", "sb.node.>", "_INBOX.sb-edge.>", ">"] {
        let _sub = router.subscribe(s).await.expect("subscribe call");
        router.flush().await.expect("flush");
        denied(&mut errors, "Subscription", s).await;
    }
    for s in [
        "$JS.API.STREAM.DELETE.KV_sb-presence",
        "$JS.API.STREAM.CREATE.OTHER",
        "sb.router.route",
        "$JS.API.STREAM.DELETE.sb-events",
        "$JS.API.STREAM.PURGE.sb-events",
    ] {
        router.publish(s, "x".into()).await.expect("publish call");
        router.flush().await.expect("flush");
        denied(&mut errors, "Publish", s).await;
    }

    // The cluster still works with the permissions it has.
    let (mut sender, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=sender")).await;
    sender
        .send(&json!({"msgId": "m1", "mode": 100, "targetClientId": "victim", "content": "hi"}))
        .await;
    let got = victim.recv_mode(100).await;
    assert_eq!(got["content"], json!("hi"), "{got}");
    let js = async_nats::jetstream::new(admin);
    js.get_key_value("sb-presence")
        .await
        .expect("the presence bucket is still there");
    // Both users publish connection events with their permissions: the
    // edge's `connected` of the sender, the router's `online`.
    let mut stream = js.get_stream(subject::EVENTS_STREAM).await.expect("the events stream");
    let of = |kind| subject::event("d1", kind);
    for kind in [EventKind::Connected, EventKind::Online] {
        eventually!(
            stream.info().await.is_ok_and(|i| i.state.messages > 0)
                && stream.get_last_raw_message_by_subject(&of(kind)).await.is_ok(),
            "no {kind:?} event in the stream"
        );
    }
}

/// Reads /readyz until it answers `want` (the process may not listen yet).
async fn readyz_becomes(addr: &str, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((status, body)) = http_get(addr, "/readyz").await {
            if status == want {
                return body;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz on {addr} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wrong or missing NATS credentials: the process stays up, unready, and
/// says in its log that NATS refused its credentials, without the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_leave_the_process_unready_and_say_why() {
    let nats = NatsServer::start_secured();
    let secret = "wrong-password-do-not-log-me-42";
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "router",
            vec![
                ("SWITCHBOARD_NATS__USER", ROUTER_USER.user),
                ("SWITCHBOARD_NATS__PASSWORD", secret),
            ],
        ),
        (
            "edge",
            vec![
                ("SWITCHBOARD_NATS__USER", EDGE_USER.user),
                ("SWITCHBOARD_NATS__PASSWORD", secret),
            ],
        ),
        ("edge", vec![]),
    ];
    for (role, creds) in cases {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut env: BTreeMap<String, String> = creds.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        env.insert("SWITCHBOARD_NATS__URL".into(), nats.url());
        env.insert("SWITCHBOARD_API_KEY".into(), API_KEY.into());
        env.insert(format!("SWITCHBOARD_{}__LISTEN", role.to_uppercase()), addr.clone());
        let p = Proc::spawn(role, bin(), &[role], &env);
        let body = readyz_becomes(&addr, 503).await;
        assert!(body.contains("bus unavailable"), "{role}: {body}");
        eventually!(
            p.log().contains("NATS refused this process's credentials"),
            "{role} does not say NATS refused its credentials: {}",
            p.log()
        );
        let (_, metrics) = http_get(&addr, "/metrics").await.expect("metrics");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switchboard_nats_connect_failures_total ") && !l.ends_with(" 0")),
            "{role}: no connect failure counted"
        );
        if role == "router" {
            let (st, r) = api(&addr, "d1", "get_online_list", json!({})).await;
            assert_eq!(st, 503, "{r}");
        } else {
            let refused = Ws::connect(&format!("ws://{addr}/ws?bizCode=d1&clientId=c1")).await;
            assert!(refused.is_err(), "{role}: an upgrade was accepted without the bus");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!p.log().contains(secret), "{role}: the log shows the password");
        let mut p = p;
        assert!(p.wait_exit(Duration::ZERO).is_none(), "{role} exited");
    }
    assert!(
        nats.log().contains("Authorization Violation") || nats.log().contains("authentication error"),
        "the server did not see the refusals: {}",
        nats.log()
    );
}

/// A numeric-looking password from the environment is used as written
/// (figment would otherwise read `0123…` as a number).
#[test]
fn secrets_from_the_environment_are_read_as_written() {
    let out = std::process::Command::new(bin())
        .arg("check-config")
        .env("SWITCHBOARD_NATS__USER", "sb-edge")
        .env("SWITCHBOARD_NATS__PASSWORD", "012345678901234567890")
        .env("SWITCHBOARD_NATS__TOKEN", "[not-an-array")
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "two auth methods must be refused: {stderr}"
    );
    assert!(stderr.contains("choose one authentication method"), "{stderr}");
    assert!(
        !stderr.contains("012345678901234567890") && !stderr.contains("not-an-array"),
        "{stderr}"
    );

    let out = std::process::Command::new(bin())
        .arg("check-config")
        .env("SWITCHBOARD_NATS__USER", "sb-edge")
        .env("SWITCHBOARD_NATS__PASSWORD", "012345678901234567890")
        .output()
        .expect("run check-config");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Edges and routers reach a NATS that requires TLS when they trust its
/// CA (`nats.tls.ca_file`), logged in as their users; without the CA the
/// process stays unready and its log names the TLS failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_nats_with_the_servers_ca() {
    let c = Cluster::on(NatsServer::start_secured_tls(), 2, 1, &[]).await;
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    let (mut b, _) = Ws::join(&c.url(1, "bizCode=d1&clientId=b")).await;
    a.send(&json!({"msgId": "m1", "mode": 100, "targetClientId": "b", "content": "over tls"}))
        .await;
    assert_eq!(b.recv_mode(100).await["content"], json!("over tls"));
    let (st, r) = api(&c.router_addr(0), "d1", "get_online_list", json!({})).await;
    assert_eq!((st, r["data"]["count"].clone()), (200, json!(2)), "{r}");
    a.close().await;

    // The same edge without the CA: the server's certificate is not trusted.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut env: BTreeMap<String, String> = c.nats.env_for(EDGE_USER).into_iter().collect();
    env.remove("SWITCHBOARD_NATS__TLS__CA_FILE");
    env.insert("SWITCHBOARD_EDGE__LISTEN".into(), addr.clone());
    let p = Proc::spawn("edge-without-ca", bin(), &["edge"], &env);
    let body = readyz_becomes(&addr, 503).await;
    assert!(body.contains("bus unavailable"), "{body}");
    eventually!(
        p.log().contains("the TLS handshake failed"),
        "the edge does not say TLS failed: {}",
        p.log()
    );
}

/// An edge authenticating with an NKey seed (`nats.nkey_seed`) gets the
/// edge permissions of its NKey user and serves clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_logs_in_with_an_nkey() {
    let mut c = Cluster::start(1, 1, &[]).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("SWITCHBOARD_NATS__URL".into(), c.nats.url());
    env.insert(
        "SWITCHBOARD_NATS__NKEY_SEED".into(),
        switchboard_testkit::edge_nkey_seed(),
    );
    env.insert("SWITCHBOARD_EDGE__LISTEN".into(), addr.clone());
    env.insert("SWITCHBOARD_EDGE__NODE_NAME".into(), "nkey-edge".into());
    let p = Proc::spawn("nkey-edge", bin(), &["edge"], &env);
    readyz_becomes(&addr, 200).await;
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    let (mut b, _) = Ws::join(&format!("ws://{addr}/ws?bizCode=d1&clientId=b")).await;
    a.send(&json!({"msgId": "m1", "mode": 100, "targetClientId": "b", "content": "signed in"}))
        .await;
    assert_eq!(b.recv_mode(100).await["content"], json!("signed in"));
    assert!(p.log().contains("auth=\"nkey\""), "{}", p.log());
    assert!(
        !p.log().contains(&switchboard_testkit::edge_nkey_seed()),
        "the log shows the seed"
    );
    c.edges.push(p);
    c.edge_ports.push(port);
}

/// NATS does not check a request's reply subject against the requester's
/// permissions: a router must not answer into a subject an edge may not
/// write itself (a presence or registration key, another edge's inbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_answers_only_into_edge_inboxes() {
    use switchboard_protocol::envelope::BizQuery;

    let c = Cluster::start(1, 1, &[]).await;
    let (_victim, welcome) = Ws::join(&c.url(0, "bizCode=d1&clientId=victim")).await;
    let node = welcome["data"]["node"].as_str().expect("node id").to_owned();
    let edge = c.nats.connect_as(EDGE_USER).await.expect("edge user");
    let query = envelope::encode(&BizQuery { biz: "d1".into() }).expect("encode");
    let evil_key = format!("$KV.sb-presence-biz.{}", switchboard_protocol::ids::encode("evil"));
    let victim_key = format!("$KV.sb-presence.{}", subject::presence_key("d1", "victim"));
    for reply in [evil_key.clone(), victim_key, subject::node_inbox(&node)] {
        edge.publish_with_reply(subject::ROUTER_CHECK_BIZ, reply, query.clone())
            .await
            .expect("publish");
    }
    edge.flush().await.expect("flush");
    // A real request is answered, so the router has seen the forged ones.
    let answer = edge
        .request(subject::ROUTER_CHECK_BIZ, query.clone())
        .await
        .expect("a request from an edge inbox is answered");
    assert!(!answer.payload.is_empty());

    let js = async_nats::jetstream::new(c.nats.connect_admin().await.expect("admin"));
    let biz = js.get_key_value("sb-presence-biz").await.expect("bucket");
    assert!(
        biz.get(switchboard_protocol::ids::encode("evil"))
            .await
            .expect("get")
            .is_none(),
        "an edge registered a bizCode through a router's answer"
    );
    let (st, r) = api(&c.router_addr(0), "d1", "get_online_list", json!({})).await;
    assert_eq!((st, r["data"]["count"].clone()), (200, json!(1)), "{r}");
    assert!(
        !c.edges[0].log().contains("undecodable node command"),
        "{}",
        c.edges[0].log()
    );
}
