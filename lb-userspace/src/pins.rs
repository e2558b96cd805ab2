//! The pin directory (`director.pin_path`, on a bpffs): which of the
//! datapath's maps outlive lbd, the identity of their layout, and what a
//! starting lbd does with the pins it finds.
//!
//! The layout's identity comes from the map definitions in the eBPF object
//! itself — name, type, key size, value size, entries and flags of every
//! pinned map — hashed into the name of the directory they are pinned in,
//! `<pin_path>/layout-<16 hex digits>`. A datapath whose maps differ in any
//! of these pins elsewhere by itself: there is no number to remember to
//! bump. The connection table's entries are the exception: they come from
//! `conn_table_size` at load, so they are not part of the identity, and an
//! adopted table keeps the size it was created with.
//!
//! A starting lbd adopts the maps under its own layout's directory only
//! when every one of them is there and matches its definition (read back
//! from the kernel, so a map replaced by hand is caught too). Pins of
//! another layout are never adopted; once its own program is loaded, lbd
//! logs them, moves their XDP link into its own directory (it then
//! replaces the program on that link, without a gap, as after a crash) and
//! removes the rest.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::MapInfo;
use aya_obj::EbpfSectionKind;
use lb_common::map_name;
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::{info, warn};

/// Maps every lbd starts empty, so not pinned and not part of the layout:
/// lblc's caches refill from the next connections, and the scan scratch
/// holds one packet's state.
const UNPINNED: [&str; 2] = [map_name::LBLC_CACHE, map_name::SCAN_SCRATCH];

/// Where each layout's directory name starts.
const LAYOUT_PREFIX: &str = "layout-";

/// One pinned map as the eBPF object defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// The pinned maps of one eBPF object, and the name of their directory.
#[derive(Clone, Debug)]
pub struct Layout {
    maps: Vec<MapDef>,
    id: String,
}

impl Layout {
    /// Every map the object defines, less [`UNPINNED`] and the data
    /// sections (`.rodata`, `.bss`: constants and scratch of one load).
    pub fn of_object(object: &[u8]) -> Result<Self> {
        let parsed = aya_obj::Object::parse(object).context("parse the eBPF object's maps")?;
        let maps = parsed
            .maps
            .iter()
            .filter(|(_, m)| matches!(m.section_kind(), EbpfSectionKind::Maps | EbpfSectionKind::BtfMaps))
            .filter(|(name, _)| !UNPINNED.contains(&name.as_str()))
            .map(|(name, m)| MapDef {
                name: name.clone(),
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                flags: m.map_flags(),
            })
            .collect();
        Ok(Self::from_maps(maps))
    }

    fn from_maps(mut maps: Vec<MapDef>) -> Self {
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        let mut text = String::new();
        for m in &maps {
            // The connection table's size is the config's, not the layout's.
            let entries = if sized_by_config(&m.name) { "config".to_string() } else { m.max_entries.to_string() };
            text.push_str(&format!(
                "{} type {} key {} value {} entries {entries} flags {:#x}\n",
                m.name, m.map_type, m.key_size, m.value_size, m.flags
            ));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self { maps, id: format!("{LAYOUT_PREFIX}{hex}") }
    }

    /// The directory name under `pin_path`: `layout-<16 hex digits>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.maps.iter().map(|m| m.name.as_str())
    }

    /// What is wrong with a pinned map for this layout, if anything.
    fn mismatch(&self, def: &MapDef, pinned: &MapInfo) -> Option<String> {
        let pinned_type = pinned.map_type().ok().map(|t| t as u32);
        let mut wrong = Vec::new();
        if pinned_type != Some(def.map_type) {
            wrong.push(format!("type {}, this datapath's {}", describe(pinned_type), def.map_type));
        }
        for (what, theirs, ours) in [
            ("key size", pinned.key_size(), def.key_size),
            ("value size", pinned.value_size(), def.value_size),
            // The kernel adds BPF_F_RDONLY_PROG to a device map's flags.
            ("flags", pinned.map_flags() & !BPF_F_RDONLY_PROG, def.flags),
        ] {
            if theirs != ours {
                wrong.push(format!("{what} {theirs}, this datapath's {ours}"));
            }
        }
        if !sized_by_config(&def.name) && pinned.max_entries() != def.max_entries {
            wrong.push(format!("{} entries, this datapath's {}", pinned.max_entries(), def.max_entries));
        }
        (!wrong.is_empty()).then(|| format!("{} has {}", def.name, wrong.join(", ")))
    }
}

/// The kernel's flag for a map programs may only read.
const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// Maps sized at load time from `conn_table_size`: the connection table
/// and the NAT reply entries and full-NAT local ends of its connections.
fn sized_by_config(name: &str) -> bool {
    name == map_name::CONN_TABLE || name == map_name::NAT_REPLIES || name == map_name::FULLNAT_LOCAL
}

