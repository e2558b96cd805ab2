//! The package's man pages and shell completions, made from what they
//! describe: a command line (clap's definition of it) or the README's
//! reference sections (`lb.toml(5)`), so they cannot drift from the code.
//!
//! Layout under the output directory: `man/NAME.SECTION` and
//! `completions/{NAME.bash,_NAME,NAME.fish}`.

mod markdown;

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use clap_complete::Shell;

pub use markdown::man_from_markdown;

/// `command`'s man page (in `section`) and its bash, zsh and fish
/// completions, into `out`.
pub fn write_cli(command: clap::Command, section: &str, out: &Path) -> Result<()> {
    let mut command = command;
    command.build();
    let name = command.get_name().to_string();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).section(section).render(&mut page)?;
    write(&out.join("man").join(format!("{name}.{section}")), &page)?;
    for (shell, file) in [(Shell::Bash, format!("{name}.bash")), (Shell::Zsh, format!("_{name}")), (Shell::Fish, format!("{name}.fish"))] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, name.clone(), &mut script);
        write(&out.join("completions").join(file), &script)?;
    }
    Ok(())
}

/// Writes `bytes` to `path`, making its directory.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}
