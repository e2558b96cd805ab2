//! sh, dh and mh: lookup tables of list indices (`None` = no server), built
//! by the controller; the datapath indexes them with the hashes of
//! [`crate::hash`] (the picks it makes are modelled in `models/hashed.rs`).

use super::sequence::gcd;
use crate::hash;

/// sh's 256 buckets (`ip_vs_sh_reassign`, ip_vs_sh.c), given the current
/// weights in list order: walking the list cyclically, each server fills
/// `weight` consecutive buckets (`++count >= weight` moves on, so weight 0
/// still takes one bucket, and a weight over 256 takes all that are left).
/// IPVS rebuilds it on every add, delete and edit of a server. Empty list:
/// all `None`.
pub fn sh_table(weights: &[u32]) -> Vec<Option<u32>> {
    let size = hash::SH_TAB_SIZE as usize;
    if weights.is_empty() {
        return vec![None; size];
    }
    let mut table = Vec::with_capacity(size);
    let mut p = 0usize;
    let mut count = 0i64;
    for _ in 0..size {
        table.push(Some(p as u32));
        count += 1;
        if count >= weights[p] as i64 {
            p = (p + 1) % weights.len();
            count = 0;
        }
    }
    table
}

/// dh's 256 buckets (`ip_vs_dh_reassign`, ip_vs_dh.c): bucket i holds server
/// `i % len`; weights are ignored. Empty list: all `None`.
pub fn dh_table(len: usize) -> Vec<Option<u32>> {
    (0..hash::DH_TAB_SIZE as usize).map(|i| (len > 0).then(|| (i % len) as u32)).collect()
}

/// A real server as mh places it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MhReal {
    /// As the maps store it. For an IPv4 service with an IPv6 server, IPVS
    /// hashes only the first word: pass `[addr[0], 0, 0, 0]`.
    pub addr: [u32; 4],
    /// The server's port, network order, as IPVS stores it.
    pub port_be: u16,
    /// IPVS's `last_weight`, not the current weight (see
    /// [`mh_last_weight`]): a server quiesced to weight 0 keeps its slots, so
    /// that the table does not move; it is only skipped at lookup.
    pub weight: u32,
}

/// The `last_weight` IPVS keeps for mh (`__ip_vs_update_dest`,
/// ip_vs_ctl.c): "the latest non-0 weight", i.e. the weight given when the
/// server is added, or on an edit the new weight unless it is 0.
pub fn mh_last_weight(added: bool, last_weight: u32, new_weight: u32) -> u32 {
    if added || new_weight != 0 { new_weight } else { last_weight }
}