fn describe(map_type: Option<u32>) -> String {
    map_type.map_or_else(|| "unknown".into(), |t| t.to_string())
}

/// The pin directory of this lbd's layout, after [`prepare`].
#[derive(Clone, Debug)]
pub struct PinDir {
    /// `<pin_path>/<layout id>`.
    pub dir: PathBuf,
    /// Every map is there and matches: a previous lbd's state is adopted.
    pub adopted: bool,
    /// The adopted connection table's entries (its size at creation).
    pub conn_table_entries: Option<u32>,
}

/// Makes `<pin_path>/<layout id>` ready for loading: this layout's pins
/// checked, and kept only if all of them match. Pins of other layouts stay
/// until [`retire_other_layouts`].
pub fn prepare(pin_path: &Path, layout: &Layout) -> Result<PinDir> {
    ensure_bpffs(pin_path)?;
    let dir = pin_path.join(layout.id());
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // Each pinned map of this layout that is there, read back from the
    // kernel (None: the pin is not a map).
    let mut present: Vec<(&MapDef, Option<MapInfo>)> = Vec::new();
    let mut problems = Vec::new();
    for def in &layout.maps {
        let path = dir.join(&def.name);
        if !path.exists() {
            continue;
        }
        match MapInfo::from_pin(&path) {
            Ok(info) => {
                problems.extend(layout.mismatch(def, &info));
                present.push((def, Some(info)));
            }
            Err(e) => {
                problems.push(format!("{} is not a map ({e})", def.name));
                present.push((def, None));
            }
        }
    }
    if present.is_empty() {
        info!("pinning the maps under {}", dir.display());
        return Ok(PinDir { dir, adopted: false, conn_table_entries: None });
    }
    if present.len() < layout.maps.len() {
        let missing: Vec<&str> = layout.names().filter(|n| !dir.join(n).exists()).collect();
        problems.push(format!("{} missing", missing.join(", ")));
    }
    if !problems.is_empty() {
        // Half a state is worse than none: the tables refer to each other.
        warn!(
            "not adopting the maps pinned under {}: {}; the datapath starts with empty tables and counters",
            dir.display(),
            problems.join("; ")
        );
        for (def, _) in &present {
            remove_pin(&dir.join(&def.name));
        }
        return Ok(PinDir { dir, adopted: false, conn_table_entries: None });
    }
    let conn_table_entries = present
        .iter()
        .find(|(def, _)| def.name == map_name::CONN_TABLE)
        .and_then(|(_, info)| info.as_ref().map(MapInfo::max_entries));
    Ok(PinDir { dir, adopted: true, conn_table_entries })
}

/// Whether a directory under `pin_path` holds pins of some lbd's layout:
/// `layout-*`, or `v<N>` of the lbds that numbered their layouts by hand.
fn is_layout_dir(name: &str) -> bool {
    name.starts_with(LAYOUT_PREFIX)
        || name.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Clears out the pins of every other layout beside `dir` (this layout's).
/// Their XDP links move into `dir`: [`crate::datapath::Datapath::attach`]
/// takes such a link over with an atomic program replacement, so
/// forwarding never stops, and the old program and its maps go when the
/// link lets go of them. (Left in place, the old link would keep the
/// interface busy and the new attach would fail with EBUSY.) Called once
/// this lbd's program is loaded: one the kernel refuses leaves the running
/// lbd's pins alone.
pub fn retire_other_layouts(dir: &Path) {
    let Some(pin_path) = dir.parent() else { return };
    let Ok(entries) = std::fs::read_dir(pin_path) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if old == dir || !is_layout_dir(&name) || !old.is_dir() {
            continue;
        }
        // Left empty by an lbd that stopped before pinning anything.
        if std::fs::read_dir(&old).is_ok_and(|mut pins| pins.next().is_none()) {
            let _ = std::fs::remove_dir(&old);
            continue;
        }
        warn!(
            "{}: pins of another map layout (this lbd's is {}); not adopting them: connections and counters start afresh",
            old.display(),
            dir.file_name().unwrap_or_default().to_string_lossy()
        );
        let Ok(pins) = std::fs::read_dir(&old) else {
            continue;
        };
        for pin in pins.flatten() {
            let pin_name = pin.file_name();
            let target = dir.join(&pin_name);
            if let Some(interface) = pin_name.to_string_lossy().strip_prefix(LINK_PREFIX)
                && !target.exists()
            {
                match std::fs::rename(pin.path(), &target) {
                    Ok(()) => {
                        info!(
                            "the XDP link on {interface} moves to {}: its program is replaced, not detached",
                            dir.display()
                        );
                        continue;
                    }
                    Err(e) => warn!("cannot move {} to {}: {e}", pin.path().display(), target.display()),
                }
            }
            remove_pin(&pin.path());
        }
        if let Err(e) = std::fs::remove_dir(&old) {
            warn!("cannot remove {}: {e}", old.display());
        }
    }
}

fn remove_pin(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        warn!("cannot remove {}: {e}", path.display());
    }
}

