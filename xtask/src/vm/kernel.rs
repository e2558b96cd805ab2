//! Debian's kernels for the VM: which release a `--kernel` value means, and
//! a cache holding each one unpacked, with its modules indexed (depmod) and
//! its ELF `vmlinux` taken out of the bzImage once.
//!
//! Cache layout (`$LB_KERNEL_CACHE`, default /var/cache/lb-kernels):
//!
//! ```text
//! <release>/root/boot/...                 the package's files (dpkg -x), never /boot
//! <release>/root/lib/modules/<release>/   its modules, with modules.dep
//! <release>/vmlinux                       what QEMU boots
//! <release>/package-version               e.g. 6.1.192-3
//! ```
//!
//! A release is fetched into `.<release>.partial-<pid>` and renamed into
//! place when complete, so an interrupted fetch never looks cached.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::util::{in_path, is_root, output_on_stderr, run_on_stderr, show};

/// Overrides where kernels are cached.
pub const CACHE_ENV: &str = "LB_KERNEL_CACHE";
const DEFAULT_CACHE: &str = "/var/cache/lb-kernels";

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `uname -r` in the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The Debian package's version, e.g. `6.1.192-3`.
    pub package_version: String,
    /// The uncompressed ELF kernel (boots through its PVH entry point:
    /// nothing to decompress under emulation).
    pub vmlinux: PathBuf,
    /// `/lib/modules/<release>` of the unpacked package.
    pub modules_dir: PathBuf,
}

