//! The demo behind `cargo xtask demo`: a whole LVS-DR cluster in network
//! namespaces (lb-tests' lab), lbd balancing HTTP requests across it, and
//! lbctl showing the result. Everything is torn down at the end.
//!
//! Needs lbd, lbctl and lab-server built (`cargo xtask demo` does that).
//! If it is interrupted, the next lab run removes the leftovers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use lb_tests::bins::find_binary;
use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::HTTP_PORT;
use lb_tests::{Lab, LabSpec};
use xtask::DemoArgs;
use xtask::util::{require_root, step};

/// Where this demo's lbd pins its maps and XDP link (removed at the end).
const PIN_PATH: &str = "/sys/fs/bpf/lb-demo";
/// The weight rs1 gets with wrr (the others get 1).
const WRR_HEAVY_WEIGHT: u32 = 3;

#[derive(Parser)]
#[command(
    name = "lb-demo",
    about = "lbd balancing HTTP in a namespace lab (run by `cargo xtask demo`)"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match demo(&cli.demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> Result<()> {
    require_root("the demo")?;
    refuse_if_another_demo_runs()?;
    let lab_server = find_binary("lab-server")?;

    println!(
        "\nThis demo builds a small LVS direct-routing cluster inside network namespaces,\n\
         starts lbd (the XDP load balancer) on its director, sends {} HTTP requests to the\n\
         virtual IP, shows how lbd spread them ({}), then removes everything again.",
        args.requests, args.scheduler
    );

    step("1. Building the namespace lab");
    println!(
        "Each machine is a Linux network namespace with one interface, eth0, cabled (veth)\n\
         to a bridge br0 in a 'switch' namespace. Nothing touches this machine's own network."
    );
    let lab =
        Lab::build(LabSpec::new("demo").reals(args.reals as usize)).context("building the lab")?;
    print_topology(&lab);

    step("2. Starting an HTTP server on each real server");
    lab.start_http_servers_with(&lab_server)
        .context("starting lab-server")?;
    for real in lab.reals() {
        println!(
            "  {:<4} {}:{HTTP_PORT}  lab-server answers every request with its name (\"{}\")",
            real.name, real.ip, real.name
        );
    }
    println!(
        "Each answers the client directly on its own address; next, lbd puts them behind the VIP."
    );

    let mut director = Director::new(&lab).context("preparing lbd")?;
    let result = with_director(&lab, &mut director, args);
    if result.is_err() {
        let log = director.log();
        if !log.trim().is_empty() {
            eprintln!("\nlbd's log:\n{}", indent(&log));
        }
    }
    result?;

    step("10. Tearing down the lab");
    println!(
        "Deleting the lab's namespaces (this kills the HTTP servers and removes every veth and the bridge)."
    );
    let namespaces = lab.namespaces();
    drop(director);
    drop(lab);
    for ns in namespaces {
        println!("  removed namespace {ns}");
    }
    if Path::new(PIN_PATH).exists() {
        println!("  warning: {PIN_PATH} is still there");
    }
    println!("\nDone. `cargo xtask demo --help` shows the options (scheduler, requests, reals).");
    Ok(())
}

/// Steps 3 to 9: config, lbd, traffic, lbctl, stopping lbd.
fn with_director(lab: &Lab, director: &mut Director, args: &DemoArgs) -> Result<()> {
    step("3. Writing lbd's config");
    director.pin_path = PathBuf::from(PIN_PATH);
    remove_leftover_pins()?;
    let mut service = ServiceSpec::lab_http(lab, &args.scheduler);
    if args.scheduler == "wrr" {
        service.set_weight(lab.real(0).ip, WRR_HEAVY_WEIGHT);
    }
    director
        .write_config(&[service.clone()])
        .context("writing lbd's config")?;
    println!("{}:", director.config_path.display());
    let text = std::fs::read_to_string(&director.config_path)?;
    println!("{}", indent(&text));
    println!(
        "One TCP service, VIP {}:{HTTP_PORT}, scheduler {}, forwarding dr (direct routing): lbd's XDP\n\
         program on the director's eth0 rewrites only the destination MAC of a packet for the VIP\n\
         and sends it back out to the chosen real server, which answers the client itself.",
        lab.vip(),
        args.scheduler
    );

    step("4. Starting lbd in the director namespace");
    println!(
        "$ nsenter --net=/run/netns/{} -- lbd --config {}",
        lab.director().ns,
        director.config_path.display()
    );
    director.start().context("starting lbd")?;
    println!(
        "lbd is running (pid {}), its XDP program attached to {}'s eth0;\n\
         it pins its maps under {PIN_PATH} and answers lbctl on {}.",
        director.pid().unwrap_or_default(),
        lab.director().name,
        director.socket.display()
    );
    println!("lbd's log so far:\n{}", indent(&director.log()));

    step("5. The table before any traffic");
    lbctl(director, &["-L", "-n"])?;

    step(&format!(
        "6. Sending {} HTTP requests from the client to the VIP",
        args.requests
    ));
    let url = format!("http://{}:{HTTP_PORT}/", lab.vip());
    println!("Each is a new TCP connection, so lbd schedules each one anew.");
    let mut answers: BTreeMap<String, u32> =
        lab.reals().iter().map(|r| (r.name.clone(), 0)).collect();
    for i in 1..=args.requests {
        let body = lab
            .curl(&url)
            .with_context(|| format!("request {i}: curl {url} from the client"))?;
        let who = body.trim().to_owned();
        println!("  request {i:>3}: client$ curl {url}  ->  answered by {who}");
        *answers.entry(who).or_default() += 1;
    }
    println!("\nWho answered:");
    for (name, n) in &answers {
        let weight = lab
            .reals()
            .iter()
            .find(|r| &r.name == name)
            .and_then(|r| service.reals.iter().find(|(ip, _)| *ip == r.ip))
            .map(|(_, w)| format!("weight {w}"))
            .unwrap_or_else(|| "not a real server of the lab!".to_owned());
        println!("  {name:<4} {n:>4} requests  ({weight})");
    }

    step("7. lbd's counters per service and real server");
    println!(
        "Conns = connections scheduled; InPkts/InBytes = packets the director forwarded. OutPkts stay 0:"
    );
    println!("in direct routing the replies go from the real servers straight to the client.");
    lbctl(director, &["-L", "-n", "--stats"])?;

    step("8. lbd's connection table");
    println!(
        "One entry per client connection, as `ipvsadm -L -n -c` shows it. The state is what the\n\
         director can tell from the client's packets alone: in DR it never sees the replies."
    );
    lbctl(director, &["-L", "-n", "-c"])?;

    step("9. Stopping lbd (SIGTERM)");
    let status = director.stop().context("stopping lbd")?;
    println!("lbd exited ({status}); on SIGTERM it detaches XDP and removes its pins and socket.");
    println!("lbd's whole log:\n{}", indent(&director.log()));
    if !status.success() {
        bail!("lbd exited with {status} on SIGTERM");
    }
    Ok(())
}

/// Runs lbctl (talking to lbd's control socket) and prints what it says.
fn lbctl(director: &Director, args: &[&str]) -> Result<()> {
    println!(
        "$ lbctl {}   (with --socket {})",
        args.join(" "),
        director.socket.display()
    );
    let out = director.lbctl(args)?;
    print!("{}", indent(&out));
    Ok(())
}

fn print_topology(lab: &Lab) {
    let (net, len) = lab.subnet();
    let client = lab.client();
    let director = lab.director();
    println!(
        "\nTopology (subnet {net}/{len}, namespaces {}-*):\n",
        lab.id()
    );
    println!("                         +-----------------------------+");
    println!("                         |  switch: bridge br0         |");
    println!("                         +-----------------------------+");
    println!("                           |        |        |");
    println!("  client   {:<12} ---+        |        |", client.ip);
    println!(
        "  director {:<12} ------------+        |    + VIP {}/32 on eth0; lbd (XDP) on eth0",
        director.ip,
        lab.vip()
    );
    for real in lab.reals() {
        println!(
            "  {:<8} {:<12} ---------------------+    VIP on lo, arp_ignore=1, arp_announce=2",
            real.name, real.ip
        );
    }
    println!(
        "\nLVS direct routing: the client sends to the VIP {vip}; only the director answers ARP for it,\n\
         so requests reach the director. The real servers have the VIP on lo (so they accept packets\n\
         for it) but never announce it, and answer the client directly with the VIP as source.",
        vip = lab.vip()
    );
}

/// Pins a crashed earlier demo left: lbd would adopt its maps.
fn remove_leftover_pins() -> Result<()> {
    let pins = Path::new(PIN_PATH);
    if pins.exists() {
        println!("removing {PIN_PATH}, left behind by an earlier demo");
        std::fs::remove_dir_all(pins).with_context(|| format!("removing {PIN_PATH}"))?;
    }
    Ok(())
}

/// Two demos would share (and remove) each other's pins.
fn refuse_if_another_demo_runs() -> Result<()> {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
    {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "lb-demo") {
            bail!("another lb-demo is running (pid {pid}); wait for it to finish");
        }
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
