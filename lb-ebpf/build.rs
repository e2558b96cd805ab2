use which::which;

/// Rebuild when bpf-linker changes (it does the code generation), and ask it
/// for BPF ISA v3: 32-bit sub-registers and atomic fetch-and-add, which the
/// scheduler position counter needs.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());

}
