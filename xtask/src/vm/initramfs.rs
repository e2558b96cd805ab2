//! The guest's initramfs: busybox, the two boot scripts, the command to run
//! and the few kernel modules needed to mount the host's root (9p over
//! virtio, overlayfs), written as an uncompressed `newc` cpio archive.
//!
//! Nothing here needs a cpio tool: the format is a 110-byte ASCII header per
//! entry, the name, the data, each padded to 4 bytes.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::kernel::Kernel;

/// Stage 1, PID 1 of the initramfs: mounts the host's root and hands over.
const STAGE1: &str = include_str!("init.sh");
/// Stage 2, PID 1 in the host's root: mounts, runs the command, reports.
const STAGE2: &str = include_str!("stage2.sh");

/// busybox-static's binary (statically linked: the initramfs has no libc).
pub const BUSYBOX: &str = "/bin/busybox";

/// The modules stage 1 loads, by name; each with its dependencies first.
/// Those built into a kernel are skipped.
const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// Writes the initramfs for `kernel` that runs `command_script` to `path`.
pub fn write(kernel: &Kernel, command_script: &str, path: &Path) -> Result<()> {
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX} (package busybox-static; `cargo xtask setup` installs it)")
    })?;
    let modules = boot_modules(&kernel.modules_dir)?;

    let mut archive = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "lower", "rw", "newroot", "lb-vm",
    ] {
        archive.directory(dir);
    }
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    archive.char_device("dev/console", 5, 1);
    archive.file("bin/busybox", 0o755, &busybox);
    archive.symlink("bin/sh", "busybox");
    archive.file("init", 0o755, STAGE1.as_bytes());
    archive.file("lb-vm/stage2", 0o644, STAGE2.as_bytes());
    archive.file("lb-vm/command", 0o644, command_script.as_bytes());
    archive.file(
        "lb-vm/release",
        0o644,
        format!("{}\n", kernel.release).as_bytes(),
    );
    archive.directory("lb-vm/modules");
    let mut order = String::new();
    for module in &modules {
        let name = module.file_name();
        let data = read_module(&kernel.modules_dir.join(&module.path))?;
        archive.file(&format!("lb-vm/modules/{name}"), 0o644, &data);
        order.push_str(&name);
        order.push('\n');
    }
    archive.file("lb-vm/modules.order", 0o644, order.as_bytes());

    fs::write(path, archive.finish()).with_context(|| format!("writing {}", path.display()))
}

// ---- kernel modules --------------------------------------------------------

/// A module file, relative to `/lib/modules/<release>`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModuleFile {
    path: String,
}

impl ModuleFile {
    /// `kernel/fs/9p/9p.ko.xz` → `9p`, with `-` spelled `_` as modprobe does.
    fn name(&self) -> String {
        let file = self.path.rsplit('/').next().unwrap_or(&self.path);
        let stem = file.split(".ko").next().unwrap_or(file);
        stem.replace('-', "_")
    }

    /// The name it gets in the initramfs, always uncompressed.
    fn file_name(&self) -> String {
        format!("{}.ko", self.name())
    }
}

/// The modules (with their dependencies, each before its users) that
/// [`BOOT_MODULES`] needs in the unpacked tree `modules_dir`.
fn boot_modules(modules_dir: &Path) -> Result<Vec<ModuleFile>> {
    let dep_path = modules_dir.join("modules.dep");
    let modules_dep = fs::read_to_string(&dep_path)
        .with_context(|| format!("reading {} (written by depmod)", dep_path.display()))?;
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    load_order(&modules_dep, &builtin, BOOT_MODULES)
}

