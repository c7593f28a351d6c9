//! The client's socket: its bytes and the descriptors that come with them
//! (SCM_RIGHTS, queued until the message that carries them is read), what
//! goes back to it, and the framing both directions share.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use wayland_client::protocol::wl_display;

use super::end::{client_error, host, End};
use crate::wire::{Header, WireError};

/// libwayland's limit on descriptors in one message batch.
pub const MAX_FDS: usize = 28;
/// Descriptors a client may send ahead of the messages that carry them.
pub const MAX_QUEUED_FDS: usize = 2 * MAX_FDS;
/// Bytes of events a client may leave unread before it loses its
/// connection: a client that never reads would otherwise grow the proxy
/// without bound (libwayland's server ends such a client too, when its
/// buffer is full). Far above a keymap or a burst of input events.
pub const MAX_UNREAD: usize = 1 << 20;

pub struct ClientSocket {
    stream: UnixStream,
    /// Bytes read and not yet a whole message.
    pub bytes_in: Vec<u8>,
    fds_in: VecDeque<OwnedFd>,
    bytes_out: Vec<u8>,
    fds_out: Vec<OwnedFd>,
}

impl AsFd for ClientSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl ClientSocket {
    /// The client's end; neither reads nor writes block on it, so that one
    /// client that stops reading never stalls the proxy's relay.
    pub fn new(stream: UnixStream) -> ClientSocket {
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("the client's socket stays blocking: {e}");
        }
        ClientSocket {
            stream,
            bytes_in: Vec::new(),
            fds_in: VecDeque::new(),
            bytes_out: Vec::new(),
            fds_out: Vec::new(),
        }
    }

    /// Reads what the client sent (one read, without blocking): `Gone` when
    /// it hung up; a protocol error when it sent too many descriptors
    /// ahead of their messages.
    pub fn read(&mut self) -> Result<(), End> {
        let mut buf = [0u8; 4096];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => {
                log::debug!("reading the client: {e}");
                return Err(End::Gone);
            }
        };
        let bytes = msg.bytes;
        for c in msg
            .cmsgs()
            .map_err(|e| host(format!("control messages: {e}")))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS gave this process the descriptor;
                    // nothing else owns it.
                    self.fds_in.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if bytes == 0 {
            return Err(End::Gone);
        }
        self.bytes_in.extend_from_slice(&buf[..bytes]);
        if self.fds_in.len() > MAX_QUEUED_FDS {
            return Err(client_error(
                1,
                wl_display::Error::Implementation,
                format!(
                    "{} descriptors sent ahead of their messages",
                    self.fds_in.len()
                ),
            ));
        }
        Ok(())
    }

    /// The next `n` descriptors the client sent, if it sent that many.
    pub fn take_fds(&mut self, n: usize) -> Option<Vec<OwnedFd>> {
        (self.fds_in.len() >= n).then(|| self.fds_in.drain(..n).collect())
    }

    /// Queues a message (and its descriptors) for the client; a client
    /// that has left more than [`MAX_UNREAD`] bytes unread loses its
    /// connection.
    pub fn queue(&mut self, message: &[u8], fds: Vec<OwnedFd>) -> Result<(), End> {
        self.bytes_out.extend_from_slice(message);
        self.fds_out.extend(fds);
        if self.bytes_out.len() > MAX_UNREAD {
            return Err(client_error(
                1,
                wl_display::Error::Implementation,
                format!(
                    "{} bytes of events left unread (at most {MAX_UNREAD})",
                    self.bytes_out.len()
                ),
            ));
        }
        Ok(())
    }

    /// Whether events wait for the client to read them.
    pub fn has_pending(&self) -> bool {
        !self.bytes_out.is_empty()
    }

    /// Sends what is queued, as much as the client takes now: at most
    /// [`MAX_FDS`] descriptors with each part, each batch with at least one
    /// byte; what the client does not take yet stays queued.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut at = 0;
        let result = loop {
            if at >= self.bytes_out.len() {
                break Ok(());
            }
            let n = self.fds_out.len().min(MAX_FDS);
            let raw: Vec<RawFd> = self.fds_out[..n].iter().map(|f| f.as_raw_fd()).collect();
            let cmsg = [ControlMessage::ScmRights(&raw)];
            // Descriptors beyond this batch go with later bytes.
            let end = if self.fds_out.len() > n {
                (at + 1).min(self.bytes_out.len())
            } else {
                self.bytes_out.len()
            };
            let iov = [IoSlice::new(&self.bytes_out[at..end])];
            match sendmsg::<()>(
                self.stream.as_raw_fd(),
                &iov,
                if raw.is_empty() { &[] } else { &cmsg },
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(sent) => {
                    // The descriptors went with the first byte sent.
                    self.fds_out.drain(..n);
                    at += sent;
                }
                Err(nix::errno::Errno::EAGAIN) => break Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break Err(e.into()),
            }
        };
        self.bytes_out.drain(..at);
        result
    }
}

