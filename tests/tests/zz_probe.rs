use lb_userspace::datapath::{Datapath, LoadOptions};
#[test]
fn probe() {
    let t = std::time::Instant::now();
    let d = Datapath::load(&LoadOptions { conn_table_size: 65536, ..Default::default() });
    match d {
        Ok(d) => { let info = d.program().info().unwrap();
    eprintln!("load {:?} verified {:?}", t.elapsed(), info.verified_instruction_count()); }
        Err(e) => { let s = format!("{e:?}"); std::fs::write("/tmp/vlog.txt", &s).unwrap(); let n = s.len(); eprintln!("ERR {:?} ... {}", t.elapsed(), &s[n.saturating_sub(1000)..]); }
    }
}
