//! Connection states, their names and default timeouts, and the TCP state
//! machine the director runs on the packets it sees.
//!
//! The numbers and the TCP transitions are IPVS's (`ip_vs_proto_tcp.c`: in
//! DR and TUN the director sees only the client's half of a connection, the
//! input-only table; in NAT both, the input and output tables). Only ESTABLISHED counts as an active connection;
//! every other state counts as inactive, as IPVS defines ActiveConn and
//! InActConn.

pub const NONE: u8 = 0;
pub const ESTABLISHED: u8 = 1;
pub const SYN_SENT: u8 = 2;
pub const SYN_RECV: u8 = 3;
pub const FIN_WAIT: u8 = 4;
pub const TIME_WAIT: u8 = 5;
pub const CLOSE: u8 = 6;
pub const CLOSE_WAIT: u8 = 7;
pub const LAST_ACK: u8 = 8;
pub const LISTEN: u8 = 9;
pub const SYNACK: u8 = 10;
/// The one state of a UDP entry.
pub const UDP: u8 = 11;
/// Persistence template, no connection established through it yet.
pub const TEMPLATE_NONE: u8 = 12;
/// Persistence template with at least one established connection.
pub const TEMPLATE_ASSURED: u8 = 13;
/// Size of the per-state timeout table.
pub const COUNT: usize = 16;

const NAMES: [&str; 14] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
    "UDP",
    "NONE",
    "ASSURED",
];

/// The state's name as `ipvsadm -L -c` prints it.
pub fn name(state: u8) -> &'static str {
    match NAMES.get(state as usize) {
        Some(name) => name,
        None => "ERR!",
    }
}

/// Whether a connection in this state counts as ActiveConn (else InActConn).
pub const fn is_active(state: u8) -> bool {
    state == ESTABLISHED
}

/// Default timeouts in seconds, IPVS's: tcp 900, tcpfin 120, udp 300 and the
/// fixed ones for the other TCP states.
pub const fn default_timeouts() -> [u32; COUNT] {
    let mut t = [0u32; COUNT];
    t[NONE as usize] = 2;
    t[ESTABLISHED as usize] = 900;
    t[SYN_SENT as usize] = 120;
    t[SYN_RECV as usize] = 60;
    t[FIN_WAIT as usize] = 120;
    t[TIME_WAIT as usize] = 120;
    t[CLOSE as usize] = 10;
    t[CLOSE_WAIT as usize] = 60;
    t[LAST_ACK as usize] = 30;
    t[LISTEN as usize] = 120;
    t[SYNACK as usize] = 120;
    t[UDP as usize] = 300;
    // A template lives for the service's persistence timeout instead.
    t[TEMPLATE_NONE as usize] = 0;
    t[TEMPLATE_ASSURED as usize] = 0;
    t
}

/// Applies `ipvsadm --set tcp tcpfin udp` to a timeout table (0 keeps a value).
pub const fn with_set_timeouts(mut t: [u32; COUNT], tcp: u32, tcpfin: u32, udp: u32) -> [u32; COUNT] {
    if tcp != 0 {
        t[ESTABLISHED as usize] = tcp;
    }
    if tcpfin != 0 {
        t[FIN_WAIT as usize] = tcpfin;
    }
    if udp != 0 {
        t[UDP as usize] = udp;
    }
    t
}

/// TCP header flag bits (byte 13 of the header).
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Which of IPVS's three TCP transition tables a packet moves a
/// connection by (`ip_vs_proto_tcp.c`: TCP_DIR_INPUT, TCP_DIR_OUTPUT,
/// TCP_DIR_INPUT_ONLY).
pub mod tcp_dir {
    /// Client to server, where the director also sees the replies (NAT).
    pub const INPUT: usize = 0;
    /// Server to client (NAT replies).
    pub const OUTPUT: usize = 1;
    /// Client to server, where replies bypass the director (DR, TUN).
    pub const INPUT_ONLY: usize = 2;
}

