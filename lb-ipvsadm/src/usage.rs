//! What `-h` and `-v` print.

/// What `-v` prints (and the first line of `-h`).
pub const IPVSADM_VERSION_LINE: &str = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)";


/// What `-h` prints, with `program` in the usage lines (for "ipvsadm",
/// byte for byte ipvsadm 1.31's).
pub fn usage(program: &str) -> String {
    let mut out = format!("{IPVSADM_VERSION_LINE}\nUsage:\n");
    for line in USAGE_LINES {
        out.push_str(&format!("  {program} {line}\n"));
    }
    out.push_str(USAGE_BODY);
    out
}

const USAGE_LINES: [&str; 13] = [
    "-A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]",
    "-D virtual-service",
    "-C",
    "-R",
    "-S [-n]",
    "-a|e virtual-service -r server-address [options]",
    "-d virtual-service -r server-address",
    "-L|l [virtual-service] [options]",
    "-Z [virtual-service]",
    "--set tcp tcpfin udp",
    "--start-daemon {master|backup} [daemon-options]",
    "--stop-daemon {master|backup}",
    "-h",
];

const USAGE_BODY: &str = concat!(
    "\n",
    "Commands:\n",
    "Either long or short options are allowed.\n",
    "  --add-service     -A        add virtual service with options\n",
    "  --edit-service    -E        edit virtual service with options\n",
    "  --delete-service  -D        delete virtual service\n",
    "  --clear           -C        clear the whole table\n",
    "  --restore         -R        restore rules from stdin\n",
    "  --save            -S        save rules to stdout\n",
    "  --add-server      -a        add real server with options\n",
    "  --edit-server     -e        edit real server with options\n",
    "  --delete-server   -d        delete real server\n",
    "  --list            -L|-l     list the table\n",
    "  --zero            -Z        zero counters in a service or all services\n",
    "  --set tcp tcpfin udp        set connection timeout values\n",
    "  --start-daemon              start connection sync daemon\n",
    "  --stop-daemon               stop connection sync daemon\n",
    "  --help            -h        display this help message\n",
    "\n",
    "virtual-service:\n",
    "  --tcp-service|-t  service-address   service-address is host[:port]\n",
    "  --udp-service|-u  service-address   service-address is host[:port]\n",
    "  --sctp-service    service-address   service-address is host[:port]\n",
    "  --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n",
    "\n",
    "Options:\n",
    "  --ipv6         -6                   fwmark entry uses IPv6\n",
    "  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh,\n",
    "                                      the default scheduler is wlc.\n",
    "  --pe            engine              alternate persistence engine may be sip,\n",
    "                                      not set by default.\n",
    "  --persistent   -p [timeout]         persistent service\n",
    "  --netmask      -M netmask           persistent granularity mask\n",
    "  --real-server  -r server-address    server-address is host (and port)\n",
    "  --gatewaying   -g                   gatewaying (direct routing) (default)\n",
    "  --ipip         -i                   ipip encapsulation (tunneling)\n",
    "  --masquerading -m                   masquerading (NAT)\n",
    "  --tun-type      type                one of ipip|gue|gre,\n",
    "                                      the default tunnel type is ipip.\n",
    "  --tun-port      port                tunnel destination port\n",
    "  --tun-nocsum                        tunnel encapsulation without checksum\n",
    "  --tun-csum                          tunnel encapsulation with checksum\n",
    "  --tun-remcsum                       tunnel encapsulation with remote checksum\n",
    "  --weight       -w weight            capacity of real server\n",
    "  --u-threshold  -x uthreshold        upper threshold of connections\n",
    "  --l-threshold  -y lthreshold        lower threshold of connections\n",
    "  --connection   -c                   output of current IPVS connections\n",
    "  --timeout                           output of timeout (tcp tcpfin udp)\n",
    "  --daemon                            output of daemon information\n",
    "  --stats                             output of statistics information\n",
    "  --rate                              output of rate information\n",
    "  --exact                             expand numbers (display exact values)\n",
    "  --thresholds                        output of thresholds information\n",
    "  --persistent-conn                   output of persistent connection info\n",
    "  --tun-info                          output of tunnel information\n",
    "  --nosort                            disable sorting output of service/server entries\n",
    "  --sort                              does nothing, for backwards compatibility\n",
    "  --ops          -o                   one-packet scheduling\n",
    "  --numeric      -n                   numeric output of addresses and ports\n",
    "  --sched-flags  -b flags             scheduler flags (comma-separated)\n",
    "Daemon Options:\n",
    "  --syncid sid                        syncid for connection sync (default=255)\n",
    "  --sync-maxlen length                Max sync message length (default=1472)\n",
    "  --mcast-interface interface         multicast interface for connection sync\n",
    "  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)\n",
    "  --mcast-port port                   UDP port (default=8848)\n",
    "  --mcast-ttl ttl                     Multicast TTL (default=1)\n",
);

