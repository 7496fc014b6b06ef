//! Behaviour both logs share, written once over `&dyn PartitionLog` and run
//! against JetStream (`tests/jetstream.rs`) and memory (`tests/memory.rs`).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_log::{partition_of, EntryKind, LogError, PartitionLog, StoredEntry};

/// Partitions of the logs under test.
pub const PARTITIONS: u32 = 16;

/// `n` bizCodes of partition `p`.
pub fn bizcodes_in(p: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("biz{i}"))
        .filter(|b| partition_of(b, PARTITIONS) == p)
        .take(n)
        .collect()
}

fn body(i: usize) -> Bytes {
    Bytes::from(format!("payload {i}"))
}

async fn append_ok(log: &dyn PartitionLog, p: u32, biz: &str, id: &str, expected: u64) -> u64 {
    let ack = log
        .append(p, biz, id, expected, None, Bytes::from(id.to_owned()))
        .await
        .expect("sent");
    let a = ack.await.expect("stored");
    assert!(!a.duplicate, "{id} is new");
    a.seq
}

async fn collect(log: &dyn PartitionLog, p: u32, biz: Option<&str>, after: u64, up_to: u64) -> Vec<StoredEntry> {
    let mut s = log.read_range(p, biz, after, up_to).await.expect("range");
    let mut out = Vec::new();
    while let Some(e) = s.next().await {
        out.push(e.expect("entry"));
    }
    out
}

fn msg_id(e: &StoredEntry) -> Option<&str> {
    match &e.kind {
        EntryKind::Entry { msg_id, .. } => msg_id.as_deref(),
        _ => None,
    }
}

/// 1,000 appends in flight at once, each expecting `last + k - 1`, are
/// stored with consecutive sequences and acknowledged in order.
pub async fn pipelined_appends_get_consecutive_seqs(log: &dyn PartitionLog) {
    let p = 1;
    let biz = &bizcodes_in(p, 1)[0];
    let last = log.ensure(p).await.expect("ensure").last;
    let n = 1_000;
    let t = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for k in 0..n {
        let id = format!("m{k}");
        acks.push(
            log.append(p, biz, &id, last + k as u64, None, body(k))
                .await
                .expect("sent"),
        );
    }
    for (k, ack) in acks.into_iter().enumerate() {
        let a = ack.await.expect("stored");
        assert_eq!(a.seq, last + 1 + k as u64, "append {k}");
        assert!(!a.duplicate);
    }
    let took = t.elapsed();
    eprintln!(
        "pipelined appends: {n} in {took:?} ({:.0}/s)",
        n as f64 / took.as_secs_f64()
    );
    assert_eq!(log.bounds(p).await.expect("bounds").last, last + n as u64);
}

/// A writer whose expectation is stale is refused with the real last
/// sequence, and nothing of it is stored.
pub async fn stale_writer_is_refused(log: &dyn PartitionLog) {
    let p = 2;
    let biz = &bizcodes_in(p, 1)[0];
    let last = log.ensure(p).await.expect("ensure").last;
    let s = append_ok(log, p, biz, "a1", last).await;
    let stale = log.append(p, biz, "b1", last, None, body(0)).await.expect("sent").await;
    assert_eq!(stale, Err(LogError::WrongLastSequence { last: Some(s) }));
    let tail = log.tail(p, last, 10).await.expect("tail");
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![s]);
}

/// A fence refuses the next append of a writer that read the last sequence
/// before it but had not appended yet; the tail shows the fence.
pub async fn fence_fences_a_writer_that_had_not_appended(log: &dyn PartitionLog) {
    let p = 3;
    let biz = &bizcodes_in(p, 1)[0];
    let old_last = log.ensure(p).await.expect("ensure").last;
    let fence = log.fence(p, "node-b").await.expect("fence");
    assert_eq!(fence.after, old_last);
    assert_eq!(fence.token, old_last + 1);
    let r = log
        .append(p, biz, "old-1", old_last, None, body(0))
        .await
        .expect("sent")
        .await;
    assert_eq!(
        r,
        Err(LogError::WrongLastSequence {
            last: Some(fence.token)
        })
    );
    let tail = log.tail(p, old_last, 10).await.expect("tail");
    assert_eq!(tail.len(), 1);
    assert_eq!(
        tail[0].kind,
        EntryKind::Fence {
            token: fence.token,
            owner: "node-b".into()
        }
    );
    // The new owner appends right after its fence; a second fence lands
    // after that, with a higher token.
    let s = append_ok(log, p, biz, "new-1", fence.token).await;
    let again = log.fence(p, "node-c").await.expect("fence again");
    assert_eq!((again.after, again.token), (s, s + 1));
}

