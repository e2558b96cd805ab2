// Included by the build scripts of lbd and lbctl: both print the commit
// they were built from in `--version`.

/// Sets `LB_COMMIT` for rustc: `$LB_COMMIT` if set (a build from a
/// tarball), else the checkout's short commit, else "unknown"; and has
/// cargo run the script again when HEAD moves.
fn emit_commit() {
    use std::process::Command;
    println!("cargo:rerun-if-env-changed=LB_COMMIT");
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = std::env::var("LB_COMMIT").ok().or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    println!("cargo:rustc-env=LB_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    // HEAD, the branch it points to (a loose ref, or packed): only files
    // that exist, as cargo runs the script every time for a missing one.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && std::path::Path::new(&path).is_file()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
