//! The shard hash is frozen, and the shard map bumps an epoch on every change of owner.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use roost_cluster::shard::MAX_SHARD_COUNT;
use roost_cluster::shard_of;
use roost_cluster::ShardId;
use roost_cluster::ShardMap;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;

fn count(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("test counts are non-zero")
}

/// These values decide where every existing conversation lives. If this test fails, `shard_of`
/// changed: revert it. They were computed by an independent implementation (Python) of the
/// documented function; `splitmix64(0) = 0xe220a8397b1dcdaf` is SplitMix64's well-known first
/// output for seed 0.
#[test]
fn shard_of_is_pinned() {
    let pinned: [(u64, u32, u32, u32); 8] = [
        // (conversation, shard of 256, shard of 7, shard of 65536)
        (0, 226, 6, 57888),
        (1, 145, 3, 37130),
        (2, 151, 4, 38744),
        (3, 29, 0, 7435),
        (42, 189, 5, 48599),
        (1000, 60, 1, 15390),
        (123_456_789, 34, 0, 8764),
        (u64::MAX, 228, 6, 58585),
    ];
    for (conversation, of_256, of_7, of_65536) in pinned {
        let c = ConversationId(conversation);
        assert_eq!(
            shard_of(c, count(256)),
            ShardId(of_256),
            "conversation {conversation}, 256 shards"
        );
        assert_eq!(
            shard_of(c, count(7)),
            ShardId(of_7),
            "conversation {conversation}, 7 shards"
        );
        assert_eq!(
            shard_of(c, count(65_536)),
            ShardId(of_65536),
            "conversation {conversation}, 65536 shards"
        );
        assert_eq!(shard_of(c, count(1)), ShardId(0));
    }
}

#[test]
fn sequential_conversations_spread_evenly() {
    let mut per_shard = [0u32; 256];
    for id in 1..=256_000u64 {
        per_shard[shard_of(ConversationId(id), count(256)).0 as usize] += 1;
    }
    // 1000 expected per shard; a fair hash stays well within +-15% (about 5 standard deviations).
    let (min, max) = (per_shard.iter().min().copied(), per_shard.iter().max().copied());
    assert!(min >= Some(850) && max <= Some(1150), "min {min:?}, max {max:?}");
}

#[test]
fn shards_are_always_in_range() {
    for n in [1, 2, 3, 255, 256, 1000, MAX_SHARD_COUNT] {
        for id in (0..2000u64).chain([u64::MAX, u64::MAX - 1, 1 << 63]) {
            assert!(shard_of(ConversationId(id), count(n)).0 < n);
        }
    }
}

#[test]
fn shard_map_counts_are_bounded() {
    assert!(ShardMap::new(0).is_err());
    assert!(ShardMap::new(MAX_SHARD_COUNT + 1).is_err());
    assert_eq!(
        ShardMap::new(MAX_SHARD_COUNT).map(|m| m.shard_count()),
        Ok(MAX_SHARD_COUNT)
    );
    let map = ShardMap::new(256).expect("valid count");
    assert_eq!(map.shard_count(), 256);
    assert!(map.iter().all(|(_, a)| a.owner.is_none() && a.epoch == 0));
}

#[test]
fn every_change_of_owner_bumps_the_epoch() {
    let mut map = ShardMap::new(4).expect("valid count");
    let shard = ShardId(2);
    assert_eq!(map.set_owner(shard, Some(NodeId(1))), Some(1));
    assert_eq!(
        map.set_owner(shard, Some(NodeId(1))),
        Some(1),
        "same owner: no change, no bump"
    );
    assert_eq!(map.set_owner(shard, Some(NodeId(2))), Some(2));
    assert_eq!(map.set_owner(shard, None), Some(3));
    assert_eq!(map.set_owner(ShardId(4), Some(NodeId(1))), None, "outside the map");
    assert_eq!(map.get(ShardId(0)).map(|a| a.epoch), Some(0), "other shards untouched");
}

#[test]
fn owner_of_follows_the_hash() {
    let empty = ShardMap::default();
    assert_eq!(empty.shard_of(ConversationId(7)), None);
    assert_eq!(empty.owner_of(ConversationId(7)), None);

    let mut map = ShardMap::new(256).expect("valid count");
    let conversation = ConversationId(42);
    let shard = shard_of(conversation, count(256));
    assert_eq!(map.shard_of(conversation), Some(shard));
    assert_eq!(map.owner_of(conversation), None);
    map.set_owner(shard, Some(NodeId(3)));
    assert_eq!(map.owner_of(conversation), Some(NodeId(3)));
    assert_eq!(map.owned_by(NodeId(3)), vec![shard]);
    assert_eq!(map.load(), BTreeMap::from([(NodeId(3), 1)]));
}
