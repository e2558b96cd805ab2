//! popt's option parsing (`poptGetNextOpt`, popt 1.18) over ipvsadm's
//! option table: short options clustered or not, long ones with `=value` or
//! the next word, optional values, leftovers, `--`.

/// ipvsadm's options, as popt returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opt {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    FullNat,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

/// Whether an option takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    Optional,
}

/// ipvsadm's popt table: long name, short name, argument.
const OPTIONS: [(&str, Option<char>, Arg, Opt); 59] = [
    ("add-service", Some('A'), Arg::None, Opt::AddService),
    ("edit-service", Some('E'), Arg::None, Opt::EditService),
    ("delete-service", Some('D'), Arg::None, Opt::DeleteService),
    ("clear", Some('C'), Arg::None, Opt::Clear),
    ("list", Some('L'), Arg::None, Opt::List),
    ("list", Some('l'), Arg::None, Opt::List),
    ("zero", Some('Z'), Arg::None, Opt::Zero),
    ("add-server", Some('a'), Arg::None, Opt::AddServer),
    ("edit-server", Some('e'), Arg::None, Opt::EditServer),
    ("delete-server", Some('d'), Arg::None, Opt::DeleteServer),
    ("set", None, Arg::None, Opt::Set),
    ("help", Some('h'), Arg::None, Opt::Help),
    ("version", Some('v'), Arg::None, Opt::Version),
    ("restore", Some('R'), Arg::None, Opt::Restore),
    ("save", Some('S'), Arg::None, Opt::Save),
    ("start-daemon", None, Arg::Required, Opt::StartDaemon),
    ("stop-daemon", None, Arg::Required, Opt::StopDaemon),
    ("tcp-service", Some('t'), Arg::Required, Opt::Tcp),
    ("udp-service", Some('u'), Arg::Required, Opt::Udp),
    ("sctp-service", None, Arg::Required, Opt::Sctp),
    ("fwmark-service", Some('f'), Arg::Required, Opt::Fwmark),
    ("scheduler", Some('s'), Arg::Required, Opt::Scheduler),
    ("persistent", Some('p'), Arg::Optional, Opt::Persistent),
    ("netmask", Some('M'), Arg::Required, Opt::Netmask),
    ("real-server", Some('r'), Arg::Required, Opt::RealServer),
    ("masquerading", Some('m'), Arg::None, Opt::Masquerading),
    // lbctl's own: ipvsadm has no full NAT.
    ("fullnat", None, Arg::None, Opt::FullNat),
    ("ipip", Some('i'), Arg::None, Opt::Ipip),
    ("gatewaying", Some('g'), Arg::None, Opt::Gatewaying),
    ("weight", Some('w'), Arg::Required, Opt::Weight),
    ("u-threshold", Some('x'), Arg::Required, Opt::UThreshold),
    ("l-threshold", Some('y'), Arg::Required, Opt::LThreshold),
    ("numeric", Some('n'), Arg::None, Opt::Numeric),
    ("connection", Some('c'), Arg::None, Opt::Connection),
    ("mcast-interface", None, Arg::Required, Opt::McastInterface),
    ("syncid", None, Arg::Required, Opt::SyncId),
    ("timeout", None, Arg::None, Opt::Timeout),
    ("daemon", None, Arg::None, Opt::Daemon),
    ("stats", None, Arg::None, Opt::Stats),
    ("rate", None, Arg::None, Opt::Rate),
    ("thresholds", None, Arg::None, Opt::Thresholds),
    ("persistent-conn", None, Arg::None, Opt::PersistentConn),
    ("nosort", None, Arg::None, Opt::NoSort),
    ("sort", None, Arg::None, Opt::Sort),
    ("exact", Some('X'), Arg::None, Opt::Exact),
    ("ipv6", Some('6'), Arg::None, Opt::Ipv6),
    ("ops", Some('o'), Arg::None, Opt::Ops),
    ("pe", None, Arg::Required, Opt::Pe),
    ("sched-flags", Some('b'), Arg::Required, Opt::SchedFlags),
    ("mcast-group", None, Arg::Required, Opt::McastGroup),
    ("mcast-port", None, Arg::Required, Opt::McastPort),
    ("mcast-ttl", None, Arg::Required, Opt::McastTtl),
    ("sync-maxlen", None, Arg::Required, Opt::SyncMaxlen),
    ("tun-info", None, Arg::None, Opt::TunInfo),
    ("tun-type", None, Arg::Required, Opt::TunType),
    ("tun-port", None, Arg::Required, Opt::TunPort),
    ("tun-nocsum", None, Arg::None, Opt::TunNocsum),
    ("tun-csum", None, Arg::None, Opt::TunCsum),
    ("tun-remcsum", None, Arg::None, Opt::TunRemcsum),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoptError {
    BadOption,
    NoArg,
    UnwantedArg,
}

impl PoptError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::BadOption => "unknown option",
            Self::NoArg => "missing argument",
            Self::UnwantedArg => "option does not take an argument",
        }
    }
}