/// Retrying an append with its `Msg-Id` and the current last sequence
/// answers the first append's sequence with `duplicate` and stores
/// nothing. The expectation is checked first: a retry that expects a stale
/// last sequence is refused like any other append (JetStream 2.15 does so).
pub async fn msg_id_retry_returns_the_original_seq(log: &dyn PartitionLog) {
    let p = 4;
    let biz = &bizcodes_in(p, 1)[0];
    let last = log.ensure(p).await.expect("ensure").last;
    let s = append_ok(log, p, biz, "send-1", last).await;
    let s2 = append_ok(log, p, biz, "send-2", s).await;
    let retry = log
        .append(p, biz, "send-1", s2, None, body(9))
        .await
        .expect("sent")
        .await;
    assert_eq!(retry.map(|a| (a.seq, a.duplicate)), Ok((s, true)));
    let stale = log
        .append(p, biz, "send-1", last, None, body(9))
        .await
        .expect("sent")
        .await;
    assert_eq!(stale, Err(LogError::WrongLastSequence { last: Some(s2) }));
    // The duplicate took no sequence: the next append still expects s2.
    assert_eq!(log.bounds(p).await.expect("bounds").last, s2);
    append_ok(log, p, biz, "send-3", s2).await;
}

/// An owner's pipelined appends after one that a fence refused land after
/// the fence when their expectations line up with the shifted sequence:
/// the fence stops an old owner's *next* plan, not the appends it already
/// has in flight. They are stored, in order, after the fence. This is the
/// limit of the bare expectation, kept as its proof; owners also name their
/// token (`fenced_owner_appends_are_all_refused_after_a_newer_fence`).
pub async fn in_flight_appends_can_land_after_a_fence(log: &dyn PartitionLog) {
    let p = 13;
    let biz = &bizcodes_in(p, 1)[0];
    let last = log.ensure(p).await.expect("ensure").last;
    // The new owner fences between the old owner's reading of `last` and
    // its first append's arrival.
    let fence = log.fence(p, "new-owner").await.expect("fence");
    let a1 = log.append(p, biz, "old-1", last, None, body(1)).await.expect("sent");
    let a2 = log
        .append(p, biz, "old-2", last + 1, None, body(2))
        .await
        .expect("sent");
    let a3 = log
        .append(p, biz, "old-3", last + 2, None, body(3))
        .await
        .expect("sent");
    assert_eq!(
        a1.await,
        Err(LogError::WrongLastSequence {
            last: Some(fence.token)
        })
    );
    assert_eq!(a2.await.map(|a| a.seq), Ok(fence.token + 1));
    assert_eq!(a3.await.map(|a| a.seq), Ok(fence.token + 2));
    let tail = log.tail(p, last, 10).await.expect("tail");
    let ids: Vec<_> = tail.iter().map(|e| msg_id(e).map(str::to_owned)).collect();
    assert_eq!(ids, vec![None, Some("old-2".to_owned()), Some("old-3".to_owned())]);
}

