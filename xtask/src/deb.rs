//! `cargo xtask deb`: the Debian package, built with dpkg-deb from a
//! staged tree (no other packaging tool to install): lbd and lbctl, the
//! systemd units, an example /etc/lb/lb.toml (a conffile), man pages
//! lbd(8) and lbctl(8) (from their command lines: `lbd docs`, `lbctl
//! --docs`) and lb.toml(5) (from the README's config sections), and bash,
//! zsh and fish completions, and the maintainer scripts of contrib/debian.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, run, step, target_dir, workspace_root};

/// contrib/debian's maintainer scripts: systemd's daemon-reload after
/// install and removal, a planned restart (SIGUSR2) on upgrade, a stop on
/// removal.
const MAINTAINER_SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// The README's sections lb.toml(5) is made of: from the first heading to
/// (not including) the second.
const CONFIG_SECTIONS: (&str, &str) = ("### Config\n", "## lbctl\n");

#[derive(clap::Args, Clone, Debug)]
pub struct DebArgs {
    /// Package the debug binaries already built (fast, for tests) instead
    /// of a release build.
    #[arg(long)]
    pub debug: bool,
}

/// Builds the package; returns its path (target/debian/lb_VERSION_ARCH.deb).
pub fn deb(args: &DebArgs) -> Result<PathBuf> {
    let profile = if args.debug { "debug" } else { "release" };
    step(&format!("Building lbd and lbctl ({profile})"));
    let mut build = cargo();
    build.args(["build", "-p", "lb-userspace", "-p", "lbctl", "--bins"]);
    if !args.debug {
        build.arg("--release");
    }
    run(&mut build).context("building lbd and lbctl")?;
    let bins = target_dir().join(profile);
    let root = workspace_root();
    let out = target_dir().join("debian");
    let stage = out.join("stage");
    let _ = fs::remove_dir_all(&stage);

    step("Staging the package");
    install(&bins.join("lbd"), &stage.join("usr/sbin/lbd"), 0o755)?;
    install(&bins.join("lbctl"), &stage.join("usr/sbin/lbctl"), 0o755)?;
    for unit in ["lbd.service", "lbd-decap@.service"] {
        install(&root.join("contrib/systemd").join(unit), &stage.join("lib/systemd/system").join(unit), 0o644)?;
    }
    install(&root.join("contrib/lb.toml"), &stage.join("etc/lb/lb.toml"), 0o644)?;
    let docs = out.join("docs");
    let _ = fs::remove_dir_all(&docs);
    run(Command::new(bins.join("lbd")).arg("docs").arg(&docs))?;
    run(Command::new(bins.join("lbctl")).arg("--docs").arg(&docs))?;
    let readme = fs::read_to_string(root.join("README.md")).context("read README.md")?;
    let page = lb_docs::man_from_markdown("lb.toml", "5", "configuration of lbd, the XDP load balancer", &today()?, config_sections(&readme)?);
    lb_docs::write(&docs.join("man/lb.toml.5"), page.as_bytes())?;
    for (page, section) in [("lbd.8", "8"), ("lbctl.8", "8"), ("lb.toml.5", "5")] {
        let dest = stage.join(format!("usr/share/man/man{section}/{page}.gz"));
        gzip(&docs.join("man").join(page), &dest)?;
    }
    for name in ["lbd", "lbctl"] {
        let completions = docs.join("completions");
        install(&completions.join(format!("{name}.bash")), &stage.join("usr/share/bash-completion/completions").join(name), 0o644)?;
        install(&completions.join(format!("_{name}")), &stage.join("usr/share/zsh/vendor-completions").join(format!("_{name}")), 0o644)?;
        install(&completions.join(format!("{name}.fish")), &stage.join("usr/share/fish/vendor_completions.d").join(format!("{name}.fish")), 0o644)?;
    }
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    lb_docs::write(&stage.join("DEBIAN/control"), control(version, &arch, &stage)?.as_bytes())?;
    lb_docs::write(&stage.join("DEBIAN/conffiles"), b"/etc/lb/lb.toml\n")?;
    for script in MAINTAINER_SCRIPTS {
        install(&root.join("contrib/debian").join(script), &stage.join("DEBIAN").join(script), 0o755)?;
    }

    let deb = out.join(format!("lb_{version}_{arch}.deb"));
    // A debug package is for tests: big binaries, compressed fast.
    let compression: &[&str] = if args.debug { &["-Zgzip", "-z1"] } else { &["-Zxz"] };
    run(Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).args(compression).arg(&stage).arg(&deb))?;
    println!("\n{}", deb.display());
    Ok(deb)
}

fn control(version: &str, arch: &str, stage: &Path) -> Result<String> {
    let kib = output(Command::new("du").args(["-sk", "--exclude=DEBIAN"]).arg(stage))?;
    let size = kib.split_whitespace().next().unwrap_or("0");
    Ok(format!(
        "Package: lb\nVersion: {version}\nArchitecture: {arch}\nMaintainer: lb developers <root@localhost>\n\
         Installed-Size: {size}\nDepends: libc6\nSection: net\nPriority: optional\n\
         Description: XDP layer-4 load balancer for LVS operators\n \
         lbd loads an XDP program that schedules connections with the LVS schedulers and forwards\n \
         them by direct routing, IP-in-IP or NAT; lbctl shows and changes its tables with\n \
         ipvsadm's commands and output. VRRP, connection sync and health checks included.\n"
    ))
}

/// The README's reference for the config file.
fn config_sections(readme: &str) -> Result<&str> {
    let (from, to) = CONFIG_SECTIONS;
    let start = readme.find(from).with_context(|| format!("README.md has no {from:?}"))?;
    let end = readme[start..].find(to).map_or(readme.len(), |e| start + e);
    Ok(&readme[start..end])
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn gzip(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    let out = Command::new("gzip").args(["-9n", "-c"]).arg(from).output().context("run gzip")?;
    if !out.status.success() {
        bail!("gzip {}: {}", from.display(), String::from_utf8_lossy(&out.stderr));
    }
    fs::write(to, out.stdout)?;
    Ok(())
}

fn today() -> Result<String> {
    output(Command::new("date").args(["-u", "+%Y-%m-%d"]))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
