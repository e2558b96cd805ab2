//! Lab names, and removing what crashed or killed runs left behind.

use std::path::Path;

use anyhow::{Context, Result};

use super::LAB_PREFIX;
use crate::netns;

/// Lowercase ASCII letters, digits and '_' only, at most 24 characters.
/// No '-' so the owner pid can be parsed back out of namespace names.
pub(super) fn sanitize_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if cleaned.is_empty() {
        "lab".to_owned()
    } else {
        cleaned
    }
}

/// The pid that created a lab namespace or log dir named `lbt-<name>-<pid>-...`.
fn owner_pid(entry: &str) -> Option<u32> {
    let rest = entry.strip_prefix(LAB_PREFIX)?;
    let mut parts = rest.split('-');
    let _name = parts.next()?;
    parts.next()?.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes lab namespaces (and log dirs) whose creating process is gone,
/// i.e. leftovers of crashed or killed runs. Labs of live processes, such as
/// tests running in parallel, are left alone. Returns the deleted namespaces.
pub fn cleanup_stale_labs() -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for ns in netns::list_namespaces()? {
        if let Some(pid) = owner_pid(&ns)
            && !process_alive(pid)
        {
            netns::delete_namespace(&ns)
                .with_context(|| format!("deleting stale namespace {ns}"))?;
            deleted.push(ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name)
                && !process_alive(pid)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_pids_parse_back() {
        assert_eq!(sanitize_name("Lab-Topology::x"), "lab_topology__x");
        assert_eq!(sanitize_name(""), "lab");
        assert_eq!(owner_pid("lbt-lab_2-1234-0-rs1"), Some(1234));
        assert_eq!(owner_pid("lbt-lab-topology-1-0"), None);
        assert_eq!(owner_pid("other-1-2"), None);
    }
}