/// IPVS's `tcp_states`: per direction, per event (SYN, FIN, ACK, RST), the
/// next state from each state NONE..SYNACK (in state-number order).
const TCP_STATES: [[[u8; 11]; 4]; 3] = [
    // INPUT
    [
        [
            SYN_RECV,
            ESTABLISHED,
            ESTABLISHED,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
        ],
        [CLOSE, CLOSE_WAIT, SYN_SENT, TIME_WAIT, TIME_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, TIME_WAIT],
        [CLOSE, ESTABLISHED, SYN_SENT, ESTABLISHED, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, CLOSE, LISTEN, ESTABLISHED],
        [CLOSE, CLOSE, CLOSE, SYN_RECV, CLOSE, CLOSE, CLOSE, CLOSE, LAST_ACK, LISTEN, SYN_RECV],
    ],
    // OUTPUT
    [
        [SYN_SENT, ESTABLISHED, SYN_SENT, SYN_RECV, SYN_SENT, SYN_SENT, SYN_SENT, SYN_SENT, SYN_SENT, LISTEN, SYN_RECV],
        [TIME_WAIT, FIN_WAIT, SYN_SENT, TIME_WAIT, FIN_WAIT, TIME_WAIT, CLOSE, TIME_WAIT, LAST_ACK, LISTEN, TIME_WAIT],
        [
            ESTABLISHED,
            ESTABLISHED,
            SYN_SENT,
            ESTABLISHED,
            FIN_WAIT,
            TIME_WAIT,
            CLOSE,
            CLOSE_WAIT,
            LAST_ACK,
            ESTABLISHED,
            ESTABLISHED,
        ],
        [CLOSE, CLOSE, SYN_SENT, CLOSE, CLOSE, TIME_WAIT, CLOSE, CLOSE, CLOSE, CLOSE, CLOSE],
    ],
    // INPUT_ONLY
    [
        [
            SYN_RECV,
            ESTABLISHED,
            ESTABLISHED,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
            SYN_RECV,
        ],
        [CLOSE, FIN_WAIT, SYN_SENT, TIME_WAIT, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, TIME_WAIT],
        [CLOSE, ESTABLISHED, SYN_SENT, ESTABLISHED, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, CLOSE, LISTEN, ESTABLISHED],
        [CLOSE, CLOSE, CLOSE, SYN_RECV, CLOSE, CLOSE, CLOSE, CLOSE, LAST_ACK, LISTEN, CLOSE],
    ],
];

/// Next state of a TCP connection on a packet with these flags, in
/// direction `dir` ([`tcp_dir`]; IPVS's set_tcp_state). The event is chosen
/// by priority RST, SYN, FIN, ACK; a packet with none of them moves the
/// connection to CLOSE, as in IPVS.
pub const fn tcp_next_in(dir: usize, state: u8, flags: u8) -> u8 {
    use tcp_flag::*;
    let i = state as usize;
    if i >= 11 || dir >= 3 {
        return state;
    }
    let event = if flags & RST != 0 {
        3
    } else if flags & SYN != 0 {
        0
    } else if flags & FIN != 0 {
        1
    } else if flags & ACK != 0 {
        2
    } else {
        return CLOSE;
    };
    TCP_STATES[dir][event][i]
}

/// Next state of a TCP connection on a client-to-server packet with these
/// flags where the director sees only the client's half (DR, TUN).
pub const fn tcp_next(state: u8, flags: u8) -> u8 {
    tcp_next_in(tcp_dir::INPUT_ONLY, state, flags)
}

#[cfg(test)]
mod tests {
    use super::tcp_flag::*;
    use super::*;

    #[test]
    fn a_normal_connection_as_the_director_sees_it() {
        let mut s = NONE;
        s = tcp_next(s, SYN);
        assert_eq!(s, SYN_RECV);
        assert!(!is_active(s));
        s = tcp_next(s, ACK);
        assert_eq!(s, ESTABLISHED);
        assert!(is_active(s));
        s = tcp_next(s, ACK);
        assert_eq!(s, ESTABLISHED);
        s = tcp_next(s, FIN | ACK);
        assert_eq!(s, FIN_WAIT);
        s = tcp_next(s, ACK);
        assert_eq!(s, FIN_WAIT);
    }

    #[test]
    fn rst_closes_but_not_from_syn_recv() {
        assert_eq!(tcp_next(ESTABLISHED, RST | ACK), CLOSE);
        assert_eq!(tcp_next(SYN_RECV, RST), SYN_RECV);
        assert_eq!(tcp_next(ESTABLISHED, 0), CLOSE);
    }

    #[test]
    fn a_nat_connection_sees_both_halves() {
        use tcp_dir::{INPUT, OUTPUT};
        let mut s = tcp_next_in(INPUT, NONE, SYN);
        assert_eq!(s, SYN_RECV);
        s = tcp_next_in(OUTPUT, s, SYN | ACK);
        assert_eq!(s, SYN_RECV);
        s = tcp_next_in(INPUT, s, ACK);
        assert_eq!(s, ESTABLISHED);
        // The server closes first: the client's FIN then leads to TIME_WAIT.
        s = tcp_next_in(OUTPUT, s, FIN | ACK);
        assert_eq!(s, FIN_WAIT);
        s = tcp_next_in(INPUT, s, FIN | ACK);
        assert_eq!(s, TIME_WAIT);
        // The client closes first: CLOSE_WAIT, then the server's FIN.
        assert_eq!(tcp_next_in(INPUT, ESTABLISHED, FIN | ACK), CLOSE_WAIT);
        assert_eq!(tcp_next_in(OUTPUT, CLOSE_WAIT, FIN | ACK), TIME_WAIT);
        assert_eq!(tcp_next_in(OUTPUT, ESTABLISHED, RST), CLOSE);
    }

    #[test]
    fn set_timeouts_changes_only_what_is_given() {
        let t = with_set_timeouts(default_timeouts(), 600, 0, 120);
        assert_eq!(t[ESTABLISHED as usize], 600);
        assert_eq!(t[FIN_WAIT as usize], 120);
        assert_eq!(t[UDP as usize], 120);
        assert_eq!(name(UDP), "UDP");
        assert_eq!(name(TEMPLATE_ASSURED), "ASSURED");
    }
}
