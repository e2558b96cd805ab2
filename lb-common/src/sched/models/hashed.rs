//! sh's, dh's and mh's picks: the server the datapath takes from the
//! controller's lookup table for a packet, with the fallback walks.

use super::least::ConnView;
use crate::hash;

/// sh's and mh's `is_unavailable` (and dh's check): weight <= 0 or
/// overloaded. A server in the list is always `IP_VS_DEST_F_AVAILABLE`.
fn available(views: &[ConnView], i: usize) -> bool {
    views.get(i).is_some_and(|d| d.weight > 0 && !d.overloaded)
}

fn slot(table: &[Option<u32>], h: u32) -> Option<usize> {
    table.get(h as usize).copied().flatten().map(|i| i as usize)
}

/// sh's choice for a packet (`ip_vs_sh_schedule`): the server in the
/// source address's bucket ([`hash::sh_bucket`], with the source port when
/// `use_port`, i.e. sh-port), unless it is unavailable (weight 0 or
/// overloaded): then none, or with sh-fallback (`ip_vs_sh_get_fallback`)
/// the first available server along [`hash::sh_probe_bucket`]'s 256 steps
/// (an empty bucket ends the walk).
pub fn sh_pick(
    table: &[Option<u32>],
    views: &[ConnView],
    addr: [u32; 4],
    port_be: u16,
    fallback: bool,
    use_port: bool,
) -> Option<usize> {
    let first = hash::sh_bucket(addr, port_be, use_port, 0);
    let real = slot(table, first)?;
    if available(views, real) {
        return Some(real);
    }
    if !fallback {
        return None;
    }
    for k in 0..hash::SH_TAB_SIZE {
        let real = slot(table, hash::sh_probe_bucket(addr, port_be, use_port, first, k))?;
        if available(views, real) {
            return Some(real);
        }
    }
    None
}

/// dh's choice (`ip_vs_dh_schedule`): the server in the destination
/// address's bucket ([`hash::dh_bucket`]) if available, else none.
pub fn dh_pick(table: &[Option<u32>], views: &[ConnView], addr: [u32; 4]) -> Option<usize> {
    let real = slot(table, hash::dh_bucket(addr))?;
    available(views, real).then_some(real)
}