/// The fix for the limit above: an owner's appends that also name its
/// token (the newest fence must be its own) are ALL refused once a newer
/// fence exists, wherever they would land; the new owner's go through.
/// A writer that never fenced names token 0, which holds only while the
/// partition has no fence.
pub async fn fenced_owner_appends_are_all_refused_after_a_newer_fence(log: &dyn PartitionLog) {
    let p = 11;
    let biz = &bizcodes_in(p, 1)[0];
    let start = log.ensure(p).await.expect("ensure").last;
    // No fence yet: token 0 matches, any other token does not.
    let s0 = log
        .append(p, biz, "pre-1", start, Some(0), body(0))
        .await
        .expect("sent")
        .await
        .expect("token 0 before any fence")
        .seq;
    let wrong = log
        .append(p, biz, "pre-2", s0, Some(s0), body(0))
        .await
        .expect("sent")
        .await;
    assert_eq!(wrong, Err(LogError::WrongLastSequence { last: Some(0) }));
    let old = log.fence(p, "old-owner").await.expect("old fence");
    let s1 = log
        .append(p, biz, "old-1", old.token, Some(old.token), body(1))
        .await
        .expect("sent")
        .await
        .expect("the owner appends under its token")
        .seq;
    // The new owner fences between the old owner's reading of `last` and its
    // pipeline's arrival.
    let new = log.fence(p, "new-owner").await.expect("new fence");
    assert_eq!(new.token, s1 + 1);
    let mut acks = Vec::new();
    for k in 0..4u64 {
        let id = format!("old-{}", k + 2);
        acks.push(log.append(p, biz, &id, s1 + k, Some(old.token), body(2)).await);
    }
    for (k, ack) in acks.into_iter().enumerate() {
        let refused = match ack {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        // Refused by the fence (the newest fence's sequence), or, on a
        // replicated stream, failed unsent behind the first refusal.
        assert!(
            matches!(refused, Err(LogError::WrongLastSequence { last }) if last.is_none_or(|l| l == new.token)),
            "old owner's append {k} after the fence: {refused:?}"
        );
    }
    let after = log
        .append(p, biz, "pre-3", new.token, Some(0), body(3))
        .await
        .expect("sent")
        .await;
    assert_eq!(after, Err(LogError::WrongLastSequence { last: Some(new.token) }));
    let n1 = log
        .append(p, biz, "new-1", new.token, Some(new.token), body(4))
        .await
        .expect("sent")
        .await
        .expect("the new owner appends")
        .seq;
    assert_eq!(n1, new.token + 1);
    // Even expecting the real last sequence, the old token is refused.
    let late = log
        .append(p, biz, "old-9", n1, Some(old.token), body(9))
        .await
        .expect("sent")
        .await;
    assert_eq!(late, Err(LogError::WrongLastSequence { last: Some(new.token) }));
    let tail = log.tail(p, s1, 10).await.expect("tail");
    let seqs: Vec<_> = tail.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![new.token, n1]);
    assert_eq!(msg_id(&tail[1]), Some("new-1"));
}

/// Partition of [`fence_outlives_max_age`]; its log's `max_age` must be
/// shorter than what `age` waits.
pub const AGING_PARTITION: u32 = 15;

/// The newest fence outlives `max_age` (JetStream: `Nats-TTL: never`), so
/// an owner whose takeover is older than the log's TTL can still append
/// under its token. `age` lets more than `max_age` pass.
pub async fn fence_outlives_max_age<F, Fut>(log: &dyn PartitionLog, age: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let p = AGING_PARTITION;
    let biz = &bizcodes_in(p, 1)[0];
    log.ensure(p).await.expect("ensure");
    let fence = log.fence(p, "owner").await.expect("fence");
    let s1 = log
        .append(p, biz, "aged-1", fence.token, Some(fence.token), body(1))
        .await
        .expect("sent")
        .await
        .expect("stored")
        .seq;
    age().await;
    assert_eq!(
        log.first_seq_of(p, biz).await.expect("first"),
        None,
        "the send aged out"
    );
    assert_eq!(
        log.bounds(p).await.expect("bounds").first,
        fence.token,
        "the fence stayed"
    );
    let s2 = log
        .append(p, biz, "aged-2", s1, Some(fence.token), body(2))
        .await
        .expect("sent")
        .await
        .expect("the owner still appends under its token")
        .seq;
    assert_eq!(s2, s1 + 1);
}

