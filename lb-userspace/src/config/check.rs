//! The line-aware checker every table of the config is validated with
//! (`[director]`, `[[service]]`, `health_check`, `[[vrrp]]`, `[sync]`): one
//! error type naming file, line and dotted key, and the checks of values
//! that several tables share, each with one wording.

use std::{
    fmt,
    net::IpAddr,
    ops::{Range, RangeInclusive},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

/// One thing wrong with the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `service[1].real[0].weight`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything wrong with a config, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text being checked: its file name and where its lines start, to turn
/// a value's byte span into `file:line`.
pub struct Source {
    file: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(file: impl Into<String>, text: &str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { file: file.into(), line_starts }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line (from 1) of the byte at `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }
}

/// Collects every mistake while the tables are checked, so that all of them
/// are reported at once.
pub struct Checker<'s> {
    source: &'s Source,
    errors: Vec<ConfigError>,
}

impl<'s> Checker<'s> {
    pub fn new(source: &'s Source) -> Self {
        Self { source, errors: Vec::new() }
    }

    pub fn source(&self) -> &'s Source {
        self.source
    }

    /// A mistake in the value at `span`.
    pub fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.source.file.clone(),
            line: Some(self.source.line(span.start)),
            key: key.into(),
            message: message.into(),
        });
    }

    /// The line a table or value starts on.
    pub fn line(&self, span: &Range<usize>) -> usize {
        self.source.line(span.start)
    }

    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// Runs `check`, which reports its mistakes here; its value only if it
    /// found none.
    pub fn if_clean<T>(&mut self, check: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let before = self.errors.len();
        let value = check(self);
        (self.errors.len() == before).then_some(value)
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// Mistakes another checker of the same source found.
    pub fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    /// A string value parsed with `FromStr`, or an error at its line.
    pub fn parse<T: FromStr<Err = String>>(&mut self, value: &Spanned<String>, key: &str) -> Option<T> {
        match value.get_ref().parse() {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// A text that is not blank, `None` if not given or blank.
    pub fn text(&mut self, value: &Option<Spanned<String>>, key: &str) -> Option<String> {
        let value = value.as_ref()?;
        if value.get_ref().trim().is_empty() {
            self.error(value.span(), key, "must not be empty");
            return None;
        }
        Some(value.get_ref().clone())
    }

    /// Whether `value`, trimmed, can name a network interface; an error if
    /// not. The kernel's rules (`dev_valid_name`, net/core/dev.c): 1 to 15
    /// bytes, not "." or "..", no '/', ':' or white space.
    pub fn interface_name(&mut self, value: &Spanned<String>, key: &str) -> bool {
        let name = value.get_ref().trim();
        let valid = !name.is_empty()
            && name.len() < IFNAMSIZ
            && name != "."
            && name != ".."
            && !name.contains(['/', ':'])
            && !name.contains(char::is_whitespace);
        if !valid {
            self.error(value.span(), key, format!("\"{name}\" is not an interface name"));
        }
        valid
    }

    /// An integer within `range`: `default` if not given, `None` if wrong.
    pub fn integer(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> Option<i64> {
        let Some(value) = value else { return Some(default) };
        match in_range(*value.get_ref(), &range) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// A duration within `range`: `default` if not given, `None` if wrong.
    pub fn duration(
        &mut self,
        value: &Option<Spanned<RawDuration>>,
        key: &str,
        range: DurationRange,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else { return Some(default) };
        match value.get_ref().check(range) {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(value.span(), key, message);
                None
            }
        }
    }
}

#[cfg(test)]
impl Checker<'_> {
    /// "LINE: KEY: MESSAGE" for each mistake, as the tables' tests compare them.
    pub fn line_key_messages(self) -> Vec<String> {
        self.errors.into_iter().map(|e| format!("{}: {}: {}", e.line.unwrap_or(0), e.key, e.message)).collect()
    }
}

/// Whether another host can reach `address` and be reached from it: not
/// unspecified, multicast, broadcast or loopback. Real servers, virtual
/// addresses, VRRP and sync peers, sorry servers and TUN sources must be.
/// An IPv6 link-local address is refused too (it names no host without an
/// interface beside it), and an IPv4-mapped one (IPv4 is written as such).
pub fn is_unicast(address: impl Into<IpAddr>) -> bool {
    match address.into() {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()),
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_multicast()
                || a.is_loopback()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some())
        }
    }
}

/// `value` if within `range`, else the one wording of an integer out of range.
pub fn in_range(value: i64, range: &RangeInclusive<i64>) -> Result<i64, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is out of range {}..={}", range.start(), range.end()))
    }
}

/// The kernel's limit on an interface name, with its terminating NUL.
const IFNAMSIZ: usize = 16;

// Durations.

/// The longest duration any key takes: a number of seconds above it is out
/// of range for the health check's keys, and text above it is no duration.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration as written: seconds, or a string such as "500ms". Checked
/// against its key's [`DurationRange`] with the table's other values, so a
/// bad one is reported with the others.
#[derive(Clone, Debug, PartialEq)]
pub enum RawDuration {
    Seconds(i64),
    FractionalSeconds(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"5s\", \"1m\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::FractionalSeconds(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The durations a key takes, and how a value outside them is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationRange {
    /// From this to [`MAX_DURATION`] (the `health_check` keys): "must be at
    /// least 10ms", "90000 seconds is out of range 0..=86400".
    AtLeast(Duration),
    /// From the first to the second (the `[[vrrp]]` and `[sync]` keys),
    /// both shown: "1001s is out of range 0s..=1000s"; a negative number
    /// "is not a duration".
    Within(Duration, Duration),
}

impl RawDuration {
    /// The duration if `range` takes it, else what is wrong with it.
    pub fn check(&self, range: DurationRange) -> Result<Duration, String> {
        let beyond_max = |v: &dyn fmt::Display| format!("{v} seconds is out of range 0..={}", MAX_DURATION.as_secs());
        let d = match (self, range) {
            (Self::Text(t), _) => parse_duration(t)?,
            (Self::Seconds(n), DurationRange::AtLeast(_)) => u64::try_from(*n)
                .ok()
                .map(Duration::from_secs)
                .filter(|d| *d <= MAX_DURATION)
                .ok_or_else(|| beyond_max(n))?,
            (Self::FractionalSeconds(f), DurationRange::AtLeast(_)) => seconds(*f).ok_or_else(|| beyond_max(f))?,
            (Self::Seconds(n), DurationRange::Within(..)) => {
                u64::try_from(*n).map(Duration::from_secs).map_err(|_| format!("{n} is not a duration"))?
            }
            (Self::FractionalSeconds(f), DurationRange::Within(..)) => {
                if !(f.is_finite() && *f >= 0.0 && *f < 1e9) {
                    return Err(format!("{f} is not a duration"));
                }
                Duration::from_secs_f64(*f)
            }
        };
        match range {
            DurationRange::AtLeast(min) if d < min => Err(format!("must be at least {}", fmt_duration(min))),
            DurationRange::Within(min, max) if d < min || d > max => {
                Err(format!("{} is out of range {}..={}", fmt_duration(d), fmt_duration(min), fmt_duration(max)))
            }
            _ => Ok(d),
        }
    }
}

/// Parses "500ms", "5s", "1m", "2h", "1m30s", "1.5s", or a bare number of
/// seconds ("5", "0.5"), up to [`MAX_DURATION`]. (Not `humantime`: it takes
/// more units than these, "5sec" or "1d", and no bare numbers.)
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("\"{text}\" is not a duration (like \"500ms\", \"5s\", \"1m\", or a number of seconds)");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs).ok_or_else(bad);
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let unit_len = rest[number_len..].find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len() - number_len);
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        let scale = match &rest[number_len..number_len + unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = rest[number_len + unit_len..].trim_start();
    }
    seconds(total).ok_or_else(bad)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0 && secs <= MAX_DURATION.as_secs_f64()).then(|| Duration::from_secs_f64(secs))
}

/// "5s", or "1500ms" for a duration with a fraction of a second.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel() {
        #[derive(Deserialize)]
        struct Doc {
            name: Vec<Spanned<String>>,
        }
        let text = r#"name = ["eth0", " br-lan ", "veth1234567890a", "veth1234567890ab", "", ".", "..", "a/b", "eth0:1", "a b"]"#;
        let doc: Doc = toml::from_str(text).unwrap();
        let source = Source::new("lb.toml", text);
        let mut c = Checker::new(&source);
        let valid: Vec<bool> = doc.name.iter().map(|n| c.interface_name(n, "name")).collect();
        assert_eq!(valid, [true, true, true, false, false, false, false, false, false, false]);
        assert_eq!(c.line_key_messages()[0], "1: name: \"veth1234567890ab\" is not an interface name");
    }

    #[test]
    fn unicast_addresses() {
        for a in ["10.0.0.1", "172.16.100.7", "192.168.1.255"] {
            assert!(is_unicast(a.parse::<IpAddr>().unwrap()), "{a}");
        }
        for a in ["2001:db8::1", "fd00::7"] {
            assert!(is_unicast(a.parse::<IpAddr>().unwrap()), "{a}");
        }
        let v4 = ["0.0.0.0", "224.0.0.18", "255.255.255.255", "127.0.0.1"];
        let v6 = ["::", "::1", "ff02::1", "fe80::1", "::ffff:10.0.0.1"];
        for a in v4.into_iter().chain(v6) {
            assert!(!is_unicast(a.parse::<IpAddr>().unwrap()), "{a}");
        }
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1m 30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("5"), Ok(ms(5000)));
        assert_eq!(parse_duration("0.25"), Ok(ms(250)));
        assert_eq!(parse_duration(" 3s "), Ok(ms(3000)));
        for bad in ["", "s", "5x", "-1s", "5 s s", "1.2.3s", "ms5", "25h", "-3", "5sec"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        let any = DurationRange::AtLeast(Duration::ZERO);
        assert_eq!(RawDuration::Seconds(3).check(any), Ok(ms(3000)));
        assert_eq!(RawDuration::FractionalSeconds(0.5).check(any), Ok(ms(500)));
        assert!(RawDuration::Seconds(-1).check(any).is_err());
    }

    #[test]
    fn each_range_reads_as_its_keys_always_have() {
        let at_least = DurationRange::AtLeast(Duration::from_millis(10));
        let within = DurationRange::Within(Duration::ZERO, Duration::from_secs(1000));
        let check = |raw: RawDuration, range| raw.check(range).unwrap_err();
        assert_eq!(check(RawDuration::Seconds(0), at_least), "must be at least 10ms");
        assert_eq!(check(RawDuration::Seconds(90_000), at_least), "90000 seconds is out of range 0..=86400");
        assert_eq!(check(RawDuration::Seconds(-1), at_least), "-1 seconds is out of range 0..=86400");
        assert_eq!(check(RawDuration::Seconds(1001), within), "1001s is out of range 0s..=1000s");
        assert_eq!(check(RawDuration::Text("1500s".into()), within), "1500s is out of range 0s..=1000s");
        assert_eq!(check(RawDuration::Seconds(-1), within), "-1 is not a duration");
        assert_eq!(check(RawDuration::FractionalSeconds(f64::NAN), within), "NaN is not a duration");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    }
}
