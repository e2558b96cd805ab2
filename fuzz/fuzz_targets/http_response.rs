//! The http/https checks' response reader (`read_response`): a response
//! arrives as a stream handed over in pieces of arbitrary sizes, ending
//! cleanly or, as a TLS peer without close_notify, with UnexpectedEof.
//!
//! The input, as `arbitrary` reads it: three flag bytes (a body check
//! wants the body; any status is expected, else 200-299; the stream ends
//! with UnexpectedEof), the piece sizes (each a 1 byte then a u16, little
//! endian; a 0 byte ends the list; the sizes are used in turn, again and
//! again; none: everything at once), then the response's bytes. A seed is
//! `printf '\1\0\0\0HTTP/1.1 200 OK\r\n...'`.
//!
//! Beyond "no panic": a body is only read when wanted, for an expected
//! status, and never beyond `MAX_BODY`; and the outcome does not depend on
//! how the stream was cut: the same as with everything at once.

#![no_main]

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use arbitrary::Arbitrary;
use lb_userspace::health::{
    StatusCodes,
    probe::http_response::{MAX_BODY, Response, read_response},
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// No allocation above 4 MiB (see `lb_fuzz::Bounded`).
#[global_allocator]
static ALLOC: lb_fuzz::Bounded = lb_fuzz::Bounded::mib(4);

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    wants_body: bool,
    any_status: bool,
    tls_eof: bool,
    pieces: Vec<u16>,
    response: &'a [u8],
}

/// The response, handed over in pieces of the given sizes.
struct Stream<'a> {
    rest: &'a [u8],
    pieces: &'a [u16],
    next: usize,
    tls_eof: bool,
}

impl AsyncRead for Stream<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            return Poll::Ready(if this.tls_eof { Err(io::ErrorKind::UnexpectedEof.into()) } else { Ok(()) });
        }
        let piece = match this.pieces {
            [] => usize::MAX,
            pieces => usize::from(pieces[this.next % pieces.len()]).max(1),
        };
        this.next += 1;
        let n = piece.min(this.rest.len()).min(buf.remaining());
        buf.put_slice(&this.rest[..n]);
        this.rest = &this.rest[n..];
        Poll::Ready(Ok(()))
    }
}

/// Reads the response: the stream never makes it wait, so one poll does.
fn read(input: &Input, pieces: &[u16], expected: &StatusCodes) -> Result<Response, String> {
    let mut stream = Stream { rest: input.response, pieces, next: 0, tls_eof: input.tls_eof };
    let future = std::pin::pin!(read_response(&mut stream, input.wants_body, expected));
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("read_response waits on a stream that never does"),
    }
}

fuzz_target!(|input: Input| {
    let expected = StatusCodes(if input.any_status { vec![(0, u16::MAX)] } else { vec![(200, 299)] });
    let result = read(&input, &input.pieces, &expected);
    if let Ok(response) = &result {
        assert!(response.body.len() <= MAX_BODY, "a body of {} bytes", response.body.len());
        if !input.wants_body || !expected.contains(response.status) {
            assert!(response.body.is_empty(), "a body nobody asked for");
        }
    }
    if !input.pieces.is_empty() {
        let at_once = read(&input, &[], &expected);
        match (&result, &at_once) {
            (Ok(_), Ok(_)) => assert_eq!(result, at_once),
            (Err(_), Err(_)) => {}
            _ => panic!("in pieces: {result:?}; at once: {at_once:?}"),
        }
    }
});
