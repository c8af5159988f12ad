//! Admin commands proposed by this node: split (merges: `merge.rs`).

use super::*;

impl Node {
    pub(super) fn start_split(&mut self, key: Bytes, reply: Reply) {
        let result = (|| -> Result<(RangeId, u64, u64), Error> {
            let range_id = self.peer_for_key(&key)?;
            let peer = self
                .peers
                .get(&range_id)
                .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
            if !peer.group.is_leader() {
                return Err(peer.not_leader());
            }
            if key == peer.meta.desc.start {
                return Err(Error::AdminRefused(format!(
                    "key {} is already the start of range {range_id}",
                    crate::error::show_key(&key)
                )));
            }
            let replicas = peer.meta.desc.replicas.len() as u64;
            let first = self.store.allocate_ids(1 + replicas)?;
            let node = self.config.node_id;
            let peer = self
                .peers
                .get_mut(&range_id)
                .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
            let command = Command::Split {
                version: peer.meta.desc.epoch.version,
                split_key: key.clone(),
                new_range_id: make_id(first, node),
                new_replica_ids: (1..=replicas).map(|i| make_id(first + i, node)).collect(),
            };
            let term = peer.group.term();
            let index = peer.group.propose(command.encode())?;
            Ok((range_id, index, term))
        })();
        match result {
            Ok((range_id, index, term)) => {
                if let Some(peer) = self.peers.get_mut(&range_id) {
                    peer.proposals.push_back(Proposal::new(index, term, reply));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}
