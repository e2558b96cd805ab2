fn main() {
    let mut ebpf = aya::EbpfLoader::new().verifier_log_level(aya::VerifierLogLevel::STATS).load(lb_userspace::EBPF_OBJECT).unwrap();
    let prog: &mut aya::programs::Xdp = ebpf.program_mut("lb_xdp").unwrap().try_into().unwrap();
    match prog.load() { Ok(()) => println!("loaded"), Err(e) => println!("{e:?}") }
}
