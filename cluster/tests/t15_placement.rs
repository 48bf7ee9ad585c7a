//! `RaftPlacement` answers from the latest published map: local, remote, or unassigned (node 0).

use std::sync::Arc;

use roost_cluster::RaftPlacement;
use roost_cluster::ShardMap;
use roost_engine::ids::ConversationId;
use roost_engine::ids::NodeId;
use roost_engine::placement;
use roost_engine::placement::Owner;
use roost_engine::placement::Placement;
use tokio::sync::watch;

#[test]
fn answers_local_remote_or_unassigned_and_follows_new_maps() {
    let (tx, rx) = watch::channel(Arc::new(ShardMap::default()));
    let on_node_1 = RaftPlacement::new(NodeId(1), rx.clone());
    let on_node_2 = RaftPlacement::new(NodeId(2), rx);
    let conversation = ConversationId(42);
    assert_eq!(on_node_1.owner(conversation), Owner::Unassigned, "no map yet");

    let mut map = ShardMap::new(8).expect("valid count");
    tx.send_replace(Arc::new(map.clone()));
    assert_eq!(on_node_1.owner(conversation), Owner::Unassigned, "shard not owned yet");

    let shard = map.shard_of(conversation).expect("map has shards");
    map.set_owner(shard, Some(NodeId(2)));
    tx.send_replace(Arc::new(map.clone()));
    assert_eq!(
        on_node_1.owner(conversation),
        Owner::Remote(roost_engine::ids::NodeId(2))
    );
    assert_eq!(on_node_2.owner(conversation), Owner::Local);

    map.set_owner(shard, Some(NodeId(1)));
    tx.send_replace(Arc::new(map.clone()));
    assert_eq!(on_node_1.owner(conversation), Owner::Local);
    assert_eq!(on_node_2.owner(conversation), Owner::Remote(placement::NodeId(1)));
    assert_eq!(on_node_1.shard_map().get(shard).map(|a| a.epoch), Some(2));
}