/// mh's lookup table (ip_vs_mh.c, `ip_vs_mh_reassign`), for the servers in
/// list order and a prime `table_size` (IPVS default 4093, see
/// [`hash::MH_PRIMES`]):
///
/// * gcd of the positive weights; none (empty list, or all 0): all `None`
///   (`ip_vs_mh_reset`).
/// * `rshift = max(0, fls(max_weight / gcd) - IP_VS_MH_TAB_BITS)`
///   (`ip_vs_mh_shift_weight`), and each server's turns
///   `(weight / gcd) >> rshift`, or 1 if that is 0 but the weight is not
///   (`ip_vs_mh_permutate`); weight 0: no turns, no slots.
/// * each server's offset = hsiphash(hash1, port + addr) % size and skip =
///   hsiphash(hash2, port + addr) % (size - 1) + 1.
/// * rounds over the list (`ip_vs_mh_populate`): each server in turn takes
///   `turns` slots, each time the next free slot along its permutation
///   `offset, offset + skip, ...` (mod size), until every slot is taken.
///
/// IPVS refuses (-EINVAL, keeping the old table) more servers than slots:
/// then, and for a size below 2, this returns an empty Vec, and the caller
/// should keep its previous table.
pub fn mh_table(reals: &[MhReal], table_size: u32) -> Vec<Option<u32>> {
    let size = table_size as usize;
    if table_size < 2 || reals.len() > size {
        return Vec::new();
    }
    let g = reals
        .iter()
        .filter(|d| d.weight > 0)
        .fold(0, |g, d| if g > 0 { gcd(d.weight, g) } else { d.weight });
    let mut table = vec![None; size];
    if g < 1 {
        return table;
    }
    let max = reals.iter().map(|d| d.weight).max().unwrap_or(0);
    let fls = 32 - (max / g).leading_zeros();
    let rshift = fls.saturating_sub(hash::mh_tab_bits(table_size));

    struct Setup {
        perm: u32,
        skip: u32,
        turns: u32,
    }
    let mut setup: Vec<Setup> = reals
        .iter()
        .map(|d| {
            let offset = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH1_KEY, 0) % table_size;
            let skip = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH2_KEY, 0) % (table_size - 1) + 1;
            let turns = match (d.weight / g) >> rshift {
                0 => (d.weight != 0) as u32,
                t => t,
            };
            Setup { perm: offset, skip, turns }
        })
        .collect();

    let mut used = vec![false; size];
    let mut filled = 0usize;
    let mut dt_count = 0u32;
    // g >= 1 means some server has turns, so every round takes a slot.
    loop {
        let mut i = 0;
        while i < setup.len() {
            let ds = &mut setup[i];
            if ds.turns < 1 {
                i += 1;
                continue;
            }
            while used[ds.perm as usize] {
                ds.perm += ds.skip;
                if ds.perm >= table_size {
                    ds.perm -= table_size;
                }
            }
            used[ds.perm as usize] = true;
            table[ds.perm as usize] = Some(i as u32);
            filled += 1;
            if filled == size {
                return table;
            }
            dt_count += 1;
            if dt_count >= ds.turns {
                dt_count = 0;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::fixtures::mh_real;

    #[test]
    fn sh_table_fills_weight_buckets_per_server() {
        let t = sh_table(&[2, 0, 1]);
        assert_eq!(t.len(), 256);
        // Weight 0 still takes one bucket (++count >= 0).
        let first: Vec<_> = t[..8].iter().map(|b| b.unwrap()).collect();
        assert_eq!(first, [0, 0, 1, 2, 0, 0, 1, 2]);
        assert_eq!(t[255], Some([0, 0, 1, 2][255 % 4]));
        // A weight beyond the table takes all of it.
        assert!(sh_table(&[300, 1]).iter().all(|&b| b == Some(0)));
        assert!(sh_table(&[]).iter().all(|b| b.is_none()));
    }

    fn counts(table: &[Option<u32>], n: usize) -> Vec<usize> {
        (0..n).map(|i| table.iter().filter(|&&s| s == Some(i as u32)).count()).collect()
    }

    #[test]
    fn mh_shares_follow_the_weights() {
        let reals = [mh_real(1, 1), mh_real(2, 2), mh_real(3, 3)];
        let t = mh_table(&reals, 4093);
        assert_eq!(t.len(), 4093);
        assert!(t.iter().all(|s| s.is_some()));
        // Rounds of 1 + 2 + 3 slots: 682 full rounds take 4092, the 683rd
        // ends after the first server's turn.
        let c = counts(&t, 3);
        assert_eq!(c, [683, 1364, 2046]);
        for (i, &n) in c.iter().enumerate() {
            let want = 4093.0 * (i + 1) as f64 / 6.0;
            assert!((n as f64 - want).abs() <= 0.01 * want, "server {i}: {n} vs {want}");
        }
        // Weights are divided by their gcd first: same table.
        let scaled = [mh_real(1, 100), mh_real(2, 200), mh_real(3, 300)];
        assert_eq!(mh_table(&scaled, 4093), t);
    }

    #[test]
    fn mh_large_weights_are_shifted() {
        // max/gcd = 1000: fls = 10, IP_VS_MH_TAB_BITS = 6, rshift 4: turns
        // 1000 >> 4 = 62 and (1 >> 4 = 0 -> 1). Rounds of 63: 64 full ones
        // (4032 slots), then 61 more.
        let small_first = mh_table(&[mh_real(1, 1), mh_real(2, 1000)], 4093);
        assert_eq!(counts(&small_first, 2), [65, 4028]);
        let big_first = mh_table(&[mh_real(2, 1000), mh_real(1, 1)], 4093);
        assert_eq!(counts(&big_first, 2), [4029, 64]);
        // A smaller table has fewer bits: 251 -> 4, rshift 6, turns 15 and 1.
        let t = mh_table(&[mh_real(1, 1), mh_real(2, 1000)], 251);
        assert_eq!(counts(&t, 2), [16, 235]);
    }

    #[test]
    fn mh_weight_0_and_empty() {
        let t = mh_table(&[mh_real(1, 1), mh_real(2, 0), mh_real(3, 1)], 251);
        assert_eq!(counts(&t, 3)[1], 0);
        assert!(t.iter().all(|s| s.is_some()));
        assert!(mh_table(&[mh_real(1, 0)], 251).iter().all(|s| s.is_none()));
        assert_eq!(mh_table(&[], 251).len(), 251);
        assert!(mh_table(&[], 251).iter().all(|s| s.is_none()));
        // More servers than slots: IPVS refuses.
        let many: Vec<_> = (0..5).map(|i| mh_real(i, 1)).collect();
        assert!(mh_table(&many, 3).is_empty());
        assert_eq!(mh_last_weight(true, 7, 0), 0);
        assert_eq!(mh_last_weight(false, 7, 0), 7);
        assert_eq!(mh_last_weight(false, 7, 3), 3);
    }

    #[test]
    fn mh_first_slots_follow_each_servers_permutation() {
        // With one server of weight 1, slot offset is filled first, then
        // offset + skip, ...: check the first two by hand from the hashes.
        let d = mh_real(9, 1);
        let size = 251;
        let offset = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH1_KEY, 0) % size;
        let skip = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH2_KEY, 0) % (size - 1) + 1;
        // Two servers: the newer (index 0) takes its offset first, the other
        // its own offset (or next free), alternating.
        let e = mh_real(10, 1);
        let t = mh_table(&[d, e], size);
        assert_eq!(t[offset as usize], Some(0));
        let e_offset = hash::mh_hashkey(e.addr, e.port_be, &hash::MH_HASH1_KEY, 0) % size;
        if e_offset != offset {
            assert_eq!(t[e_offset as usize], Some(1));
            let second = (offset + skip) % size;
            if second != e_offset {
                assert_eq!(t[second as usize], Some(0));
            }
        }
    }

    #[test]
    fn mh_adding_a_server_moves_few_slots() {
        let old = [mh_real(1, 1), mh_real(2, 1), mh_real(3, 1)];
        // IPVS adds in front.
        let new = [mh_real(4, 1), mh_real(1, 1), mh_real(2, 1), mh_real(3, 1)];
        let t0 = mh_table(&old, 4093);
        let t1 = mh_table(&new, 4093);
        let owner = |t: &[Option<u32>], list: &[MhReal], s: usize| list[t[s].unwrap() as usize].addr;
        let mut to_new = 0;
        let mut shuffled = 0;
        for s in 0..4093 {
            let (a, b) = (owner(&t0, &old, s), owner(&t1, &new, s));
            if b == new[0].addr {
                to_new += 1;
            } else if a != b {
                shuffled += 1;
            }
        }
        // The new server takes its quarter (rounds of 4: 1023 full ones and
        // the list head's extra slot); of the rest, under 1% move between
        // the old servers (9 slots here).
        assert_eq!(to_new, 1024);
        assert!(shuffled <= 4093 / 100, "{shuffled} slots moved between old servers");
    }
}