/// popt's `poptGetNextOpt` (1.18) over ipvsadm's table.
pub(crate) struct Popt<'a> {
    argv: &'a [String],
    /// Next word to read.
    next: usize,
    /// Inside a cluster of short options: word and byte offset of the next
    /// option letter.
    cluster: Option<(usize, usize)>,
    /// After `--`: every word is a leftover.
    rest_leftover: bool,
    pub(crate) leftovers: Vec<&'a str>,
}

pub(crate) type OptArg<'a> = (Opt, Option<&'a str>);

impl<'a> Popt<'a> {
    pub(crate) fn new(argv: &'a [String]) -> Self {
        Self { argv, next: 0, cluster: None, rest_leftover: false, leftovers: Vec::new() }
    }

    /// The word popt names in its errors (and ipvsadm in "invalid option"):
    /// the last one read.
    pub(crate) fn bad_option(&self) -> &'a str {
        self.argv.get(self.next.wrapping_sub(1)).map_or("", String::as_str)
    }

    pub(crate) fn next_opt(&mut self) -> Result<Option<OptArg<'a>>, PoptError> {
        loop {
            if let Some((word, offset)) = self.cluster.take() {
                let rest = &self.argv[word][offset..];
                let Some(letter) = rest.chars().next() else { return Err(PoptError::BadOption) };
                let (_, _, arg, opt) = *OPTIONS.iter().find(|o| o.1 == Some(letter)).ok_or(PoptError::BadOption)?;
                let after = offset + letter.len_utf8();
                let more = &self.argv[word][after..];
                if arg == Arg::None {
                    // -L=x: popt 1.18 refuses a value for a flag.
                    if more.starts_with('=') {
                        return Err(PoptError::UnwantedArg);
                    }
                    self.cluster = (!more.is_empty()).then_some((word, after));
                    return Ok(Some((opt, None)));
                }
                if !more.is_empty() {
                    // -w3, and -w=3.
                    return Ok(Some((opt, Some(more.strip_prefix('=').unwrap_or(more)))));
                }
                return self.take_value(arg).map(|value| Some((opt, value)));
            }

            let Some(word) = self.argv.get(self.next) else { return Ok(None) };
            self.next += 1;
            if self.rest_leftover || !word.starts_with('-') || word == "-" {
                self.leftovers.push(word);
                continue;
            }
            if word == "--" {
                self.rest_leftover = true;
                continue;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (long, None),
                };
                let (_, _, arg, opt) = *OPTIONS.iter().find(|o| o.0 == name).ok_or(PoptError::BadOption)?;
                return match (arg, value) {
                    (Arg::None, Some(_)) => Err(PoptError::UnwantedArg),
                    (Arg::None, None) => Ok(Some((opt, None))),
                    (_, Some(value)) => Ok(Some((opt, Some(value)))),
                    (_, None) => self.take_value(arg).map(|value| Some((opt, value))),
                };
            }
            self.cluster = Some((self.next - 1, 1));
        }
    }

    /// An option's value from the next word: a required one whatever it is,
    /// an optional one unless it starts with '-'.
    fn take_value(&mut self, arg: Arg) -> Result<Option<&'a str>, PoptError> {
        match self.argv.get(self.next) {
            None if arg == Arg::Optional => Ok(None),
            None => Err(PoptError::NoArg),
            Some(word) if arg == Arg::Optional && word.starts_with('-') => Ok(None),
            Some(word) => {
                self.next += 1;
                Ok(Some(word))
            }
        }
    }
}
