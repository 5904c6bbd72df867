//! Netlink plumbing shared by sock_diag, NFLOG and ctnetlink: sending one request, waiting
//! with a timeout, and splitting a datagram into messages without trusting its lengths.

use std::fmt::Debug;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::Socket;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::HostError;

/// Receive buffer: large enough for any datagram the kernel sends us (NFLOG batches and
/// sock_diag dumps are at most a few pages; a truncated datagram would lose messages).
pub(crate) const RECV_BUF: usize = 256 * 1024;

/// How long a request/dump may take before we give up instead of hanging the caller.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn open(protocol: isize, what: &'static str) -> Result<Socket, HostError> {
    let mut socket = Socket::new(protocol).map_err(|source| HostError::Netlink { what, source })?;
    socket
        .bind_auto()
        .map_err(|source| HostError::Netlink { what, source })?;
    Ok(socket)
}

/// Waits until `socket` is readable or `timeout` passes; `Ok(false)` on timeout.
pub(crate) fn wait_readable(
    socket: &Socket,
    timeout: Duration,
    what: &'static str,
) -> Result<bool, HostError> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(HostError::Netlink {
                    what,
                    source: io::Error::from(e),
                });
            }
        }
    }
}

/// Receives one datagram into `buf`, returning its length. ENOBUFS (the kernel dropped
/// messages because we were slow) is returned as `Ok(None)` so callers can count it.
pub(crate) fn recv(
    socket: &Socket,
    buf: &mut [u8],
    what: &'static str,
) -> Result<Option<usize>, HostError> {
    loop {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => return Ok(None),
            Err(source) => return Err(HostError::Netlink { what, source }),
        }
    }
}

/// The netlink messages of one datagram, as byte slices each holding exactly one message.
/// Stops at the first header whose length does not fit (the rest cannot be framed).
pub(crate) fn split(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let rest = datagram.get(offset..)?;
        let header = NetlinkBuffer::new_checked(rest).ok()?;
        let len = usize::try_from(header.length()).ok()?;
        let message = rest.get(..len)?;
        // Messages are 4-byte aligned; a length of at least a header keeps this moving.
        offset = offset.checked_add(len.checked_add(3)? & !3)?;
        Some(message)
    })
}

pub(crate) fn send<T>(
    socket: &Socket,
    mut message: NetlinkMessage<T>,
    what: &'static str,
) -> Result<(), HostError>
where
    T: NetlinkSerializable + Debug,
{
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|source| HostError::Netlink { what, source })?;
    Ok(())
}

/// Sends a request and collects the answers until DONE, an ACK, or an error from the
/// kernel. Messages that do not decode are skipped and counted in the returned number.
pub(crate) fn request<T>(
    socket: &Socket,
    message: NetlinkMessage<T>,
    what: &'static str,
) -> Result<(Vec<T>, u64), HostError>
where
    T: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let mut out = Vec::new();
    let malformed = exchange(socket, message, what, |m: NetlinkMessage<T>, _| {
        if let NetlinkPayload::InnerMessage(inner) = m.payload {
            out.push(inner);
        }
    })?;
    Ok((out, malformed))
}

/// Like [`request`], but gives each answer's bytes (one whole netlink message each), for
/// decoders of our own.
pub(crate) fn request_raw<T>(
    socket: &Socket,
    message: NetlinkMessage<T>,
    what: &'static str,
) -> Result<(Vec<Vec<u8>>, u64), HostError>
where
    T: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let mut out = Vec::new();
    let malformed = exchange(
        socket,
        message,
        what,
        |m: NetlinkMessage<T>, bytes: &[u8]| {
            if matches!(m.payload, NetlinkPayload::InnerMessage(_)) {
                out.push(bytes.to_vec());
            }
        },
    )?;
    Ok((out, malformed))
}

/// Sends a request and reads the answers to the end, keeping none: for requests wanted
/// for their side effect.
pub(crate) fn drain<T>(
    socket: &Socket,
    message: NetlinkMessage<T>,
    what: &'static str,
) -> Result<(), HostError>
where
    T: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    exchange(socket, message, what, |_, _| {}).map(|_| ())
}

fn exchange<T>(
    socket: &Socket,
    message: NetlinkMessage<T>,
    what: &'static str,
    mut answer: impl FnMut(NetlinkMessage<T>, &[u8]),
) -> Result<u64, HostError>
where
    T: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    send(socket, message, what)?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut malformed = 0u64;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !wait_readable(socket, left, what)? {
            return Err(HostError::Timeout {
                what,
                seconds: REQUEST_TIMEOUT.as_secs(),
            });
        }
        let Some(n) = recv(socket, &mut buf, what)? else {
            return Err(HostError::Netlink {
                what,
                source: io::Error::from_raw_os_error(nix::libc::ENOBUFS),
            });
        };
        for bytes in split(&buf[..n]) {
            let Ok(message) = NetlinkMessage::<T>::deserialize(bytes) else {
                malformed += 1;
                continue;
            };
            match &message.payload {
                NetlinkPayload::Done(_) => return Ok(malformed),
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(malformed),
                NetlinkPayload::Error(e) => {
                    return Err(HostError::Refused {
                        what,
                        source: e.to_io(),
                    });
                }
                _ => answer(message, bytes),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(len: u32, kind: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&[0; 10]);
        v
    }

    #[test]
    fn split_frames_aligned_messages_and_stops_at_a_bad_length() {
        let mut d = header(20, 3);
        d.extend_from_slice(&[1, 2, 3, 4]);
        d.extend(header(17, 3));
        d.extend_from_slice(&[9, 0, 0, 0]); // one byte of payload, three of padding
        d.extend(header(400, 3)); // claims more than there is
        let parts: Vec<&[u8]> = split(&d).collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 20);
        assert_eq!(parts[1].len(), 17);
    }

    proptest! {
        #[test]
        fn split_never_panics_and_stays_in_bounds(d in proptest::collection::vec(any::<u8>(), 0..256)) {
            let total: usize = split(&d).map(<[u8]>::len).sum();
            prop_assert!(total <= d.len());
        }
    }
}
