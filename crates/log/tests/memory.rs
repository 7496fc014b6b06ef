//! The shared log scenarios against the memory log (`standalone`).

mod scenarios;

use std::time::Duration;

use switchboard_log::{LogConfig, MemoryLog};

fn log() -> MemoryLog {
    let config = LogConfig {
        partitions: scenarios::PARTITIONS,
        ..LogConfig::default()
    };
    MemoryLog::new(config, 1 << 30)
}

#[tokio::test]
async fn pipelined_appends_get_consecutive_seqs() {
    scenarios::pipelined_appends_get_consecutive_seqs(&log()).await;
}

#[tokio::test]
async fn stale_writer_is_refused() {
    scenarios::stale_writer_is_refused(&log()).await;
}

#[tokio::test]
async fn fence_fences_a_writer_that_had_not_appended() {
    scenarios::fence_fences_a_writer_that_had_not_appended(&log()).await;
}

#[tokio::test]
async fn msg_id_retry_returns_the_original_seq() {
    scenarios::msg_id_retry_returns_the_original_seq(&log()).await;
}

#[tokio::test]
async fn in_flight_appends_can_land_after_a_fence() {
    scenarios::in_flight_appends_can_land_after_a_fence(&log()).await;
}

#[tokio::test]
async fn fenced_owner_appends_are_all_refused_after_a_newer_fence() {
    scenarios::fenced_owner_appends_are_all_refused_after_a_newer_fence(&log()).await;
}

#[tokio::test(start_paused = true)]
async fn fence_outlives_max_age() {
    let config = LogConfig {
        partitions: scenarios::PARTITIONS,
        max_age: Duration::from_secs(1),
        ..LogConfig::default()
    };
    let log = MemoryLog::new(config, 1 << 30);
    scenarios::fence_outlives_max_age(&log, || tokio::time::advance(Duration::from_secs(2))).await;
}

#[tokio::test]
async fn tail_after_a_failure_shows_what_was_stored() {
    scenarios::tail_after_a_failure_shows_what_was_stored(&log()).await;
}

#[tokio::test]
async fn read_range_returns_exactly_the_range() {
    scenarios::read_range_returns_exactly_the_range(&log()).await;
}

#[tokio::test]
async fn purge_removes_one_bizcode_up_to_a_seq() {
    scenarios::purge_removes_one_bizcode_up_to_a_seq(&log()).await;
}

#[tokio::test]
async fn a_recreated_log_starts_above_the_old_one() {
    let log = log();
    let lose = log.clone();
    scenarios::a_recreated_log_starts_above_the_old_one(&log, |p| async move { lose.drop_partition(p) }).await;
}

#[tokio::test]
async fn concurrent_ensures_end_with_one_log() {
    let log = log();
    scenarios::concurrent_ensures_end_with_one_log(&log, &log.clone()).await;
}

#[tokio::test]
async fn mistakes_are_refused() {
    scenarios::mistakes_are_refused(&log()).await;
}

#[tokio::test]
async fn range_read_speed() {
    scenarios::range_read_speed(&log()).await;
}

#[tokio::test]
async fn count_limit_keeps_each_bizcodes_newest() {
    let config = LogConfig {
        partitions: scenarios::PARTITIONS,
        max_messages_per_biz: 3,
        ..LogConfig::default()
    };
    scenarios::count_limit_keeps_each_bizcodes_newest(&MemoryLog::new(config, 1 << 30)).await;
}

#[tokio::test]
async fn a_quiet_bizcode_loses_nothing_behind_others_entries_and_fences() {
    scenarios::a_quiet_bizcode_loses_nothing_behind_others_entries_and_fences(&log()).await;
}

#[tokio::test]
async fn an_owner_pipelines_under_its_fence() {
    scenarios::an_owner_pipelines_under_its_fence(&log()).await;
}