/// The directory holding the cached kernels.
pub fn cache_root() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The kernel that `spec` names, fetched into the cache if it is not there.
/// `spec` is a series (`6.1`, `6.12`: the newest generic amd64 build apt
/// knows of, or, if apt knows none, the newest cached one) or a release
/// (`6.1.0-57-amd64`, `6.12.118+deb12-amd64`; `-amd64` may be left off).
pub fn prepare(spec: &str) -> Result<Kernel> {
    let release = resolve(spec)?;
    let dir = cache_root().join(&release);
    if !dir.join("vmlinux").is_file() {
        fetch(&release, &dir)?;
    }
    let package_version = fs::read_to_string(dir.join("package-version"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(Kernel {
        modules_dir: dir.join("root/lib/modules").join(&release),
        vmlinux: dir.join("vmlinux"),
        release,
        package_version,
    })
}

// ---- which release ------------------------------------------------------------

fn is_series(spec: &str) -> bool {
    let mut parts = spec.split('.');
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()
}

fn resolve(spec: &str) -> Result<String> {
    if !is_series(spec) {
        let release = if spec.ends_with("-amd64") {
            spec.to_owned()
        } else {
            format!("{spec}-amd64")
        };
        if flavour_of(&release).is_some() {
            bail!(
                "{release}: only Debian's generic amd64 kernels are supported \
                 (the -cloud build has no 9p, which the VM's root filesystem needs)"
            );
        }
        return Ok(release);
    }
    let mut releases = in_series(spec, apt_releases()?);
    if releases.is_empty() && is_root() {
        // A fresh machine may not have read the package lists yet.
        run_on_stderr(Command::new("apt-get").arg("update"))?;
        releases = in_series(spec, apt_releases()?);
    }
    if releases.is_empty() {
        releases = in_series(spec, cached_releases());
        if !releases.is_empty() {
            eprintln!("apt knows no linux-image-{spec}.*-amd64-unsigned; using a cached kernel");
        }
    }
    releases.sort_by_key(|r| version_key(r));
    releases.pop().with_context(|| {
        format!("no Debian kernel of series {spec}: apt-cache knows no linux-image-{spec}.*-amd64-unsigned")
    })
}

/// Releases of every generic amd64 kernel package apt knows of.
fn apt_releases() -> Result<Vec<String>> {
    let names = output_on_stderr(Command::new("apt-cache").args(["pkgnames", "linux-image-"]))?;
    Ok(names
        .lines()
        .filter_map(generic_release_of_package)
        .collect())
}

fn cached_releases() -> Vec<String> {
    let Ok(entries) = fs::read_dir(cache_root()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().join("vmlinux").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

/// `linux-image-6.1.0-57-amd64-unsigned` → `6.1.0-57-amd64`; `None` for
/// anything else, such as the `-cloud` and `-rt` flavours or meta packages.
fn generic_release_of_package(package: &str) -> Option<String> {
    let release = package
        .trim()
        .strip_prefix("linux-image-")?
        .strip_suffix("-unsigned")?;
    (release.ends_with("-amd64")
        && flavour_of(release).is_none()
        && release.starts_with(|c: char| c.is_ascii_digit()))
    .then(|| release.to_owned())
}

/// `6.1.0-57-cloud-amd64` → `cloud`: a word among the version's parts.
fn flavour_of(release: &str) -> Option<&str> {
    let base = release.strip_suffix("-amd64").unwrap_or(release);
    base.split('-')
        .find(|part| part.chars().all(|c| c.is_ascii_alphabetic()))
}

/// Whether `release` belongs to `series`: `6.1.0-57-amd64` to `6.1`, not to `6.12`.
fn in_series(series: &str, releases: Vec<String>) -> Vec<String> {
    releases
        .into_iter()
        .filter(|release| {
            let upstream = release.split(['-', '+']).next().unwrap_or_default();
            upstream == series || upstream.starts_with(&format!("{series}."))
        })
        .collect()
}

/// The numbers in a release, in order, for finding the newest:
/// `6.1.0-57-amd64` → [6, 1, 0, 57]; `6.12.118+deb12-amd64` → [6, 12, 118, 12].
fn version_key(release: &str) -> Vec<u64> {
    release
        .strip_suffix("-amd64")
        .unwrap_or(release)
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

// ---- fetching and unpacking ---------------------------------------------------

/// Removes a half-made cache entry unless it was completed.
struct PartialDir {
    path: PathBuf,
    completed: bool,
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if !self.completed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn fetch(release: &str, dir: &Path) -> Result<()> {
    let package = format!("linux-image-{release}-unsigned");
    let root = cache_root();
    eprintln!(
        "\n==> Kernel {release} is not cached in {}: fetching {package}",
        root.display()
    );
    fs::create_dir_all(&root).with_context(|| {
        format!(
            "creating the kernel cache {} (set {CACHE_ENV} to use another directory)",
            root.display()
        )
    })?;
    let mut partial = PartialDir {
        path: root.join(format!(".{release}.partial-{}", std::process::id())),
        completed: false,
    };
    remove_abandoned_fetches(&root, release);
    fs::create_dir(&partial.path)
        .with_context(|| format!("creating {}", partial.path.display()))?;

    run_on_stderr(
        Command::new("apt-get")
            .args(["download", &package])
            .current_dir(&partial.path),
    )
    .with_context(|| {
        format!("downloading {package} (is it in `apt-cache search linux-image-`?)")
    })?;
    let deb = fs::read_dir(&partial.path)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| {
            format!(
                "apt-get download left no .deb in {}",
                partial.path.display()
            )
        })?;

    let version = output_on_stderr(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Version"),
    )?;
    fs::write(partial.path.join("package-version"), version.trim())?;
    let unpacked = partial.path.join("root");
    run_on_stderr(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    // The package's postinst would run depmod; modprobe needs its index.
    run_on_stderr(Command::new(depmod()).arg("-b").arg(&unpacked).arg(release))?;
    extract_vmlinux(
        &unpacked.join("boot").join(format!("vmlinuz-{release}")),
        &partial.path.join("vmlinux"),
    )?;
    fs::remove_file(&deb)?;

    match fs::rename(&partial.path, dir) {
        Ok(()) => partial.completed = true,
        // Another run cached the same release meanwhile; ours goes.
        Err(_) if dir.join("vmlinux").is_file() => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!("renaming {} to {}", partial.path.display(), dir.display())
            });
        }
    }
    eprintln!("cached {release} in {}", dir.display());
    Ok(())
}

/// Removes the partial directories of fetches of `release` whose process
/// is gone (killed before it could clean up).
fn remove_abandoned_fetches(root: &Path, release: &str) {
    let prefix = format!(".{release}.partial-");
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        let ours = pid == std::process::id().to_string();
        if ours || !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// depmod is in /usr/sbin, which a non-login PATH may lack.
fn depmod() -> PathBuf {
    in_path("depmod")
        .or_else(|| Some(PathBuf::from("/usr/sbin/depmod")).filter(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from("/sbin/depmod"))
}

// ---- vmlinux out of the bzImage ---------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4,
}

impl Compression {
    fn from_magic(data: &[u8]) -> Option<Self> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|(_, compression)| *compression)
    }

    /// The tool that decompresses it (`TOOL -dc FILE`) and its file suffix.
    fn tool_and_suffix(self) -> (&'static str, &'static str) {
        match self {
            Compression::Gzip => ("gzip", "gz"),
            Compression::Xz => ("xz", "xz"),
            Compression::Zstd => ("zstd", "zst"),
            Compression::Lz4 => ("lz4", "lz4"),
        }
    }
}

/// The compressed kernel inside a bzImage.
#[derive(Debug, PartialEq, Eq)]
struct Payload<'a> {
    compression: Compression,
    /// The compressed stream alone.
    data: &'a [u8],
    /// The size of the ELF it unpacks to (the build appends it, 32-bit LE).
    unpacked_size: u32,
}

/// Finds the payload through the x86 boot header (protocol 2.08 and later:
/// `payload_offset` and `payload_length`) and tells its compression by its
/// magic bytes.
fn find_payload(image: &[u8]) -> Result<Payload<'_>> {
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if image.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        bail!("not a bzImage: no \"HdrS\" boot header");
    }
    let protocol = u16_at(0x206).unwrap_or(0);
    if protocol < 0x208 {
        bail!("boot protocol {protocol:#x} is older than 2.08: no payload fields");
    }
    let setup_sectors = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        bail!("bzImage header is cut short");
    };
    let start = (setup_sectors + 1) * 512 + offset as usize;
    let payload = image
        .get(start..start + length as usize)
        .filter(|p| p.len() > 4)
        .context("the bzImage's payload lies outside the file")?;
    let compression = Compression::from_magic(payload).with_context(|| {
        format!(
            "unknown compression of the kernel payload (starts {:02x?}); \
             gzip, xz, zstd and lz4 are supported",
            &payload[..payload.len().min(6)]
        )
    })?;
    let (data, size) = payload.split_at(payload.len() - 4);
    Ok(Payload {
        compression,
        data,
        unpacked_size: u32::from_le_bytes([size[0], size[1], size[2], size[3]]),
    })
}

