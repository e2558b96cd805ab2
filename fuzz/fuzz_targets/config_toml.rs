//! The TOML config, `Config::parse`: any text, as if read from a file.
//!
//! Beyond "no panic": a refused config says why, each error naming the
//! file it was given and, where it has one, a line of the text.

#![no_main]

use std::path::Path;

use lb_userspace::config::Config;
use libfuzzer_sys::fuzz_target;

/// No allocation above 1 MiB (see `lb_fuzz::Bounded`).
#[global_allocator]
static ALLOC: lb_fuzz::Bounded = lb_fuzz::Bounded::mib(1);

const FILE: &str = "/etc/lb/lb.toml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.split('\n').count();
    match Config::parse(&text, Path::new(FILE)) {
        Ok(config) => assert_eq!(config.path, Path::new(FILE)),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a reason");
            for e in &errors.0 {
                assert_eq!(e.file, FILE);
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
                }
            }
            let _ = errors.to_string();
        }
    }
});