/// After a failed pipelined append the tail shows exactly what was stored,
/// with the Msg-Ids to match the sends still waiting.
pub async fn tail_after_a_failure_shows_what_was_stored(log: &dyn PartitionLog) {
    let p = 5;
    let biz = &bizcodes_in(p, 1)[0];
    let last = log.ensure(p).await.expect("ensure").last;
    // Another writer slips in after our first append is sent.
    let a1 = log.append(p, biz, "ours-1", last, None, body(1)).await.expect("sent");
    let seq1 = a1.await.expect("first stored").seq;
    let theirs1 = append_ok(log, p, biz, "theirs-1", seq1).await;
    let theirs = append_ok(log, p, biz, "theirs-2", theirs1).await;
    let a2 = log.append(p, biz, "ours-2", seq1, None, body(2)).await.expect("sent");
    let a3 = log
        .append(p, biz, "ours-3", seq1 + 1, None, body(3))
        .await
        .expect("sent");
    assert_eq!(a2.await, Err(LogError::WrongLastSequence { last: Some(theirs) }));
    assert_eq!(a3.await, Err(LogError::WrongLastSequence { last: Some(theirs) }));
    let tail = log.tail(p, last, 100).await.expect("tail");
    let ids: Vec<_> = tail.iter().map(|e| (e.seq, msg_id(e).map(str::to_owned))).collect();
    assert_eq!(
        ids,
        vec![
            (seq1, Some("ours-1".to_owned())),
            (theirs1, Some("theirs-1".to_owned())),
            (theirs, Some("theirs-2".to_owned()))
        ]
    );
    assert_eq!(tail[0].payload, body(1));
    // Limits hold.
    assert_eq!(log.tail(p, last, 1).await.expect("tail").len(), 1);
    assert!(log.tail(p, theirs, 10).await.expect("tail").is_empty());
}

