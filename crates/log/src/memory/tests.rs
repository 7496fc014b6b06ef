//! What only the memory log has (the global byte cap and its evictions),
//! and its time-based limits under a paused clock.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::partition::partition_of;

fn biz_of(p: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("m{i}"))
        .filter(|b| partition_of(b, 4) == p)
        .take(n)
        .collect()
}

fn config() -> LogConfig {
    LogConfig {
        partitions: 4,
        max_age: Duration::from_secs(60),
        duplicate_window: Duration::from_secs(30),
        ..LogConfig::default()
    }
}

async fn put(log: &MemoryLog, p: u32, biz: &str, id: &str, size: usize) -> u64 {
    let last = log.bounds(p).await.expect("bounds").last;
    let payload = Bytes::from(vec![b'x'; size]);
    log.append(p, biz, id, last, None, payload)
        .await
        .expect("sent")
        .await
        .expect("stored")
        .seq
}

#[tokio::test]
async fn the_byte_cap_evicts_the_oldest_of_all_partitions_and_reports_it() {
    // Each entry counts 100 payload + bizCode + Msg-Id bytes.
    let log = MemoryLog::new(config(), 1_000);
    let (a, b) = (biz_of(0, 1).remove(0), biz_of(1, 1).remove(0));
    log.ensure(0).await.expect("ensure");
    log.ensure(1).await.expect("ensure");
    let mut a_seqs = Vec::new();
    for i in 0..4 {
        a_seqs.push(put(&log, 0, &a, &format!("a{i}"), 100).await);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(log.take_evictions().is_empty());
    assert_eq!(log.low_water(&a), 0);
    for i in 0..6 {
        put(&log, 1, &b, &format!("b{i}"), 100).await;
    }
    assert!(log.bytes() <= 1_000, "{}", log.bytes());
    // The oldest entries were a's, in partition 0.
    let lw = log.low_water(&a);
    assert!(lw >= a_seqs[0], "low water {lw}");
    let ev = log.take_evictions();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].partition, ev[0].biz.as_str(), ev[0].up_to), (0, a.as_str(), lw));
    assert!(log.take_evictions().is_empty(), "taken once");
    let first = log.first_seq_of(0, &a).await.expect("first");
    assert!(first.is_none_or(|f| f > lw));
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_max_age() {
    let log = MemoryLog::new(config(), u64::MAX);
    let a = biz_of(2, 1).remove(0);
    log.ensure(2).await.expect("ensure");
    let old = put(&log, 2, &a, "old", 10).await;
    tokio::time::advance(Duration::from_secs(40)).await;
    let young = put(&log, 2, &a, "young", 10).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    let b = log.bounds(2).await.expect("bounds");
    assert_eq!((b.first, b.last), (young, young));
    assert!(old < young);
    tokio::time::advance(Duration::from_secs(31)).await;
    let b = log.bounds(2).await.expect("bounds");
    assert_eq!(b.first, b.last + 1, "empty");
    assert_eq!(log.bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn msg_ids_are_forgotten_after_the_window() {
    let log = MemoryLog::new(config(), u64::MAX);
    let a = biz_of(3, 1).remove(0);
    log.ensure(3).await.expect("ensure");
    let s = put(&log, 3, &a, "id", 10).await;
    let dup = log
        .append(3, &a, "id", s, None, Bytes::new())
        .await
        .expect("sent")
        .await;
    assert_eq!(
        dup,
        Ok(Appended {
            seq: s,
            duplicate: true
        })
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    let again = log
        .append(3, &a, "id", s, None, Bytes::new())
        .await
        .expect("sent")
        .await;
    assert_eq!(
        again,
        Ok(Appended {
            seq: s + 1,
            duplicate: false
        })
    );
}

#[tokio::test]
async fn dropping_a_partition_releases_its_bytes() {
    let log = MemoryLog::new(config(), u64::MAX);
    let a = biz_of(0, 1).remove(0);
    log.ensure(0).await.expect("ensure");
    put(&log, 0, &a, "x", 100).await;
    assert!(log.bytes() > 100);
    log.drop_partition(0);
    assert_eq!(log.bytes(), 0);
    assert!(matches!(log.bounds(0).await, Err(LogError::Unavailable(_))));
}

/// Recovery asks whether anything of a bizCode above a position left the
/// log: every cause of removal raises its low-water mark, and only its own.
#[tokio::test(start_paused = true)]
async fn every_removal_raises_the_low_water_mark_of_its_bizcode_only() {
    let log = MemoryLog::new(
        LogConfig {
            max_messages_per_biz: 3,
            ..config()
        },
        u64::MAX,
    );
    let [a, b]: [String; 2] = biz_of(1, 2).try_into().expect("two bizCodes");
    log.ensure(1).await.expect("ensure");
    assert_eq!(PartitionLog::low_water(&log, 1, &a).await, Ok(0));
    // Age.
    let old = put(&log, 1, &a, "a0", 10).await;
    let kept_b = put(&log, 1, &b, "b0", 10).await;
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(PartitionLog::low_water(&log, 1, &a).await, Ok(old));
    assert_eq!(PartitionLog::low_water(&log, 1, &b).await, Ok(kept_b));
    // Count: the 4th entry pushes out the 1st.
    let seqs = [
        put(&log, 1, &a, "a1", 10).await,
        put(&log, 1, &a, "a2", 10).await,
        put(&log, 1, &a, "a3", 10).await,
        put(&log, 1, &a, "a4", 10).await,
    ];
    assert_eq!(PartitionLog::low_water(&log, 1, &a).await, Ok(seqs[0]));
    // A purge, through the position it names.
    log.purge(1, &a, seqs[2]).await.expect("purge");
    assert_eq!(PartitionLog::low_water(&log, 1, &a).await, Ok(seqs[2]));
    assert_eq!(PartitionLog::low_water(&log, 1, &b).await, Ok(kept_b));
}

#[tokio::test]
async fn the_per_bizcode_byte_cap_removes_that_bizcodes_oldest_entries() {
    let log = MemoryLog::new(
        LogConfig {
            max_bytes_per_biz: 1_000,
            ..config()
        },
        u64::MAX,
    );
    let [a, b]: [String; 2] = biz_of(0, 2).try_into().expect("two bizCodes");
    log.ensure(0).await.expect("ensure");
    let kept_b = put(&log, 0, &b, "b0", 300).await;
    let mut a_seqs = Vec::new();
    for i in 0..5 {
        a_seqs.push(put(&log, 0, &a, &format!("a{i}"), 300).await);
    }
    // Each of a's entries counts ~305 bytes: three fit under 1,000.
    assert_eq!(log.first_seq_of(0, &a).await, Ok(Some(a_seqs[2])));
    assert_eq!(PartitionLog::low_water(&log, 0, &a).await, Ok(a_seqs[1]));
    assert_eq!(
        log.first_seq_of(0, &b).await,
        Ok(Some(kept_b)),
        "another bizCode's entries stay"
    );
}

/// Low-water marks of bizCodes with nothing stored are folded into their
/// partition's floor: memory stays bounded by the bizCodes with entries,
/// and a mark never goes down.
#[tokio::test(start_paused = true)]
async fn low_water_marks_of_forgotten_bizcodes_fold_into_the_partition_floor() {
    let log = MemoryLog::new(config(), u64::MAX);
    log.ensure(0).await.expect("ensure");
    let bizs = biz_of(0, LOW_WATER_KEYS + 10);
    let mut last = 0;
    for (i, b) in bizs.iter().enumerate() {
        last = put(&log, 0, b, &format!("id{i}"), 1).await;
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    // Every entry aged out: each bizCode's mark is its entry's seq, or the
    // partition floor once pruned, which is at least as high.
    let first = &bizs[0];
    let lw = PartitionLog::low_water(&log, 0, first).await.expect("low water");
    assert!(lw > last - bizs.len() as u64, "{lw}");
    assert!(log.inner.state.lock().low_water.len() <= LOW_WATER_KEYS, "pruned");
    assert_eq!(PartitionLog::low_water(&log, 0, &bizs[bizs.len() - 1]).await, Ok(last));
}