/// Removes this layout's pins, links included (which detaches them), its
/// directory, and `pin_path` if nothing else is in it.
pub fn clear(dir: &Path, layout: &Layout) {
    remove_other_links(dir, &[]);
    for name in layout.names() {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
    if let Some(pin_path) = dir.parent() {
        let _ = std::fs::remove_dir(pin_path);
    }
}

/// Where each XDP link's pin name starts; the interface's name follows.
const LINK_PREFIX: &str = "xdp_link_";

/// The XDP link's pin, per interface (a config that moves to another
/// interface detaches the old one).
pub fn link_pin(dir: &Path, interface: &str) -> PathBuf {
    dir.join(format!("{LINK_PREFIX}{interface}"))
}

/// Removes link pins for interfaces other than `keep` (which detaches them).
pub fn remove_other_links(dir: &Path, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(interface) = name.strip_prefix(LINK_PREFIX)
            && !keep.iter().any(|k| k == interface)
        {
            info!("detaching the XDP program a previous lbd left on {interface}");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Makes sure `dir` exists on a bpffs, mounting one at /sys/fs/bpf if
/// nothing is mounted there (as in a fresh mount namespace).
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        std::fs::create_dir_all(root).ok();
        mount(Some("bpffs"), root, Some("bpf"), MsFlags::empty(), None::<&str>)
            .map_err(|e| anyhow!("mount bpffs on /sys/fs/bpf: {}", std::io::Error::from(e)))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if !is_bpffs(dir) {
        bail!("{} is not on a bpf filesystem (mount -t bpf bpffs /sys/fs/bpf)", dir.display());
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, value_size: u32, max_entries: u32) -> MapDef {
        MapDef { name: name.into(), map_type: 2, key_size: 4, value_size, max_entries, flags: 0 }
    }

    #[test]
    fn the_layout_of_the_built_datapath_is_stable_and_names_its_maps() {
        let a = Layout::of_object(crate::EBPF_OBJECT).unwrap();
        let b = Layout::of_object(crate::EBPF_OBJECT).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(a.id().starts_with("layout-") && a.id().len() == "layout-".len() + 16, "{}", a.id());
        let names: Vec<&str> = a.names().collect();
        for name in [map_name::SERVICES, map_name::REALS, map_name::CONN_TABLE, map_name::REASON_STATS] {
            assert!(names.contains(&name), "{name} not pinned: {names:?}");
        }
        for name in UNPINNED {
            assert!(!names.contains(&name), "{name} pinned: {names:?}");
        }
        assert!(names.iter().all(|n| !n.starts_with('.')), "data sections pinned: {names:?}");
    }

    #[test]
    fn any_change_of_a_map_but_the_connection_tables_size_is_another_layout() {
        let base = vec![def("REALS", 40, 16384), def(map_name::CONN_TABLE, 64, 262_144)];
        let id = Layout::from_maps(base.clone()).id;
        let resized = vec![def("REALS", 40, 16384), def(map_name::CONN_TABLE, 64, 4096)];
        assert_eq!(Layout::from_maps(resized).id, id);
        let reordered = vec![def(map_name::CONN_TABLE, 64, 262_144), def("REALS", 40, 16384)];
        assert_eq!(Layout::from_maps(reordered).id, id);
        for changed in [
            vec![def("REALS", 48, 16384), def(map_name::CONN_TABLE, 64, 262_144)],
            vec![def("REALS", 40, 8192), def(map_name::CONN_TABLE, 64, 262_144)],
            vec![def("REALS", 40, 16384), def(map_name::CONN_TABLE, 72, 262_144)],
            vec![def("REALS", 40, 16384), def(map_name::CONN_TABLE, 64, 262_144), def("ICMP_RATE", 8, 1)],
            vec![def("REALS", 40, 16384)],
        ] {
            assert_ne!(Layout::from_maps(changed.clone()).id, id, "{changed:?}");
        }
    }

    #[test]
    fn layout_directories_are_recognised() {
        for name in ["v1", "v3", "v12", "layout-0123456789abcdef"] {
            assert!(is_layout_dir(name), "{name}");
        }
        for name in ["v", "vx", "lb", "xdp_link_eth0", "REALS"] {
            assert!(!is_layout_dir(name), "{name}");
        }
    }
}