/// Range reads with and without a bizCode filter return exactly the
/// entries of `(after, up_to]`, in order; past the head they end at it.
pub async fn read_range_returns_exactly_the_range(log: &dyn PartitionLog) {
    let p = 6;
    let bizs = bizcodes_in(p, 2);
    let (a, b) = (&bizs[0], &bizs[1]);
    let mut last = log.ensure(p).await.expect("ensure").last;
    let start = last;
    let mut all = Vec::new();
    for i in 0..30 {
        let biz = if i % 3 == 0 { b } else { a };
        let id = format!("r{i}");
        last = append_ok(log, p, biz, &id, last).await;
        all.push((last, biz.clone(), id));
    }
    let fence = log.fence(p, "node-r").await.expect("fence");
    let (lo, hi) = (all[4].0, all[20].0);
    let only_a = collect(log, p, Some(a), lo, hi).await;
    let want_a: Vec<_> = all
        .iter()
        .filter(|(s, biz, _)| biz == a && *s > lo && *s <= hi)
        .map(|(s, _, id)| (*s, id.clone()))
        .collect();
    let got_a: Vec<_> = only_a
        .iter()
        .map(|e| (e.seq, msg_id(e).unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(got_a, want_a);
    assert!(only_a
        .iter()
        .all(|e| matches!(&e.kind, EntryKind::Entry { biz, .. } if biz == a)));
    let every = collect(log, p, None, lo, hi).await;
    let want: Vec<_> = all
        .iter()
        .filter(|(s, ..)| *s > lo && *s <= hi)
        .map(|(s, ..)| *s)
        .collect();
    assert_eq!(every.iter().map(|e| e.seq).collect::<Vec<_>>(), want);
    // The whole partition to far beyond the head: every entry, then the
    // fence, then the end.
    let to_head = collect(log, p, None, start, u64::MAX).await;
    assert_eq!(to_head.len(), 31);
    assert_eq!(to_head.last().map(|e| e.seq), Some(fence.token));
    assert!(matches!(to_head[30].kind, EntryKind::Fence { .. }));
    // Empty ranges end at once.
    assert!(collect(log, p, Some(b), fence.token, u64::MAX).await.is_empty());
    assert!(collect(log, p, None, hi, hi).await.is_empty());
    assert!(collect(log, p, None, hi, lo).await.is_empty());
}

/// Purging a bizCode up to a sequence leaves the rest, and its first
/// sequence moves past the purge.
pub async fn purge_removes_one_bizcode_up_to_a_seq(log: &dyn PartitionLog) {
    let p = 7;
    let bizs = bizcodes_in(p, 2);
    let (a, b) = (&bizs[0], &bizs[1]);
    let mut last = log.ensure(p).await.expect("ensure").last;
    let mut a_seqs = Vec::new();
    for i in 0..10 {
        let biz = if i % 2 == 0 { a } else { b };
        last = append_ok(log, p, biz, &format!("p{i}"), last).await;
        if biz == a {
            a_seqs.push(last);
        }
    }
    assert_eq!(log.first_seq_of(p, a).await.expect("first"), Some(a_seqs[0]));
    assert_eq!(log.purge(p, a, a_seqs[2]).await.expect("purge"), 3);
    assert_eq!(log.first_seq_of(p, a).await.expect("first"), Some(a_seqs[3]));
    assert_eq!(collect(log, p, None, 0, u64::MAX).await.len(), 7);
    assert_eq!(log.purge(p, a, u64::MAX - 1).await.expect("purge all"), 2);
    assert_eq!(log.first_seq_of(p, a).await.expect("first"), None);
    assert_eq!(collect(log, p, Some(b), 0, u64::MAX).await.len(), 5);
}

/// A log lost and created again starts above every earlier sequence and
/// reports a new creation time. `lose` deletes partition `p`'s log.
pub async fn a_recreated_log_starts_above_the_old_one<F, Fut>(log: &dyn PartitionLog, lose: F)
where
    F: FnOnce(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let p = 8;
    let biz = &bizcodes_in(p, 1)[0];
    let before = log.ensure(p).await.expect("ensure");
    let mut last = before.last;
    for i in 0..5 {
        last = append_ok(log, p, biz, &format!("l{i}"), last).await;
    }
    lose(p).await;
    let r = log.append(p, biz, "lost", last, None, body(0)).await;
    assert!(
        matches!(
            r,
            Err(LogError::Unavailable(_)) | Ok(_) // JetStream answers through the ack
        ),
        "{r:?}"
    );
    if let Ok(ack) = r {
        assert!(matches!(ack.await, Err(LogError::Unavailable(_))));
    }
    let after = log.ensure(p).await.expect("ensure again");
    assert!(after.first > last, "{after:?} starts above {last}");
    assert_eq!(after.last + 1, after.first);
    assert_ne!(after.created_ns, before.created_ns);
    assert!(after.created_ns > before.created_ns);
    assert!(collect(log, p, None, 0, u64::MAX).await.is_empty());
    let s = append_ok(log, p, biz, "l-new", after.last).await;
    assert_eq!(s, after.first);
}

/// Two writers ensuring the same partition at once end up with one log.
pub async fn concurrent_ensures_end_with_one_log(a: &dyn PartitionLog, b: &dyn PartitionLog) {
    let p = 9;
    let (x, y) = tokio::join!(a.ensure(p), b.ensure(p));
    let (x, y) = (x.expect("a"), y.expect("b"));
    assert_eq!(x.created_ns, y.created_ns);
    assert_eq!(x.first, y.first);
    let biz = &bizcodes_in(p, 1)[0];
    let s = append_ok(a, p, biz, "one", x.last).await;
    assert_eq!(b.bounds(p).await.expect("bounds").last, s);
}

/// Mistakes are refused before anything is sent.
pub async fn mistakes_are_refused(log: &dyn PartitionLog) {
    let p = 10;
    log.ensure(p).await.expect("ensure");
    let other = &bizcodes_in(p + 1, 1)[0];
    assert!(matches!(
        log.append(p, other, "x", 0, None, body(0)).await,
        Err(LogError::Invalid(_))
    ));
    let mine = &bizcodes_in(p, 1)[0];
    assert!(matches!(
        log.append(p, mine, "", 0, None, body(0)).await,
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(
        log.append(p, "", "x", 0, None, body(0)).await,
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(log.ensure(PARTITIONS).await, Err(LogError::Invalid(_))));
    assert!(matches!(log.bounds(11).await, Err(LogError::Unavailable(_))));
}

/// Reading 1,000 entries of one bizCode: prints µs per entry.
pub async fn range_read_speed(log: &dyn PartitionLog) {
    let p = 12;
    let bizs = bizcodes_in(p, 2);
    let mut last = log.ensure(p).await.expect("ensure").last;
    let start = last;
    let mut acks = Vec::new();
    for k in 0..2_000u64 {
        let biz = &bizs[(k % 2) as usize];
        acks.push(
            log.append(p, biz, &format!("s{k}"), last + k, None, Bytes::from(vec![b'x'; 100]))
                .await
                .expect("sent"),
        );
    }
    for a in acks {
        last = a.await.expect("stored").seq;
    }
    let t = Instant::now();
    let got = collect(log, p, Some(&bizs[0]), start, last).await;
    let took = t.elapsed();
    assert_eq!(got.len(), 1_000);
    eprintln!(
        "read_range: 1,000 of 2,000 entries in {took:?} ({:.2} µs/entry)",
        took.as_secs_f64() * 1e6 / 1_000.0
    );
    let t = Instant::now();
    let all = collect(log, p, None, start, last).await;
    let took = t.elapsed();
    assert_eq!(all.len(), 2_000);
    eprintln!(
        "read_range: whole partition, 2,000 entries in {took:?} ({:.2} µs/entry)",
        took.as_secs_f64() * 1e6 / 2_000.0
    );
}

/// With `max_messages_per_biz = 3`, each bizCode keeps its newest three
/// entries, whatever the others do.
pub async fn count_limit_keeps_each_bizcodes_newest(log: &dyn PartitionLog) {
    let p = 14;
    let bizs = bizcodes_in(p, 2);
    let mut last = log.ensure(p).await.expect("ensure").last;
    let mut seqs: Vec<(String, u64)> = Vec::new();
    for i in 0..7 {
        let biz = &bizs[usize::from(i == 3)];
        last = append_ok(log, p, biz, &format!("c{i}"), last).await;
        seqs.push((biz.clone(), last));
    }
    let a: Vec<u64> = seqs.iter().filter(|(b, _)| *b == bizs[0]).map(|(_, s)| *s).collect();
    let got: Vec<u64> = collect(log, p, Some(&bizs[0]), 0, u64::MAX)
        .await
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, a[a.len() - 3..].to_vec());
    assert_eq!(
        log.first_seq_of(p, &bizs[0]).await.expect("first"),
        Some(a[a.len() - 3])
    );
    assert_eq!(collect(log, p, Some(&bizs[1]), 0, u64::MAX).await.len(), 1);
}

/// Recovery asks whether anything of a bizCode above a client's position
/// left the log. A quiet bizCode (nothing stored) in a partition others
/// write to, behind fences: nothing of it is missing above a position at
/// the head, whatever was appended and fenced around it.
pub async fn a_quiet_bizcode_loses_nothing_behind_others_entries_and_fences(log: &dyn PartitionLog) {
    let p = 5;
    let [quiet, busy]: [String; 2] = bizcodes_in(p, 2).try_into().expect("two bizCodes");
    log.ensure(p).await.expect("ensure");
    log.fence(p, "owner-a").await.expect("fence");
    log.fence(p, "owner-b").await.expect("fence");
    let position = log.bounds(p).await.expect("bounds").last;
    let mut last = position;
    for i in 0..5 {
        last = append_ok(log, p, &busy, &format!("busy-{i}"), last).await;
    }
    log.fence(p, "owner-c").await.expect("fence");
    let removed = log.low_water(p, &quiet).await.expect("low water");
    assert!(
        removed <= position,
        "{removed} above the quiet bizCode's position {position}"
    );
    // The busy bizCode's own entries are all there too.
    assert!(log.low_water(p, &busy).await.expect("low water") <= position);
}

/// An owner pipelines its appends under its own fence, as a router does
/// with a batch of sends: 200 in flight at once, each naming its token,
/// are all stored with consecutive sequences. (A clustered stream refuses,
/// with 10164, an append naming the fence subject while another one is in
/// flight; the JetStream log sends such appends one at a time there.)
pub async fn an_owner_pipelines_under_its_fence(log: &dyn PartitionLog) {
    let p = 5;
    let biz = &bizcodes_in(p, 1)[0];
    log.ensure(p).await.expect("ensure");
    let fence = log.fence(p, "owner").await.expect("fence");
    let n = 200;
    let t = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for k in 0..n {
        let id = format!("own-{k}");
        acks.push(
            log.append(p, biz, &id, fence.token + k as u64, Some(fence.token), body(k))
                .await
                .expect("sent"),
        );
    }
    for (k, ack) in acks.into_iter().enumerate() {
        assert_eq!(ack.await.map(|a| a.seq), Ok(fence.token + 1 + k as u64), "append {k}");
    }
    let took = t.elapsed();
    eprintln!(
        "appends under a fence: {n} in {took:?} ({:.0}/s)",
        n as f64 / took.as_secs_f64()
    );
}