/// Resolves `wanted` against modules.dep (`path: dep dep ...`), leaving out
/// the modules named in modules.builtin. Dependencies come first, each once.
fn load_order(modules_dep: &str, builtin: &str, wanted: &[&str]) -> Result<Vec<ModuleFile>> {
    let builtin: HashSet<String> = builtin
        .lines()
        .map(|path| {
            ModuleFile {
                path: path.trim().to_owned(),
            }
            .name()
        })
        .collect();
    let entries: Vec<(ModuleFile, Vec<ModuleFile>)> = modules_dep
        .lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let deps = deps
                .split_whitespace()
                .map(|d| ModuleFile { path: d.to_owned() })
                .collect();
            Some((
                ModuleFile {
                    path: path.trim().to_owned(),
                },
                deps,
            ))
        })
        .collect();
    let find = |name: &str| entries.iter().find(|(m, _)| m.name() == name);

    let mut order: Vec<ModuleFile> = Vec::new();
    for name in wanted {
        if builtin.contains(*name) {
            continue;
        }
        let Some((module, deps)) = find(name) else {
            bail!("module {name} is neither in modules.dep nor built in");
        };
        // modules.dep lists every (transitive) dependency of a module, the
        // ones needed last first: load them from the end of the list.
        for dep in deps.iter().rev().chain(std::iter::once(module)) {
            if !order.contains(dep) {
                order.push(dep.clone());
            }
        }
    }
    Ok(order)
}

/// A module file's contents, decompressed: busybox's insmod takes plain ELF.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let decompressor = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    match decompressor {
        None => fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some(tool) => {
            let mut cmd = Command::new(tool);
            cmd.arg("-dc").arg(path);
            // The bytes are binary: take them as they are, not as a String.
            let out = cmd
                .output()
                .with_context(|| format!("cannot run {tool} (decompressing {name})"))?;
            if !out.status.success() {
                bail!(
                    "`{tool} -dc {name}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(out.stdout)
        }
    }
}

// ---- the cpio (newc) writer -------------------------------------------------

/// An archive in the `newc` format the kernel unpacks into its rootfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
}

const MODE_DIRECTORY: u32 = 0o040000;
const MODE_FILE: u32 = 0o100000;
const MODE_SYMLINK: u32 = 0o120000;
const MODE_CHAR_DEVICE: u32 = 0o020000;

impl Cpio {
    fn directory(&mut self, path: &str) {
        self.entry(path, MODE_DIRECTORY | 0o755, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
        self.entry(path, MODE_FILE | permissions, (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, MODE_SYMLINK | 0o777, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, MODE_CHAR_DEVICE | 0o600, (major, minor), &[]);
    }

    fn entry(&mut self, path: &str, mode: u32, (rdev_major, rdev_minor): (u32, u32), data: &[u8]) {
        self.next_inode += 1;
        let name_size = path.len() + 1; // with its NUL
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev_major,
            rdev_minor,
            name_size as u32,
            0, // check (unused in newc)
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.next_inode = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULES_DEP: &str = "\
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/fs/overlayfs/overlay.ko.xz:
";

    #[test]
    fn dependencies_load_first_and_once_and_builtins_not_at_all() {
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\n";
        let order = load_order(
            MODULES_DEP,
            builtin,
            &["virtio_pci", "9pnet_virtio", "9p", "overlay"],
        )
        .unwrap();
        let names: Vec<String> = order.iter().map(ModuleFile::name).collect();
        assert_eq!(names, ["netfs", "9pnet", "9pnet_virtio", "9p", "overlay"]);
    }

    #[test]
    fn an_unknown_module_is_an_error() {
        let err = load_order(MODULES_DEP, "", &["virtio_console"]).unwrap_err();
        assert!(err.to_string().contains("virtio_console"), "{err}");
    }

    #[test]
    fn module_names_drop_directory_suffix_and_dashes() {
        let module = ModuleFile {
            path: "kernel/drivers/virtio/virtio-pci_x.ko.zst".into(),
        };
        assert_eq!(module.name(), "virtio_pci_x");
        assert_eq!(module.file_name(), "virtio_pci_x.ko");
    }

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut archive = Cpio::default();
        archive.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = archive.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // mode field (second) of the first entry: a regular file, rwxr-xr-x
        assert_eq!(&bytes[14..22], b"000081ed");
        // file size field
        assert_eq!(&bytes[54..62], b"0000000a");
        let trailer = bytes.windows(10).position(|w| w == b"TRAILER!!!");
        assert!(trailer.is_some());
    }
}