/// Writes the ELF kernel inside the bzImage `vmlinuz` to `vmlinux`.
fn extract_vmlinux(vmlinuz: &Path, vmlinux: &Path) -> Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let payload = find_payload(&image).with_context(|| format!("in {}", vmlinuz.display()))?;
    let (tool, suffix) = payload.compression.tool_and_suffix();
    let compressed = vmlinux.with_extension(suffix);
    fs::write(&compressed, payload.data)?;

    let mut cmd = Command::new(tool);
    cmd.arg("-dc").arg(&compressed);
    eprintln!("$ {} > {}", show(&cmd), vmlinux.display());
    let out = fs::File::create(vmlinux)?;
    let status = cmd
        .stdout(Stdio::from(out))
        .status()
        .with_context(|| format!("cannot run {tool}: `cargo xtask setup` installs it"))?;
    fs::remove_file(&compressed)?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(&cmd));
    }
    let unpacked = fs::read(vmlinux)?;
    if !unpacked.starts_with(b"\x7fELF") || unpacked.len() != payload.unpacked_size as usize {
        bail!(
            "{} is not the kernel's ELF: {} bytes where the bzImage says {}",
            vmlinux.display(),
            unpacked.len(),
            payload.unpacked_size
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generic_amd64_packages_count() {
        let release = |p| generic_release_of_package(p);
        assert_eq!(
            release("linux-image-6.1.0-57-amd64-unsigned").as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(
            release("linux-image-6.12.118+deb12-amd64-unsigned").as_deref(),
            Some("6.12.118+deb12-amd64")
        );
        assert_eq!(release("linux-image-6.1.0-57-cloud-amd64-unsigned"), None);
        assert_eq!(
            release("linux-image-6.12.118+deb12-rt-amd64-unsigned"),
            None
        );
        assert_eq!(release("linux-image-6.1.0-57-amd64"), None);
        assert_eq!(release("linux-image-amd64-signed-template"), None);
    }

    #[test]
    fn a_series_picks_its_own_newest_release() {
        let releases: Vec<String> = [
            "6.1.0-9-amd64",
            "6.1.0-57-amd64",
            "6.1.0-10-amd64",
            "6.12.9+deb12-amd64",
            "6.12.118+deb12-amd64",
            "6.12.20+deb12-amd64",
        ]
        .map(String::from)
        .to_vec();
        let newest = |series| {
            let mut found = in_series(series, releases.clone());
            found.sort_by_key(|r| version_key(r));
            found.pop()
        };
        assert_eq!(newest("6.1").as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(newest("6.12").as_deref(), Some("6.12.118+deb12-amd64"));
        assert_eq!(newest("5.10"), None);
    }

    #[test]
    fn series_and_releases_are_told_apart() {
        assert!(is_series("6.1"));
        assert!(is_series("6.12"));
        assert!(!is_series("6.1.0-57-amd64"));
        assert!(!is_series("6"));
        assert_eq!(resolve("6.1.0-57").unwrap(), "6.1.0-57-amd64");
        assert!(resolve("6.1.0-57-cloud-amd64").is_err());
    }

    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sectors = 3u8;
        let offset = 16u32;
        let mut image = vec![0u8; (usize::from(setup_sectors) + 1) * 512 + offset as usize];
        image[0x1f1] = setup_sectors;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(b"trailing setup data");
        image
    }

    #[test]
    fn the_payload_is_found_through_the_boot_header() {
        let mut payload = vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3];
        payload.extend_from_slice(&1234u32.to_le_bytes());
        let image = fake_bzimage(&payload);
        let found = find_payload(&image).unwrap();
        assert_eq!(found.compression, Compression::Zstd);
        assert_eq!(found.data, &payload[..7]);
        assert_eq!(found.unpacked_size, 1234);
    }

    #[test]
    fn an_unknown_payload_or_image_is_refused() {
        let image = fake_bzimage(b"BZh91AY&SY....");
        assert!(
            find_payload(&image)
                .unwrap_err()
                .to_string()
                .contains("unknown compression")
        );
        assert!(find_payload(b"not a kernel").is_err());
    }
}
