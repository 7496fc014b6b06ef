//! Durable group membership (SPEC §7): a group bound with `bind_to_group`
//! belongs to bizCode+clientId. It comes back with the client's next
//! connection on any edge (listed in the welcome, reached by group sends)
//! until it is unbound or the client has been offline for longer than
//! `membership.ttl`; it survives a router restart (the KV bucket keeps it).

mod common;

use std::time::Duration;

use common::*;

fn groups(welcome: &Value) -> Value {
    welcome["data"]["groups"].clone()
}

/// Binds `client` to `group` through the API on `api_addr`.
async fn bind(api_addr: &str, client: &str, group: &str, join: bool) {
    let call = if join { "bind_to_group" } else { "unbind_from_group" };
    let (st, r) = api(api_addr, "d1", call, json!({"clientId": client, "groupName": group})).await;
    assert_eq!((st, r["code"].clone()), (200, json!(0)), "{call}: {r}");
}

/// A group send from the API: its recipients count.
async fn send_to_group(api_addr: &str, group: &str, data: &str) -> Value {
    let (st, r) = api(
        api_addr,
        "d1",
        "send_to_group",
        json!({"groupName": group, "data": data}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    r["data"]["recipients"].clone()
}

/// The clientIds online in d1.
async fn online(api_addr: &str) -> Vec<Value> {
    let (_, r) = api(api_addr, "d1", "get_online_list", json!({})).await;
    r["data"]["list"].as_array().cloned().unwrap_or_default()
}

/// Closes `ws` and waits until the API no longer lists `client` online.
async fn leave(api_addr: &str, ws: Ws, client: &str) {
    ws.close().await;
    eventually!(
        !online(api_addr).await.iter().any(|c| c == client),
        "{client} still online"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_group_comes_back_with_the_next_connection_on_another_edge_until_unbound() {
    let c = Cluster::start(2, 2, &[]).await;
    let (r0, r1) = (c.router_addr(0), c.router_addr(1));
    let (a, welcome) = Ws::join(&c.url(0, "bizCode=d1&clientId=a&group=lobby")).await;
    assert_eq!(groups(&welcome), json!(["lobby"]));
    bind(&r0, "a", "room", true).await;
    leave(&r1, a, "a").await;

    // Back on the other edge, naming only the lobby: the room comes back.
    let (mut a, welcome) = Ws::join(&c.url(1, "bizCode=d1&clientId=a&group=lobby")).await;
    assert_eq!(groups(&welcome), json!(["lobby", "room"]));
    assert_eq!(send_to_group(&r1, "room", "after reconnect").await, 1);
    assert_eq!(a.recv_mode(200).await["content"]["data"], "after reconnect");
    let (_, r) = api(&r0, "d1", "get_online_list", json!({"groupName": "room"})).await;
    assert_eq!(r["data"]["list"], json!(["a"]), "{r}");

    // Unbound: gone now and after the next reconnect; lobby still per connection.
    bind(&r1, "a", "room", false).await;
    assert_eq!(send_to_group(&r0, "room", "unbound").await, 0);
    leave(&r0, a, "a").await;
    let (mut a, welcome) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    assert_eq!(groups(&welcome), json!([]));
    assert_eq!(send_to_group(&r0, "room", "still unbound").await, 0);
    a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_groups_survive_a_router_restart() {
    let mut c = Cluster::start(1, 1, &[]).await;
    let r0 = c.router_addr(0);
    let (a, _) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    bind(&r0, "a", "room", true).await;
    leave(&r0, a, "a").await;

    c.routers[0].kill9();
    let i = c.add_router().await;
    let r = c.router_addr(i);
    let (mut a, welcome) = Ws::join(&c.url(0, "bizCode=d1&clientId=a")).await;
    assert_eq!(groups(&welcome), json!(["room"]));
    assert_eq!(send_to_group(&r, "room", "after restart").await, 1);
    assert_eq!(a.recv_mode(200).await["content"]["data"], "after restart");
}

/// `membership.ttl` (3 s here): a client away for longer loses its bound
/// groups; one back sooner keeps them. On standalone (the same logic over
/// in-memory stores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_groups_expire_after_membership_ttl_offline() {
    let s = Standalone::start(&[("SWITCHBOARD_MEMBERSHIP__TTL", "3s")]).await;
    let addr = s.addr();
    let (a, _) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    let (b, _) = Ws::join(&s.url("bizCode=d1&clientId=b")).await;
    bind(&addr, "a", "room", true).await;
    bind(&addr, "b", "room", true).await;
    leave(&addr, a, "a").await;
    leave(&addr, b, "b").await;

    // b comes back within the ttl and keeps the room.
    let (b, welcome) = Ws::join(&s.url("bizCode=d1&clientId=b")).await;
    assert_eq!(groups(&welcome), json!(["room"]));
    // a stays away longer than the ttl: a fixed wait, since the outage
    // itself is what is tested.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_a, welcome) = Ws::join(&s.url("bizCode=d1&clientId=a")).await;
    assert_eq!(groups(&welcome), json!([]));
    assert_eq!(send_to_group(&addr, "room", "who").await, 1);
    drop(b);
}

/// Binding a client that is not online is still 1004 and binds nothing;
/// unbinding one that is away ends its bound group (1004 only if it had
/// none of that name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_clients_cannot_be_bound_but_can_be_unbound() {
    let s = Standalone::start(&[]).await;
    let addr = s.addr();
    let (st, r) = api(
        &addr,
        "d1",
        "bind_to_group",
        json!({"clientId": "ghost", "groupName": "room"}),
    )
    .await;
    assert_eq!((st, r["code"].clone()), (404, json!(1004)), "{r}");
    let (g, welcome) = Ws::join(&s.url("bizCode=d1&clientId=ghost")).await;
    assert_eq!(groups(&welcome), json!([]));

    bind(&addr, "ghost", "room", true).await;
    leave(&addr, g, "ghost").await;
    bind(&addr, "ghost", "room", false).await;
    let (st, r) = api(
        &addr,
        "d1",
        "unbind_from_group",
        json!({"clientId": "ghost", "groupName": "room"}),
    )
    .await;
    assert_eq!(
        (st, r["code"].clone()),
        (404, json!(1004)),
        "nothing left to unbind: {r}"
    );
    let (_g, welcome) = Ws::join(&s.url("bizCode=d1&clientId=ghost")).await;
    assert_eq!(groups(&welcome), json!([]));
}
