//! `lbctl -c`, a page at a time, filtered here (`--vip`, `--real`,
//! `--client`): each request walks [`PAGE_ENTRIES`] entries of the table
//! on from the cursor the last page handed back, keeps what the filter
//! selects, and hands back where it stopped. No request walks the whole
//! table, none holds the controller's lock while it walks (the
//! [`ConnListing`] was taken under it), and only what matches crosses the
//! socket: a listing of a table of millions leaves lbd answering other
//! requests between its pages, and its main loop (health, VRRP, the sweep)
//! never waits for it.

use anyhow::{Result, anyhow};
use lb_ipvsadm::{
    conn_filter::{ConnFilter, PAGE_ENTRIES},
    snapshot::Connection,
};

use super::{
    conns::is_expired,
    report::{ConnListing, connection_snapshot},
};
use crate::datapath::Cursor;

impl ConnListing {
    /// The live entries `filter` selects among the next [`PAGE_ENTRIES`]
    /// (about: whole batches) from `cursor` (the start for `None`), in the
    /// table's order, and the cursor of the next page (`None`: the walk is
    /// over).
    pub fn page(
        &self,
        filter: &ConnFilter,
        cursor: Option<&str>,
    ) -> Result<(Vec<Connection>, Option<String>)> {
        let mut cursor = match cursor {
            None => Cursor::new(),
            Some(token) => Cursor::from_token(token)
                .ok_or_else(|| anyhow!("not a cursor of lbd's: {token:?}"))?,
        };
        let mut out = Vec::new();
        self.conns.walk(&mut cursor, PAGE_ENTRIES, |key, conn| {
            if is_expired(conn, self.now) {
                return;
            }
            if let Some(c) = self
                .reals
                .get(&conn.real_id)
                .and_then(|d| connection_snapshot(key, conn, d, self.now))
                && filter.matches(&c)
            {
                out.push(c);
            }
        })?;
        Ok((out, (!cursor.is_done()).then(|| cursor.to_token())))
    }
}