/// mh's choice for a packet (`ip_vs_mh_schedule`): the server in the
/// source address's slot ([`hash::mh_index`], with the source port when
/// `use_port`, i.e. mh-port), unless unavailable (weight 0 or overloaded):
/// then none, or with mh-fallback (`ip_vs_mh_get_fallback`) the first
/// available server along [`hash::mh_probe_index`]'s `table.len()` steps.
pub fn mh_pick(
    table: &[Option<u32>],
    views: &[ConnView],
    addr: [u32; 4],
    port_be: u16,
    fallback: bool,
    use_port: bool,
) -> Option<usize> {
    let size = u32::try_from(table.len()).ok().filter(|&s| s > 0)?;
    let first = hash::mh_index(addr, port_be, use_port, 0, size);
    let real = slot(table, first)?;
    if available(views, real) {
        return Some(real);
    }
    if !fallback {
        return None;
    }
    for k in 0..size {
        let real = slot(table, hash::mh_probe_index(addr, port_be, use_port, first, k, size))?;
        if available(views, real) {
            return Some(real);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ipv4_words;
    use crate::sched::fixtures::{cv, mh_real};
    use crate::sched::{dh_table, mh_table, sh_table};

    #[test]
    fn sh_maps_an_address_to_the_bucket_computed_by_hand() {
        // hash_32(0x0A000001, 8) = 39 (see hash.rs). Weights [3,1,2] repeat
        // 0,0,0,1,2,2 every 6 buckets; 39 % 6 = 3: server 1.
        let t = sh_table(&[3, 1, 2]);
        let views = [cv(3, 0, 0), cv(1, 0, 0), cv(2, 0, 0)];
        let a = ipv4_words([10, 0, 0, 1]);
        assert_eq!(sh_pick(&t, &views, a, 80u16.to_be(), false, false), Some(1));
        // With sh-port, port 80: bucket 0xB6 = 182, 182 % 6 = 2: server 0.
        assert_eq!(sh_pick(&t, &views, a, 80u16.to_be(), false, true), Some(0));
        // Empty table: nobody.
        assert_eq!(sh_pick(&sh_table(&[]), &[], a, 0, true, false), None);
    }

    #[test]
    fn sh_fallback_walk() {
        // Buckets 0,1,2,0,1,2,...: 10.0.0.1 is in bucket 39 -> server 0.
        let t = sh_table(&[1, 1, 1]);
        let a = ipv4_words([10, 0, 0, 1]);
        let mut views = [cv(1, 0, 0), cv(1, 0, 0), cv(1, 0, 0)];
        assert_eq!(sh_pick(&t, &views, a, 0, false, false), Some(0));
        views[0].weight = 0;
        // Unavailable and no fallback: nobody.
        assert_eq!(sh_pick(&t, &views, a, 0, false, false), None);
        // Fallback step 0 looks at (39 + 39) = 78 -> server 0 again, step 1
        // at 79 -> server 1.
        assert_eq!(sh_pick(&t, &views, a, 0, true, false), Some(1));
        views[1].overloaded = true;
        // Step 2: 80 -> server 2.
        assert_eq!(sh_pick(&t, &views, a, 0, true, false), Some(2));
        views[2].weight = 0;
        assert_eq!(sh_pick(&t, &views, a, 0, true, false), None);
    }

    #[test]
    fn dh_round_robin_buckets_and_pick() {
        let t = dh_table(3);
        assert_eq!(t.len(), 256);
        assert!(t.iter().enumerate().all(|(i, &b)| b == Some((i % 3) as u32)));
        assert!(dh_table(0).iter().all(|b| b.is_none()));
        // dh_bucket(10.0.0.1) = 39; 39 % 3 = 0.
        let a = ipv4_words([10, 0, 0, 1]);
        let mut views = [cv(1, 0, 0), cv(5, 0, 0), cv(5, 0, 0)];
        assert_eq!(dh_pick(&t, &views, a), Some(0));
        views[0].overloaded = true;
        assert_eq!(dh_pick(&t, &views, a), None);
    }

    #[test]
    fn mh_pick_and_fallback() {
        let reals = [mh_real(1, 1), mh_real(2, 1), mh_real(3, 1)];
        let t = mh_table(&reals, 251);
        let mut views = [cv(1, 0, 0), cv(1, 0, 0), cv(1, 0, 0)];
        let a = ipv4_words([172, 16, 3, 4]);
        let first = hash::mh_index(a, 0, false, 0, 251);
        let owner = t[first as usize].unwrap() as usize;
        assert_eq!(mh_pick(&t, &views, a, 1234u16.to_be(), false, false), Some(owner));
        views[owner].weight = 0;
        assert_eq!(mh_pick(&t, &views, a, 1234u16.to_be(), false, false), None);
        // The fallback walk, by hand.
        let want = (0..251)
            .map(|k| t[hash::mh_probe_index(a, 0, false, first, k, 251) as usize].unwrap() as usize)
            .find(|&i| i != owner);
        assert_eq!(mh_pick(&t, &views, a, 1234u16.to_be(), true, false), want);
        // mh-port changes the slot the packet hashes to.
        let with_port = hash::mh_index(a, 1234u16.to_be(), true, 0, 251);
        let views = [cv(1, 0, 0); 3];
        assert_eq!(
            mh_pick(&t, &views, a, 1234u16.to_be(), false, true),
            Some(t[with_port as usize].unwrap() as usize)
        );
        assert_eq!(mh_pick(&[], &views, a, 0, true, false), None);
    }
}