/// One option of the help text, for lbctl's man page and completions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageOption {
    /// Without the dashes.
    pub long: String,
    /// Its letters (`-L|-l`: both).
    pub short: Vec<char>,
    /// What it takes (`scheduler`, `tcp tcpfin udp`), if anything.
    pub value: Option<String>,
    pub help: String,
    /// The heading it is listed under ("Commands", "Options", ...).
    pub group: String,
}

/// The options [`usage`] lists, read from its own text: the help and the
/// man page say the same.
pub fn options() -> Vec<UsageOption> {
    let mut out: Vec<UsageOption> = Vec::new();
    let mut group = String::new();
    for line in USAGE_BODY.lines() {
        if !line.starts_with(' ') {
            if let Some(heading) = line.strip_suffix(':') {
                group = heading.to_string();
            }
            continue;
        }
        let text = line.trim();
        if !text.starts_with("--") {
            // The help of the option above, continued.
            if let Some(last) = out.last_mut() {
                last.help = format!("{} {text}", last.help);
            }
            continue;
        }
        // The help is what follows the last run of two spaces.
        let (spec, help) = match text.rfind("  ") {
            Some(i) => (text[..i].trim(), text[i..].trim()),
            None => (text, ""),
        };
        let mut words = spec.split_whitespace();
        let first = words.next().unwrap_or_default();
        let (long, mut short) = match first.split_once('|') {
            Some((long, letters)) => (long, letters.trim_start_matches('-').chars().collect()),
            None => (first, Vec::new()),
        };
        let mut value = Vec::new();
        for word in words {
            match word.strip_prefix('-') {
                Some(letters) if value.is_empty() && word.len() <= 5 => {
                    short.extend(letters.split('|').filter_map(|l| l.trim_start_matches('-').chars().next()))
                }
                _ => value.push(word),
            }
        }
        out.push(UsageOption {
            long: long.trim_start_matches("--").to_string(),
            short,
            value: (!value.is_empty()).then(|| value.join(" ")),
            help: help.to_string(),
            group: group.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_from_the_help() {
        let options = options();
        let find = |long: &str| options.iter().find(|o| o.long == long).unwrap().clone();
        let list = find("list");
        assert_eq!((list.short, list.value, list.help.as_str()), (vec!['L', 'l'], None, "list the table"));
        assert_eq!(list.group, "Commands");
        let scheduler = find("scheduler");
        assert_eq!((scheduler.short, scheduler.value.as_deref()), (vec!['s'], Some("scheduler")));
        assert!(scheduler.help.ends_with("the default scheduler is wlc."), "{}", scheduler.help);
        assert_eq!(find("tcp-service").short, ['t']);
        assert_eq!(find("set").value.as_deref(), Some("tcp tcpfin udp"));
        assert_eq!((find("syncid").value.as_deref(), find("syncid").group.as_str()), (Some("sid"), "Daemon Options"));
        assert_eq!((find("tun-nocsum").short, find("tun-nocsum").value), (vec![], None));
        assert_eq!(find("persistent").value.as_deref(), Some("[timeout]"));
    }

    #[test]
    fn usage_is_ipvsadms_help() {
        let text = usage("ipvsadm");
        assert!(
            text.starts_with("ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\nUsage:\n  ipvsadm -A|E")
        );
        assert!(usage("lbctl").contains("\n  lbctl -L|l [virtual-service] [options]\n"));
        assert!(text.ends_with("  --mcast-ttl ttl                     Multicast TTL (default=1)\n"));
        // The literal `ipvsadm -h` output, where the reference material is.
        match std::fs::read_to_string("/work/shared/reference/ipvsadm/help.txt") {
            Ok(reference) => assert_eq!(text, reference),
            Err(e) => eprintln!("help.txt not compared: {e}"),
        }
    }
}
