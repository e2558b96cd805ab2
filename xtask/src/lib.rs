//! Shared parts of `cargo xtask` (bin `xtask`) and the lab demo (bin
//! `lb-demo`): running and printing commands, setting up the machine, the
//! demo's options, running commands in other kernels under QEMU (`vm`),
//! and the fuzz targets (`fuzz`).

pub mod deb;
pub mod fuzz;
pub mod matrix;
pub mod setup;
pub mod util;
pub mod vm;

/// Options of `cargo xtask demo`, handed on to the `lb-demo` binary.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// How many HTTP requests the client sends to the VIP.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub requests: u32,
    /// The scheduler: wrr (rs1 gets weight 3, the others 1) or rr.
    #[arg(long, default_value = "wrr", value_parser = ["wrr", "rr"])]
    pub scheduler: String,
    /// How many real servers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub reals: u32,
}

impl DemoArgs {
    /// The same options as command-line arguments.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--requests".into(),
            self.requests.to_string(),
            "--scheduler".into(),
            self.scheduler.clone(),
            "--reals".into(),
            self.reals.to_string(),
        ]
    }
}