/// Hands each whole message at the front of `buf` to `each`, in order, and
/// leaves what is not yet whole; a header that cannot be a message's is
/// `malformed`'s end. The same framing for the client's requests and the
/// compositor's events.
pub fn each_message(
    buf: &mut Vec<u8>,
    mut each: impl FnMut(Header, &[u8]) -> Result<(), End>,
    malformed: impl Fn(WireError) -> End,
) -> Result<(), End> {
    let mut at = 0;
    let result = loop {
        let header = match Header::peek(&buf[at..]) {
            Ok(Some(h)) if buf.len() - at >= h.size => h,
            Ok(_) => break Ok(()),
            Err(e) => break Err(malformed(e)),
        };
        let message = buf[at..at + header.size].to_vec();
        at += header.size;
        if let Err(end) = each(header, &message) {
            break Err(end);
        }
    };
    buf.drain(..at);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{message, Arg};
    use nix::unistd::pipe;

    fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) {
        let cmsg = [ControlMessage::ScmRights(fds)];
        sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    #[test]
    fn descriptors_wait_for_their_message_and_a_flood_of_them_is_an_error() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut socket = ClientSocket::new(ours);
        let (r, w) = pipe().unwrap();
        send_with_fds(&theirs, b"12345678", &[r.as_raw_fd(), w.as_raw_fd()]);
        socket.read().unwrap();
        assert_eq!(socket.bytes_in, b"12345678");
        assert!(socket.take_fds(3).is_none(), "only two came");
        assert_eq!(socket.take_fds(2).unwrap().len(), 2);
        // More descriptors ahead of their messages than libwayland allows.
        let many: Vec<RawFd> = vec![r.as_raw_fd(); MAX_FDS];
        for _ in 0..3 {
            send_with_fds(&theirs, b"x", &many);
        }
        let mut end = Ok(());
        for _ in 0..3 {
            end = end.and_then(|()| socket.read());
        }
        assert!(matches!(end, Err(End::Client { object: 1, .. })));
        drop(theirs);
        socket.bytes_in.clear();
        socket.fds_in.clear();
        assert!(matches!(socket.read(), Err(End::Gone)));
    }

    #[test]
    fn queued_messages_and_descriptors_reach_the_client() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut socket = ClientSocket::new(ours);
        let (r, _w) = pipe().unwrap();
        socket
            .queue(&message(1, 1, &[Arg::Uint(7)]), vec![r])
            .unwrap();
        socket.flush().unwrap();
        let mut back = ClientSocket::new(theirs);
        back.read().unwrap();
        assert_eq!(back.bytes_in, message(1, 1, &[Arg::Uint(7)]));
        assert_eq!(back.take_fds(1).map(|f| f.len()), Some(1));
    }

    /// A client that never reads: what it does not take stays queued, the
    /// proxy never blocks on it, and past the bound it loses its connection.
    #[test]
    fn a_client_that_never_reads_is_ended_not_waited_for() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut socket = ClientSocket::new(ours);
        let event = message(1, 1, &[Arg::Array(vec![7; 4000])]);
        let mut queued = 0;
        let end = loop {
            if let Err(end) = socket.queue(&event, Vec::new()) {
                break end;
            }
            queued += event.len();
            socket.flush().unwrap();
            assert!(queued <= 2 * MAX_UNREAD + (1 << 20), "never ended");
        };
        assert!(socket.has_pending(), "the socket's buffer is full");
        match end {
            End::Client {
                object: 1, code, ..
            } => {
                assert_eq!(code, u32::from(wl_display::Error::Implementation))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn framing_hands_over_whole_messages_and_keeps_the_rest() {
        let one = message(3, 0, &[Arg::Uint(1)]);
        let two = message(4, 2, &[]);
        let mut buf = [one.clone(), two.clone(), two[..5].to_vec()].concat();
        let mut seen = Vec::new();
        each_message(
            &mut buf,
            |h, m| {
                seen.push((h.object, h.opcode, m.to_vec()));
                Ok(())
            },
            host,
        )
        .unwrap();
        assert_eq!(seen, [(3, 0, one), (4, 2, two.clone())]);
        assert_eq!(buf, &two[..5], "a partial message waits");
        let mut bad = vec![1, 0, 0, 0, 0, 0, 3, 0];
        let end = each_message(&mut bad, |_, _| Ok(()), host);
        assert!(matches!(end, Err(End::Host(_))), "a 3-byte message");
    }
}
