//! The firewall-mark services' matches (`FWMARK_MATCHES`, an LPM trie).

use anyhow::{Result, anyhow};
use aya::maps::{
    MapData,
    lpm_trie::{Key, LpmTrie},
};
use lb_common::{FwmarkMatch, map_name};

use super::Datapath;
use crate::tables::MatchKey;

impl Datapath {
    fn fwmark_matches(&mut self) -> Result<LpmTrie<&mut MapData, FwmarkMatch, u32>> {
        let map = self.ebpf.map_mut(map_name::FWMARK_MATCHES).ok_or_else(|| anyhow!("map FWMARK_MATCHES missing"))?;
        Ok(LpmTrie::try_from(map)?)
    }

    pub(super) fn set_fwmark_match(&mut self, (prefix_len, data): &MatchKey, mark: u32) -> Result<()> {
        Ok(self.fwmark_matches()?.insert(&Key::new(*prefix_len, *data), mark, 0)?)
    }

    pub(super) fn delete_fwmark_match(&mut self, (prefix_len, data): &MatchKey) -> Result<()> {
        Ok(self.fwmark_matches()?.remove(&Key::new(*prefix_len, *data))?)
    }

    /// Every entry of the trie, as a previous lbd left it.
    pub(super) fn read_fwmark_matches(&self) -> Result<Vec<(MatchKey, u32)>> {
        let map = self.ebpf.map(map_name::FWMARK_MATCHES).ok_or_else(|| anyhow!("map FWMARK_MATCHES missing"))?;
        let trie = LpmTrie::<_, FwmarkMatch, u32>::try_from(map)?;
        trie.iter().map(|e| e.map(|(key, mark)| ((key.prefix_len(), key.data()), mark)).map_err(Into::into)).collect()
    }
}
