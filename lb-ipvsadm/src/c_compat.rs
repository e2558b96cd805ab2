//! The C library's and ipvsadm's little parsers, reproduced for their exact
//! acceptance: what ipvsadm takes as a number or an address, and what not.

use std::net::Ipv4Addr;

/// string_to_number: strtol(s, 10) consuming the whole (non-empty) string,
/// within min..=max.
pub(crate) fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    strtol(s).filter(|n| (min..=max).contains(n))
}

/// C's isspace in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// strtol(s, &end, 10) that must end at the end of `s` having read a
/// digit, without overflow.
pub(crate) fn strtol(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let negative = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut n: i64 = 0;
    let mut overflow = false;
    while i < b.len() && b[i].is_ascii_digit() {
        let d = (b[i] - b'0') as i64;
        match n.checked_mul(10).and_then(|n| if negative { n.checked_sub(d) } else { n.checked_add(d) }) {
            Some(v) => n = v,
            None => overflow = true,
        }
        i += 1;
    }
    (i > start && i == b.len() && !overflow).then_some(n)
}

/// atoi: leading blanks, a sign, digits; 0 when there are none.
pub(crate) fn atoi(s: &str) -> i64 {
    let t = s.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).take(18).fold(0i64, |n, d| n * 10 + (d - b'0') as i64);
    if negative { -digits } else { digits }
}

/// glibc's inet_aton: one to four parts, each decimal, octal (0...) or hex
/// (0x...): a (32 bits), a.b (8.24), a.b.c (8.8.16) or a.b.c.d; trailing
/// blanks and what follows them are ignored.
pub(crate) fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: Vec<u32> = Vec::with_capacity(4);
    let mut i = 0;
    let last = loop {
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (value, used) = strtoul_base0(&b[i..])?;
        i += used;
        if b.get(i) == Some(&b'.') {
            if parts.len() >= 3 || value > 0xff {
                return None;
            }
            parts.push(value);
            i += 1;
        } else {
            break value;
        }
    };
    if let Some(&c) = b.get(i)
        && !(c.is_ascii() && is_c_space(c))
    {
        return None;
    }
    let limit: u32 = match parts.len() {
        0 => u32::MAX,
        1 => 0xff_ffff,
        2 => 0xffff,
        _ => 0xff,
    };
    if last > limit {
        return None;
    }
    let high = parts.iter().enumerate().fold(0u32, |acc, (k, p)| acc | (p << (24 - 8 * k)));
    Some(Ipv4Addr::from(high | last))
}

/// strtoul(s, &end, 0) from a digit: the value (None when above 32 bits)
/// and how many bytes it read.
fn strtoul_base0(b: &[u8]) -> Option<(u32, usize)> {
    let (radix, start) = if b.len() >= 3 && b[0] == b'0' && matches!(b[1], b'x' | b'X') && b[2].is_ascii_hexdigit() {
        (16, 2)
    } else if b[0] == b'0' {
        (8, 0)
    } else {
        (10, 0)
    };
    let mut value: u64 = 0;
    let mut i = start;
    while let Some(d) = b.get(i).and_then(|c| (*c as char).to_digit(radix)) {
        value = value.saturating_mul(radix as u64).saturating_add(d as u64);
        i += 1;
    }
    (value <= u32::MAX as u64).then_some((value as u32, i))
}

/// The first `max` bytes of `s` (ipvsadm's strncpy into fixed buffers), on
/// a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_number_parsers() {
        assert_eq!(strtol(" 42"), Some(42));
        assert_eq!(strtol("+42"), Some(42));
        assert_eq!(strtol("-0"), Some(0));
        assert_eq!(strtol("42 "), None);
        assert_eq!(strtol(""), None);
        assert_eq!(strtol("-"), None);
        assert_eq!(strtol("9223372036854775807"), Some(i64::MAX));
        assert_eq!(strtol("9223372036854775808"), None);
        assert_eq!(atoi("64abc"), 64);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(inet_aton("1.2.3.4 trailing"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(inet_aton("0xff.0377.1.0x"), None);
        assert_eq!(inet_aton("0xff.0377.1.0"), Some(Ipv4Addr::new(255, 255, 1, 0)));
        assert_eq!(inet_aton("1.2.65535"), Some(Ipv4Addr::new(1, 2, 255, 255)));
        assert_eq!(inet_aton("1.2.65536"), None);
        assert_eq!(inet_aton("4294967295"), Some(Ipv4Addr::BROADCAST));
        assert_eq!(inet_aton("4294967296"), None);
        assert_eq!(inet_aton("1.2.3.4."), None);
        assert_eq!(inet_aton(""), None);
    }
}
