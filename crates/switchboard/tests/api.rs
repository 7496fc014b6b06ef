//! The backend HTTP push API (SPEC §3) across two edges and a router on
//! real NATS, and on standalone: every call's success and failure cases,
//! cross-tenant isolation, auth, limits, registration, bus outage.

mod common;

use std::time::Duration;

use common::*;

const QUIET: Duration = Duration::from_millis(300);

/// Every call, on any deployment: `addr` serves the API, `t` the clients.
async fn every_call(addr: &str, t: &Target) {
    let (st, r) = api(addr, "d1", "register", json!({"systemId": "d1"})).await;
    assert_eq!(
        (st, r["code"].clone(), r["data"].clone()),
        (200, json!(0), json!({})),
        "{r}"
    );

    let (mut a, wa) = t.join(0, "bizCode=d1&clientId=a&group=g1").await;
    let (mut b, wb) = t.join(1, "bizCode=d1&clientId=b&group=g1").await;
    let (mut c, _) = t.join(1, "bizCode=d1&clientId=c").await;
    let (mut x, _) = t.join(0, "bizCode=d2&clientId=x&group=g1").await;
    let _ = a.recv_mode(400).await; // b came online in g1

    // send_to_client
    let body = json!({"clientId":"b","sendUserId":"backend","code":7,"msg":"hi","data":{"k":[1,2]}});
    let (st, r) = api(addr, "d1", "send_to_client", body).await;
    assert_eq!(
        (st, r["code"].clone(), r["msg"].clone()),
        (200, json!(0), json!("success")),
        "{r}"
    );
    assert_eq!(r["data"]["recipients"], 1);
    let mid = r["data"]["messageId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(mid.len(), 16);
    let got = b.recv_mode(100).await;
    assert_eq!(got["from"], "backend");
    assert_eq!(got["msgId"], mid.as_str());
    assert_eq!(got["content"], json!({"code":7,"msg":"hi","data":{"k":[1,2]}}));

    let (st, r) = api(addr, "d1", "send_to_client", json!({"clientId":"nobody","data":"x"})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)), "{r}");
    // x is online, but in d2: from d1 it does not exist.
    let (st, r) = api(addr, "d1", "send_to_client", json!({"clientId":"x","data":"leak"})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)), "{r}");

    // send_to_clients: offline and other-tenant ids are skipped.
    let body = json!({"clientIds":["a","c","nobody","x","a"],"sendUserId":"s","data":"many"});
    let (st, r) = api(addr, "d1", "send_to_clients", body).await;
    assert_eq!((st, r["data"]["recipients"].clone()), (200, json!(2)), "{r}");
    assert_eq!(a.recv_mode(100).await["content"]["data"], "many");
    assert_eq!(c.recv_mode(100).await["content"]["data"], "many");
    a.expect_silence(QUIET).await;

    // send_to_group
    let (st, r) = api(
        addr,
        "d1",
        "send_to_group",
        json!({"groupName":"g1","sendUserId":"s","data":1}),
    )
    .await;
    assert_eq!((st, r["data"]["recipients"].clone()), (200, json!(2)), "{r}");
    for m in [&mut a, &mut b] {
        let got = m.recv_mode(200).await;
        assert_eq!((got["group"].clone(), got["from"].clone()), (json!("g1"), json!("s")));
    }
    c.expect_silence(QUIET).await;

    // send_to_system
    let (st, r) = api(addr, "d1", "send_to_system", json!({"sendUserId":"s","msg":"all"})).await;
    assert_eq!((st, r["data"]["recipients"].clone()), (200, json!(3)), "{r}");
    for m in [&mut a, &mut b, &mut c] {
        assert_eq!(m.recv_mode(300).await["content"]["msg"], "all");
    }
    x.expect_silence(QUIET).await;

    // bind / unbind take effect before the reply.
    let (st, r) = api(
        addr,
        "d1",
        "bind_to_group",
        json!({"clientId":"c","groupName":"g2","userId":"u"}),
    )
    .await;
    assert_eq!((st, r["data"].clone()), (200, json!({})), "{r}");
    let (_, r) = api(addr, "d1", "send_to_group", json!({"groupName":"g2","data":"bound"})).await;
    assert_eq!(r["data"]["recipients"], 1, "{r}");
    assert_eq!(c.recv_mode(200).await["content"]["data"], "bound");
    let (_, r) = api(addr, "d1", "get_all_groups", json!({})).await;
    assert_eq!(
        r["data"],
        json!({"count":2,"list":[{"groupName":"g1","count":2},{"groupName":"g2","count":1}]})
    );
    let (st, _) = api(
        addr,
        "d1",
        "unbind_from_group",
        json!({"clientId":"c","groupName":"g2"}),
    )
    .await;
    assert_eq!(st, 200);
    let (_, r) = api(addr, "d1", "send_to_group", json!({"groupName":"g2","data":"gone"})).await;
    assert_eq!(r["data"]["recipients"], 0, "{r}");
    c.expect_silence(QUIET).await;
    let (st, r) = api(
        addr,
        "d1",
        "bind_to_group",
        json!({"clientId":"nobody","groupName":"g2"}),
    )
    .await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)));
    let (st, r) = api(addr, "d2", "bind_to_group", json!({"clientId":"a","groupName":"evil"})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)), "cross-tenant bind: {r}");

    // get_online_list / get_all_groups answer per tenant.
    let (_, r) = api(addr, "d1", "get_online_list", json!({})).await;
    assert_eq!(r["data"], json!({"count":3,"list":["a","b","c"]}));
    let (_, r) = api(
        addr,
        "d1",
        "get_online_list",
        json!({"groupName":"g1","code":0,"msg":"","data":null}),
    )
    .await;
    assert_eq!(r["data"], json!({"count":2,"list":["a","b"]}));
    let (_, r) = api(addr, "d2", "get_online_list", json!({})).await;
    assert_eq!(r["data"], json!({"count":1,"list":["x"]}));
    let (_, r) = api(addr, "d2", "get_all_groups", json!({})).await;
    assert_eq!(r["data"], json!({"count":1,"list":[{"groupName":"g1","count":1}]}));

    // get_node_counts: d1's clients per node (a on one, b and c on the
    // other; one node on standalone), d2's apart.
    let mut per_node = std::collections::BTreeMap::<String, u32>::new();
    for (welcome, n) in [(&wa, 1), (&wb, 2)] {
        let node = welcome["data"]["node"].as_str().unwrap_or_default().to_owned();
        *per_node.entry(node).or_default() += n;
    }
    let want: Vec<Value> = per_node.iter().map(|(n, c)| json!({"node": n, "count": c})).collect();
    let (st, r) = api(addr, "d1", "get_node_counts", json!({})).await;
    assert_eq!(
        (st, r["data"].clone()),
        (200, json!({"count": want.len(), "list": want})),
        "{r}"
    );
    let (_, r) = api(addr, "d2", "get_node_counts", json!({})).await;
    assert_eq!(r["data"]["list"][0]["count"], 1, "{r}");
    assert_eq!(r["data"]["count"], 1, "{r}");
    let (_, r) = api(addr, "d3", "get_node_counts", json!({})).await;
    assert_eq!(r["data"], json!({"count":0,"list":[]}), "{r}");

    // close_client: 4000 wherever the client is; presence gone at once.
    let (st, r) = api(addr, "d2", "close_client", json!({"clientId":"b"})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)), "cross-tenant close: {r}");
    let (st, r) = api(addr, "d1", "close_client", json!({"clientId":"b"})).await;
    assert_eq!((st, r["data"].clone()), (200, json!({})), "{r}");
    assert_eq!(b.closed().await.code, 4000);
    let (_, r) = api(addr, "d1", "get_online_list", json!({})).await;
    assert_eq!(r["data"], json!({"count":2,"list":["a","c"]}));
    let (st, r) = api(addr, "d1", "close_client", json!({"clientId":"b"})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)));
    let got = a.recv_mode(400).await;
    assert_eq!(
        (got["event"].clone(), got["clientId"].clone()),
        (json!("offline"), json!("b"))
    );
}

