//! What the datapath needs of the running kernel, asked of the kernel itself
//! before the datapath is loaded: a kernel that lacks one of them is named
//! with what it lacks and the oldest Linux that has it, at once, instead of
//! a refusal deep inside the big program.

use std::fmt;

use aya::{
    Ebpf,
    maps::MapType,
    programs::{ProgramType, Xdp},
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

/// The oldest Linux whose BPF has everything below (bpf_loop came last).
pub const OLDEST_SUPPORTED: &str = "5.17";

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// A kernel feature the datapath uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    /// The first mainline Linux that has it.
    pub since: &'static str,
    /// What the datapath uses it for.
    pub used_for: &'static str,
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (Linux {}; {})", self.name, self.since, self.used_for)
    }
}

const XDP: Feature = Feature { name: "XDP programs", since: "4.8", used_for: "the datapath itself" };
const HELPERS: [(BpfHelper, Feature); 7] = [
    (
        BpfHelper::BPF_FUNC_map_lookup_elem,
        Feature { name: "bpf_map_lookup_elem", since: "3.19", used_for: "every table" },
    ),
    (
        BpfHelper::BPF_FUNC_map_update_elem,
        Feature { name: "bpf_map_update_elem", since: "3.19", used_for: "new connections" },
    ),
    (
        BpfHelper::BPF_FUNC_xdp_adjust_head,
        Feature { name: "bpf_xdp_adjust_head", since: "4.10", used_for: "TUN and ICMP replies" },
    ),
    (
        BpfHelper::BPF_FUNC_xdp_adjust_tail,
        Feature { name: "bpf_xdp_adjust_tail", since: "4.18", used_for: "ICMP replies" },
    ),
    (
        BpfHelper::BPF_FUNC_ktime_get_ns,
        Feature { name: "bpf_ktime_get_ns", since: "4.1", used_for: "the datapath clock's calibration" },
    ),
    (
        BpfHelper::BPF_FUNC_jiffies64,
        Feature { name: "bpf_jiffies64", since: "5.5", used_for: "the datapath clock" },
    ),
    (
        BpfHelper::BPF_FUNC_loop,
        Feature { name: "bpf_loop", since: "5.17", used_for: "the scans of the least-connection schedulers" },
    ),
];
const MAPS: [(MapType, Feature); 4] = [
    (MapType::Hash, Feature { name: "hash maps", since: "3.19", used_for: "the service table" }),
    (MapType::Array, Feature { name: "array maps", since: "3.19", used_for: "real servers and tables" }),
    (MapType::PerCpuArray, Feature { name: "per-CPU arrays", since: "4.6", used_for: "counters" }),
    (MapType::LruHash, Feature { name: "LRU hash maps", since: "4.10", used_for: "the connection table" }),
];
const MMAPABLE_ARRAY: Feature =
    Feature { name: "memory-mapped arrays (BPF_F_MMAPABLE)", since: "5.5", used_for: "connection counts" };
const ATOMIC_FETCH: Feature =
    Feature { name: "BPF atomic fetch-and-add", since: "5.12", used_for: "the rr and wrr position" };
const GLOBAL_FUNCTIONS: Feature = Feature {
    name: "BPF global functions with pointer arguments (BTF)",
    since: "5.12",
    used_for: "the schedulers, verified one by one",
};
const XDP_LINK: Feature =
    Feature { name: "XDP through a BPF link", since: "5.9", used_for: "attaching, and pinning the attachment" };

/// A feature this kernel lacks, and how the probe found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub feature: Feature,
    pub detail: String,
}

