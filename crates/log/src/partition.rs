//! Which partition a bizCode belongs to, and the names of a partition's
//! stream and subjects. Every name is built here, never by `format!` at a
//! call site.
//!
//! - stream: `SB_LOG_<p>`;
//! - an entry of bizCode `b`: `sb.log.<p>.<ids::encode(b)>`;
//! - a fence: `sb.log.<p>._fence.f`.
//!
//! No bizCode can name the fence subject: an entry's subject has one token
//! after the partition, the fence's two, so `sb.log.<p>.*` matches every
//! entry and no fence (how the oldest stored entry is found, fences
//! skipped). Its first token cannot be a bizCode's either: [`ids::encode`]
//! is unpadded URL-safe base64, and its first character comes from the top
//! six bits of the first byte. `_` is 63 (`0b111111`), which needs a first
//! byte of `0xFC` or more, and no UTF-8 string starts with such a byte
//! (lead bytes stop at `0xF4`).

use switchboard_protocol::ids;

/// Prefix of every subject of the log.
const SUBJECT_PREFIX: &str = "sb.log";
/// Prefix of every partition stream's name.
const STREAM_PREFIX: &str = "SB_LOG_";
/// First token of the fence subject after the partition.
pub const FENCE_TOKEN: &str = "_fence";

/// Last token of the fence subject.
const FENCE_LAST: &str = "f";

/// FNV-1a (32 bits) of `bytes`.
#[must_use]
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The partition of `biz` among `partitions`: FNV-1a (32 bits) of the
/// bizCode's bytes, modulo the partition count. Pure and fixed for the life
/// of a deployment (the unit tests pin its vectors). A count of 0 is taken
/// as 1.
#[must_use]
pub fn partition_of(biz: &str, partitions: u32) -> u32 {
    fnv1a(biz.as_bytes()) % partitions.max(1)
}

/// The JetStream stream of partition `p`: `SB_LOG_<p>`.
#[must_use]
pub fn stream_name(p: u32) -> String {
    format!("{STREAM_PREFIX}{p}")
}

/// Every subject of partition `p`: `sb.log.<p>.>`.
#[must_use]
pub fn partition_filter(p: u32) -> String {
    format!("{SUBJECT_PREFIX}.{p}.>")
}

/// The subject of `biz`'s entries in partition `p`: `sb.log.<p>.<enc(biz)>`.
#[must_use]
pub fn entry_subject(p: u32, biz: &str) -> String {
    format!("{SUBJECT_PREFIX}.{p}.{}", ids::encode(biz))
}

/// The subject of partition `p`'s fence entries: `sb.log.<p>._fence.f`.
#[must_use]
pub fn fence_subject(p: u32) -> String {
    format!("{SUBJECT_PREFIX}.{p}.{FENCE_TOKEN}.{FENCE_LAST}")
}

/// Every entry of partition `p` and no fence: `sb.log.<p>.*`.
#[must_use]
pub fn entries_filter(p: u32) -> String {
    format!("{SUBJECT_PREFIX}.{p}.*")
}

/// What a stored subject of partition `p` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKind {
    /// An entry of this bizCode.
    Entry(String),
    /// The fence subject.
    Fence,
    /// Something this crate never writes (another writer, or a subject of
    /// another partition).
    Foreign,
}

/// Reads a subject of partition `p` back.
#[must_use]
pub fn parse_subject(p: u32, subject: &str) -> SubjectKind {
    let prefix = format!("{SUBJECT_PREFIX}.{p}.");
    let Some(token) = subject.strip_prefix(prefix.as_str()) else {
        return SubjectKind::Foreign;
    };
    if token.strip_prefix(FENCE_TOKEN).and_then(|t| t.strip_prefix('.')) == Some(FENCE_LAST) {
        return SubjectKind::Fence;
    }
    match ids::decode(token) {
        Some(biz) if !biz.is_empty() => SubjectKind::Entry(biz),
        _ => SubjectKind::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv, test vectors).
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_never_change_silently() {
        // Pinned: changing these moves every bizCode's log.
        let cases = [
            ("d1", 16, 6),
            ("demo", 16, 6),
            ("a", 16, 12),
            ("foobar", 16, 8),
            ("shop.eu-1", 16, 5),
            ("demo", 1, 0),
            ("demo", 0, 0),
            ("foobar", 7, 0),
        ];
        for (biz, parts, want) in cases {
            assert_eq!(partition_of(biz, parts), want, "{biz} mod {parts}");
        }
    }

    #[test]
    fn names_follow_the_design() {
        assert_eq!(stream_name(3), "SB_LOG_3");
        assert_eq!(partition_filter(3), "sb.log.3.>");
        assert_eq!(fence_subject(3), "sb.log.3._fence.f");
        assert_eq!(entries_filter(3), "sb.log.3.*");
        assert_eq!(entry_subject(3, "d1"), format!("sb.log.3.{}", ids::encode("d1")));
    }

    #[test]
    fn subjects_read_back() {
        assert_eq!(
            parse_subject(3, &entry_subject(3, "a.b")),
            SubjectKind::Entry("a.b".into())
        );
        assert_eq!(parse_subject(3, &fence_subject(3)), SubjectKind::Fence);
        assert_eq!(parse_subject(4, &fence_subject(3)), SubjectKind::Foreign);
        assert_eq!(parse_subject(3, "sb.log.3.!!"), SubjectKind::Foreign);
        assert_eq!(parse_subject(3, "other"), SubjectKind::Foreign);
        assert_eq!(parse_subject(3, "sb.log.3._fence"), SubjectKind::Foreign);
    }

    #[test]
    fn no_bizcode_encodes_to_the_fence_token() {
        // Every possible first byte of a UTF-8 string, in every position that
        // matters (the first character of the token comes from it alone).
        for first in (0u8..=0x7f).chain(0xc2..=0xf4) {
            let mut bytes = vec![first];
            // Complete a multi-byte sequence so the string is valid UTF-8.
            let tail = match first {
                0xc2..=0xdf => 1,
                0xe0..=0xef => 2,
                0xf0..=0xf4 => 3,
                _ => 0,
            };
            bytes.extend(std::iter::repeat_n(0x90u8, tail));
            if first == 0xe0 || first == 0xf0 {
                bytes[1] = 0xa0;
            }
            let Ok(s) = std::str::from_utf8(&bytes) else { continue };
            let token = ids::encode(s);
            assert!(!token.starts_with('_'), "{s:?} -> {token}");
            assert_ne!(token, FENCE_TOKEN);
        }
        // And `_fence` itself does not decode to a string (it is not canonical
        // base64), so no stored entry reads back as one either.
        assert_ne!(
            ids::decode(FENCE_TOKEN).map(|s| ids::encode(&s)).as_deref(),
            Some(FENCE_TOKEN)
        );
    }
}