/// Refusals: auth, routing, bodies, ids.
async fn refusals(addr: &str) {
    let key = format!("Bearer {API_KEY}");
    let good: &[(&str, &str)] = &[("systemId", "d1"), ("Authorization", &key)];
    let body = r#"{"clientId":"a"}"#;
    for headers in [
        vec![("systemId", "d1")],
        vec![("systemId", "d1"), ("Authorization", "Bearer wrong-key-0123456789")],
        vec![("systemId", "d1"), ("Authorization", API_KEY)],
    ] {
        let (st, r) = api_with(addr, "send_to_client", &headers, body).await;
        assert_eq!(st, 401, "{headers:?} {r}");
        assert!(r["code"].is_number() && r["msg"].is_string(), "{r}");
    }
    let (st, _) = api_with(addr, "no_such_call", good, "{}").await;
    assert_eq!(st, 404);
    let (st, _) = switchboard_testkit::http_get(addr, "/api/websocket/get_online_list")
        .await
        .unwrap_or_default();
    assert!(st == 405 || st == 401, "GET: {st}");
    for (call, body) in [
        ("send_to_client", "{not json"),
        ("send_to_client", "[1]"),
        ("send_to_client", r#"{"clientId":5}"#),
        ("send_to_client", r#"{"sendUserId":"s"}"#),
        ("send_to_clients", r#"{"clientIds":"a"}"#),
        ("send_to_group", r#"{"groupName":null}"#),
        ("send_to_client", r#"{"clientId":"a","code":"x"}"#),
        ("bind_to_group", r#"{"clientId":"a"}"#),
        ("close_client", r#"{"clientId":"a b"}"#),
        ("send_to_client", r#"{"clientId":"*"}"#),
        ("send_to_client", r#"{"clientId":">"}"#),
        ("send_to_client", r#"{"clientId":"é"}"#),
        ("get_online_list", r#"{"groupName":"g>"}"#),
    ] {
        let (st, r) = api_with(addr, call, good, body).await;
        assert_eq!((st, r["code"].clone()), (400, json!(1001)), "{call} {body}: {r}");
    }
    let long = "c".repeat(129);
    let (st, _) = api_with(addr, "send_to_client", good, &json!({ "clientId": long }).to_string()).await;
    assert_eq!(st, 400);
    let (st, r) = api_with(addr, "send_to_client", &[("Authorization", &key)], body).await;
    assert_eq!((st, r["code"].clone()), (400, json!(1001)), "no tenant: {r}");
    let (st, _) = api_with(
        addr,
        "send_to_client",
        &[("systemId", "d.*"), ("Authorization", &key)],
        body,
    )
    .await;
    assert_eq!(st, 400);
    let big = json!({"clientId":"a","data":"x".repeat(1024 * 1024 + 1)}).to_string();
    let (st, r) = api_with(addr, "send_to_system", good, &big).await;
    assert_eq!((st, r["code"].clone()), (413, json!(1003)), "{r}");
    let ids: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    let (st, _) = api_with(addr, "send_to_clients", good, &json!({ "clientIds": ids }).to_string()).await;
    assert_eq!(st, 400);
}

/// The Bearer scheme in any case (RFC 9110 §11.1), and tenant headers
/// that disagree (systemId vs bizCode in either order, the same header
/// twice, the body's systemId): refused with 400/1001 and delivered to
/// nobody, where an agreeing request is served.
async fn scheme_case_and_tenant_headers(addr: &str, t: &Target) {
    let (mut a1, _) = t.join(0, "bizCode=t1&clientId=a").await;
    let (mut a2, _) = t.join(1, "bizCode=t2&clientId=a").await;
    let body = r#"{"clientId":"a","data":"x"}"#;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for auth in [format!("{scheme} {API_KEY}"), format!("{scheme}   {API_KEY} ")] {
            let (st, r) = api_with(
                addr,
                "send_to_client",
                &[("systemId", "t1"), ("Authorization", &auth)],
                body,
            )
            .await;
            assert_eq!((st, r["code"].clone()), (200, json!(0)), "{auth:?}: {r}");
            assert_eq!(a1.recv_mode(100).await["content"]["data"], "x");
        }
    }
    let good = format!("Bearer {API_KEY}");
    for headers in [
        vec![
            ("systemId", "t1".to_owned()),
            ("Authorization", format!("Basic {API_KEY}")),
        ],
        vec![
            ("systemId", "t1".to_owned()),
            ("Authorization", format!("Bearer{API_KEY}")),
        ],
        vec![
            ("systemId", "t1".to_owned()),
            ("Authorization", good.clone()),
            ("Authorization", good.clone()),
        ],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        let (st, r) = api_with(addr, "send_to_client", &headers, body).await;
        assert_eq!((st, r["code"].clone()), (401, json!(401)), "{headers:?}: {r}");
    }

    for tenants in [
        [("systemId", "t1"), ("bizCode", "t2")],
        [("bizCode", "t2"), ("systemId", "t1")],
        [("systemId", "t2"), ("bizCode", "t1")],
        [("bizCode", "t1"), ("systemId", "t2")],
        [("systemId", "t1"), ("systemId", "t2")],
        [("bizCode", "t2"), ("bizCode", "t1")],
        [("SYSTEMID", "t1"), ("bizcode", "t2")],
        [("systemId", "t1"), ("bizCode", "")],
    ] {
        let mut headers = vec![("Authorization", good.as_str())];
        headers.extend(tenants);
        let (st, r) = api_with(addr, "send_to_client", &headers, body).await;
        assert_eq!(st, 400, "{tenants:?}: {r}");
        assert_eq!(r["code"], 1001, "{tenants:?}: {r}");
        assert!(r["msg"].is_string() && r["data"].is_null(), "{r}");
        let (st, r) = api_with(addr, "get_online_list", &headers, "{}").await;
        assert_eq!((st, r["code"].clone()), (400, json!(1001)), "{tenants:?}: {r}");
    }
    // The body's systemId (or bizCode) must name the header's tenant too.
    for b in [
        r#"{"clientId":"a","data":"x","systemId":"t2"}"#,
        r#"{"clientId":"a","data":"x","bizCode":"t2"}"#,
    ] {
        let (st, r) = api_with(
            addr,
            "send_to_client",
            &[("systemId", "t1"), ("Authorization", &good)],
            b,
        )
        .await;
        assert_eq!((st, r["code"].clone()), (400, json!(1001)), "{b}: {r}");
    }
    a1.expect_silence(QUIET).await;
    a2.expect_silence(QUIET).await;

    // Agreeing headers (and body) are served, to that tenant only.
    for tenants in [
        vec![("systemId", "t2"), ("bizCode", "t2")],
        vec![("bizCode", "t2"), ("systemId", "t2"), ("systemId", "t2")],
    ] {
        let mut headers = vec![("Authorization", good.as_str())];
        headers.extend(tenants.iter().copied());
        let b = r#"{"clientId":"a","data":"t2","systemId":"t2"}"#;
        let (st, r) = api_with(addr, "send_to_client", &headers, b).await;
        assert_eq!(
            (st, r["data"]["recipients"].clone()),
            (200, json!(1)),
            "{tenants:?}: {r}"
        );
        assert_eq!(a2.recv_mode(100).await["content"]["data"], "t2");
    }
    a1.expect_silence(QUIET).await;
}

/// Ids with `.`, `:` and `@` are encoded: a crafted pair of ids that would
/// collide as raw `biz.client` keys stays apart.
async fn crafted_ids(addr: &str, t: &Target) {
    let (mut u1, _) = t.join(0, "bizCode=d1&clientId=x.c1").await;
    let (mut u2, _) = t.join(1, "bizCode=d1.x&clientId=c1").await;
    let (_, r) = api(addr, "d1", "send_to_client", json!({"clientId":"x.c1","data":"one"})).await;
    assert_eq!(r["data"]["recipients"], 1, "{r}");
    assert_eq!(u1.recv_mode(100).await["content"]["data"], "one");
    u2.expect_silence(QUIET).await;
    let (_, r) = api(addr, "d1.x", "get_online_list", json!({})).await;
    assert_eq!(r["data"]["list"], json!(["c1"]));
    let (_, r) = api(addr, "d1", "send_to_system", json!({"data":"d1 only"})).await;
    assert_eq!(r["data"]["recipients"], 1, "{r}");
    u2.expect_silence(QUIET).await;
    let (_, r) = api(addr, "user@x:y", "send_to_system", json!({})).await;
    assert_eq!(r["data"]["recipients"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_a_cluster() {
    let mut c = Cluster::start(2, 1, &[]).await;
    let addr = c.router_addr(0);
    let t = Target::cluster(&c);
    every_call(&addr, &t).await;
    refusals(&addr).await;
    crafted_ids(&addr, &t).await;
    scheme_case_and_tenant_headers(&addr, &t).await;

    // With the bus gone the API answers 503/1500, never 200.
    c.nats.kill();
    eventually!(
        api(&addr, "d1", "send_to_system", json!({})).await.0 == 503,
        "the API kept answering without a bus"
    );
    let (_, r) = api(&addr, "d1", "send_to_system", json!({})).await;
    assert_eq!(r["code"], 1500);
    let (st, _) = http_get(&addr, "/readyz").await.unwrap_or_default();
    assert_eq!(st, 503);
    let _ = c.edges.len();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_standalone() {
    let s = Standalone::start(&[]).await;
    let t = Target::standalone(&s, 2);
    every_call(&s.addr(), &t).await;
    refusals(&s.addr()).await;
    crafted_ids(&s.addr(), &t).await;
    scheme_case_and_tenant_headers(&s.addr(), &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_can_be_required() {
    let c = Cluster::start(1, 1, &[("SWITCHBOARD_API__REQUIRE_REGISTRATION", "true")]).await;
    let addr = c.router_addr(0);
    let refused = Ws::connect(&c.url(0, "bizCode=newco&clientId=a")).await.err();
    let (status, body) = refused.unwrap_or_default();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("1007"), "{body}");
    let (st, r) = api(&addr, "newco", "send_to_system", json!({})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1007)), "{r}");

    let (st, _) = api(&addr, "ignored", "register", json!({"systemId":"newco"})).await;
    assert_eq!(st, 200);
    let (mut a, _) = Ws::join(&c.url(0, "bizCode=newco&clientId=a")).await;
    let (_, r) = api(&addr, "newco", "send_to_system", json!({"data":1})).await;
    assert_eq!(r["data"]["recipients"], 1, "{r}");
    assert_eq!(a.recv_mode(300).await["content"]["data"], 1);
    let (st, _) = api(&addr, "x", "register", json!({"systemId":"bad id"})).await;
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_auth_is_off_only_when_configured_and_standalone_makes_a_key() {
    let open = Standalone::start(&[("SWITCHBOARD_API__AUTH", "false")]).await;
    let (st, r) = api_with(&open.addr(), "get_online_list", &[("systemId", "d1")], "{}").await;
    assert_eq!((st, r["data"]["count"].clone()), (200, json!(0)), "{r}");

    let s = Standalone::start(&[("SWITCHBOARD_API_KEY", "")]).await;
    let log = s.proc.log();
    let key = log
        .lines()
        .find_map(|l| l.split("API key for this run: ").nth(1))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no generated key printed: {log}"))
        .to_owned();
    let (st, _) = api_with(&s.addr(), "get_online_list", &[("systemId", "d1")], "{}").await;
    assert_eq!(st, 401);
    let bearer = format!("Bearer {key}");
    let (st, _) = api_with(
        &s.addr(),
        "get_online_list",
        &[("systemId", "d1"), ("Authorization", &bearer)],
        "{}",
    )
    .await;
    assert_eq!(st, 200);

    // A router refuses to start with auth on and no key: exit 64.
    let out = std::process::Command::new(bin())
        .arg("router")
        .env("SWITCHBOARD_API_KEY", "")
        .output()
        .expect("run router");
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A key scoped to `shop` and `chat` (SPEC-style docs: README "HTTP push API").
const SHOP_KEY: &str = "shop-and-chat-key-0123456789";

/// Calls the API as tenant `biz` with the scoped key.
async fn scoped(addr: &str, biz: &str, call: &str, body: Value) -> (u16, Value) {
    api_as(SHOP_KEY, addr, biz, call, body).await
}

fn assert_forbidden(what: &str, (st, r): (u16, Value)) {
    assert_eq!((st, r["code"].clone()), (403, json!(403)), "{what}: {r}");
    assert!(r["msg"].is_string() && r["data"].is_null(), "{what}: {r}");
}

/// A scoped key serves its bizCodes on every call and gets 403 for any
/// other, with nothing registered, delivered, bound or closed; the global
/// key (SWITCHBOARD_API_KEY) still serves every bizCode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_key_serves_its_biz_codes_only() {
    let keys = json!([{"key": SHOP_KEY, "biz_codes": ["shop", "chat"]}]).to_string();
    let c = Cluster::start(
        2,
        1,
        &[
            ("SWITCHBOARD_API__KEYS", &keys),
            ("SWITCHBOARD_API__REQUIRE_REGISTRATION", "true"),
        ],
    )
    .await;
    let addr = c.router_addr(0);

    // register: the bizCode registered (body, else header) is the one checked.
    let (st, r) = scoped(&addr, "shop", "register", json!({"systemId": "shop"})).await;
    assert_eq!((st, r["code"].clone()), (200, json!(0)), "{r}");
    let (st, r) = scoped(&addr, "chat", "register", json!({})).await;
    assert_eq!((st, r["code"].clone()), (200, json!(0)), "{r}");
    let (st, r) = scoped(&addr, "news", "register", json!({"systemId": "shop"})).await;
    assert_eq!((st, r["code"].clone()), (200, json!(0)), "body wins: {r}");
    assert_forbidden(
        "register news by body",
        scoped(&addr, "shop", "register", json!({"systemId": "news"})).await,
    );
    assert_forbidden(
        "register news by header",
        scoped(&addr, "news", "register", json!({})).await,
    );
    let (st, r) = api(&addr, "news", "get_online_list", json!({})).await;
    assert_eq!((st, r["code"].clone()), (404, json!(1007)), "news was registered: {r}");
    let refused = Ws::connect(&c.url(0, "bizCode=news&clientId=n")).await.err();
    assert_eq!(
        refused.unwrap_or_default().0,
        403,
        "a client of unregistered news got in"
    );
    // The global key registers (and serves) any bizCode.
    let (st, r) = api(&addr, "shop", "register", json!({"systemId": "news"})).await;
    assert_eq!((st, r["code"].clone()), (200, json!(0)), "{r}");

    let (mut a, _) = Ws::join(&c.url(0, "bizCode=shop&clientId=a&group=g1")).await;
    let (mut b, _) = Ws::join(&c.url(1, "bizCode=chat&clientId=b")).await;
    let (mut n, _) = Ws::join(&c.url(0, "bizCode=news&clientId=n&group=g1")).await;
    let (mut n2, _) = Ws::join(&c.url(1, "bizCode=news&clientId=n2&group=g1")).await;

    // Its own bizCodes: sends, lists, binds, across both edges.
    let (st, r) = scoped(&addr, "shop", "send_to_client", json!({"clientId":"a","data":"hi"})).await;
    assert_eq!((st, r["data"]["recipients"].clone()), (200, json!(1)), "{r}");
    assert_eq!(a.recv_mode(100).await["content"]["data"], "hi");
    let (st, r) = scoped(&addr, "chat", "send_to_system", json!({"data":"all"})).await;
    assert_eq!((st, r["data"]["recipients"].clone()), (200, json!(1)), "{r}");
    assert_eq!(b.recv_mode(300).await["content"]["data"], "all");
    let (st, r) = scoped(&addr, "shop", "get_online_list", json!({})).await;
    assert_eq!((st, r["data"].clone()), (200, json!({"count":1,"list":["a"]})), "{r}");
    let (st, r) = scoped(&addr, "chat", "bind_to_group", json!({"clientId":"b","groupName":"g2"})).await;
    assert_eq!(st, 200, "{r}");
    let (st, r) = scoped(&addr, "chat", "get_all_groups", json!({})).await;
    assert_eq!(
        (st, r["data"].clone()),
        (200, json!({"count":1,"list":[{"groupName":"g2","count":1}]})),
        "{r}"
    );

    // Another bizCode: 403 on every call, whether or not it exists.
    for (call, body) in [
        ("send_to_client", json!({"clientId":"n","data":"leak"})),
        ("send_to_clients", json!({"clientIds":["n","n2"],"data":"leak"})),
        ("send_to_group", json!({"groupName":"g1","data":"leak"})),
        ("send_to_system", json!({"data":"leak"})),
        ("bind_to_group", json!({"clientId":"n","groupName":"evil"})),
        ("unbind_from_group", json!({"clientId":"n","groupName":"g1"})),
        ("get_online_list", json!({})),
        ("get_all_groups", json!({})),
        ("get_node_counts", json!({})),
        ("close_client", json!({"clientId":"n"})),
    ] {
        assert_forbidden(call, scoped(&addr, "news", call, body.clone()).await);
        assert_forbidden(
            &format!("{call} by the bizCode header"),
            api_with(
                &addr,
                call,
                &[("bizCode", "news"), ("Authorization", &format!("Bearer {SHOP_KEY}"))],
                &body.to_string(),
            )
            .await,
        );
        assert_forbidden(
            &format!("{call} for an unregistered bizCode"),
            scoped(&addr, "nobody", call, body).await,
        );
    }
    n.expect_silence(QUIET).await;
    n2.expect_silence(QUIET).await;
    a.expect_silence(QUIET).await;
    let (_, r) = api(&addr, "news", "get_all_groups", json!({})).await;
    assert_eq!(
        r["data"],
        json!({"count":1,"list":[{"groupName":"g1","count":2}]}),
        "a refused call bound or unbound: {r}"
    );
    let (_, r) = api(&addr, "news", "get_online_list", json!({})).await;
    assert_eq!(
        r["data"]["list"],
        json!(["n", "n2"]),
        "a refused close_client closed: {r}"
    );

    // 401, 404, 405 and the existing 400/413 checks come first.
    let (st, _) = api_with(
        &addr,
        "send_to_system",
        &[
            ("systemId", "news"),
            ("Authorization", "Bearer shop-and-chat-key-012345678"),
        ],
        "{}",
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = scoped(&addr, "news", "no_such_call", json!({})).await;
    assert_eq!(st, 404);
    let (st, r) = scoped(&addr, "news.*", "send_to_system", json!({})).await;
    assert_eq!((st, r["code"].clone()), (400, json!(1001)), "{r}");
    let big = json!({"data": "x".repeat(1024 * 1024 + 1)});
    let (st, _) = scoped(&addr, "news", "send_to_system", big).await;
    assert_eq!(st, 413);

    // The global key serves every bizCode as before.
    let (st, r) = api(&addr, "news", "send_to_group", json!({"groupName":"g1","data":"ok"})).await;
    assert_eq!((st, r["data"]["recipients"].clone()), (200, json!(2)), "{r}");
    assert_eq!(n.recv_mode(200).await["content"]["data"], "ok");
    assert_eq!(n2.recv_mode(200).await["content"]["data"], "ok");
    let (st, r) = api(&addr, "shop", "send_to_client", json!({"clientId":"a","data":"g"})).await;
    assert_eq!((st, r["data"]["recipients"].clone()), (200, json!(1)), "{r}");
    assert_eq!(a.recv_mode(100).await["content"]["data"], "g");

    // Refusals are counted by status like any other.
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap_or_default();
    assert!(
        metrics.contains(r#"switchboard_api_requests_total{call="close_client",status="403"} 3"#),
        "{metrics}"
    );
}

fn check_config(env: &[(&str, &str)], file: Option<&std::path::Path>) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(bin());
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    let out = cmd
        .arg("check-config")
        .env("SWITCHBOARD_API_KEY", "")
        .envs(env.iter().copied())
        .output()
        .expect("run check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Scoped keys in TOML and in the environment's JSON; invalid ones are
/// refused by `check-config` (exit 64) with every problem, never the key.
#[test]
fn scoped_keys_are_validated_by_check_config() {
    let dir = std::env::temp_dir().join(format!("sb-api-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("keys.toml");
    std::fs::write(
        &file,
        "[api]\nkeys = [\n  \"global-operator-key-0123\",\n  { key = \"shop-key-0123456789ab\", biz_codes = [\"shop\", \"chat\"] },\n]\n",
    )
    .expect("write a config file");
    let (code, out) = check_config(&[], Some(&file));
    assert_eq!(code, Some(0), "{out}");
    let json = r#"[{"key":"shop-key-0123456789ab","biz_codes":["shop"]},"global-operator-key-0123"]"#;
    let (code, out) = check_config(&[("SWITCHBOARD_API__KEYS", json)], None);
    assert_eq!(code, Some(0), "{out}");

    let bad = r#"[{"key":"short-secret","biz_codes":["shop"]},{"key":"empty-scope-secret-0123","biz_codes":[]},{"key":"bad-scope-secret-01234","biz_codes":["a b"]},"empty-scope-secret-0123"]"#;
    let (code, out) = check_config(&[("SWITCHBOARD_API__KEYS", bad)], None);
    assert_eq!(code, Some(64), "{out}");
    for want in [
        "api.keys[0]: a key must be at least 16 characters",
        "api.keys[1]: a scoped key needs at least one bizCode",
        "api.keys[2].biz_codes: \"a b\"",
        "api.keys[3]: the same key as api.keys[1]",
    ] {
        assert!(out.contains(want), "{want:?} missing: {out}");
    }
    assert!(
        !out.contains("short-secret") && !out.contains("scope-secret"),
        "a key was printed: {out}"
    );
    for (env, what) in [
        (r#"[{"key":"a-table-without-scope-0123"}]"#, "biz_codes"),
        (
            r#"[{"key":"a-table-secret-0123456","biz_codes":["shop"],"bizcodes":["x"]}]"#,
            "bizcodes",
        ),
        (r#"[{"key":"broken-json-secret-0123","#, "JSON"),
    ] {
        let (code, out) = check_config(&[("SWITCHBOARD_API__KEYS", env)], None);
        assert_eq!(code, Some(64), "{env}: {out}");
        assert!(out.contains(what), "{env}: {out}");
        assert!(
            !out.contains("secret") && !out.contains("0123"),
            "a key was printed: {out}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