/// Every feature the datapath needs that this kernel lacks (empty: all
/// there). A probe that cannot tell counts as present: the load itself
/// will say more.
pub fn missing() -> Vec<Missing> {
    let mut missing = Vec::new();
    let mut lacks = |feature: Feature, detail: String| missing.push(Missing { feature, detail });
    if let Ok(false) = is_program_supported(ProgramType::Xdp) {
        lacks(XDP, "the kernel does not load XDP programs".into());
        return missing;
    }
    for (helper, feature) in HELPERS {
        if let Ok(false) = is_helper_supported(ProgramType::Xdp, helper) {
            lacks(feature, "unknown to the verifier for XDP programs".into());
        }
    }
    for (map, feature) in MAPS {
        if let Ok(false) = is_map_supported(map) {
            lacks(feature, "the map type is refused".into());
        }
    }
    if let Err(e) = create_mmapable_array() {
        lacks(MMAPABLE_ARRAY, format!("creating one fails: {e}"));
    }
    match Ebpf::load(crate::PROBE_OBJECT) {
        Ok(mut probes) => {
            for (program, feature) in [("probe_atomic_fetch", ATOMIC_FETCH), ("probe_global_function", GLOBAL_FUNCTIONS)]
            {
                if let Err(e) = load_probe(&mut probes, program) {
                    lacks(feature, format!("its probe program is refused: {e:#}"));
                }
            }
        }
        Err(e) => tracing::warn!("cannot load the kernel probes ({e:#}); the datapath's load will tell"),
    }
    if kernel_type_exists("bpf_xdp_link") == Some(false) {
        lacks(XDP_LINK, "the kernel has no struct bpf_xdp_link".into());
    }
    missing
}

/// The message for a kernel that lacks something.
pub fn explain_missing(missing: &[Missing]) -> String {
    let mut text = format!("this kernel (Linux {}) lacks what the XDP datapath needs:\n", release());
    for m in missing {
        text.push_str(&format!("  - {}: {}\n", m.feature, m.detail));
    }
    text.push_str(&format!(
        "lb needs Linux {OLDEST_SUPPORTED} or newer (Debian 12's 6.1 and newer; on Ubuntu 22.04, the HWE kernel)"
    ));
    text
}

/// Loads one program of the probe object.
fn load_probe(probes: &mut Ebpf, name: &str) -> anyhow::Result<()> {
    let program: &mut Xdp =
        probes.program_mut(name).ok_or_else(|| anyhow::anyhow!("{name} missing from the probe object"))?.try_into()?;
    program.load()?;
    Ok(())
}

/// Creates (and closes) a one-element array with `BPF_F_MMAPABLE`.
fn create_mmapable_array() -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    /// The head of `union bpf_attr` for BPF_MAP_CREATE; the kernel reads
    /// only the size we pass and takes the rest as zero.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    let attr = MapCreate {
        map_type: MapType::Array as u32,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        map_flags: lb_common::BPF_F_MMAPABLE,
    };
    // SAFETY: bpf(2) reads `size_of::<MapCreate>()` bytes of `attr`.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &attr, size_of::<MapCreate>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just gave us.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

/// Whether the kernel's own BTF names a type so (`None`: the kernel has no
/// BTF to ask). A look for the name in its string table, not a parse of
/// all of it: a parse costs seconds under emulation.
fn kernel_type_exists(name: &str) -> Option<bool> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    let needle = [b"\0", name.as_bytes(), b"\0"].concat();
    Some(btf.windows(needle.len()).any(|w| w == needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_supported_kernel_is_the_newest_feature() {
        let newest = HELPERS
            .iter()
            .map(|(_, f)| *f)
            .chain(MAPS.iter().map(|(_, f)| *f))
            .chain([XDP, MMAPABLE_ARRAY, ATOMIC_FETCH, GLOBAL_FUNCTIONS, XDP_LINK])
            .map(|f| {
                let (major, minor) = f.since.split_once('.').unwrap();
                (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap())
            })
            .max()
            .unwrap();
        assert_eq!(format!("{}.{}", newest.0, newest.1), OLDEST_SUPPORTED);
    }

    #[test]
    fn the_message_names_each_missing_feature_and_the_oldest_kernel() {
        let text = explain_missing(&[Missing { feature: HELPERS[6].1, detail: "unknown".into() }]);
        assert!(text.contains("bpf_loop (Linux 5.17"), "{text}");
        assert!(text.contains("needs Linux 5.17 or newer"), "{text}");
    }
}
