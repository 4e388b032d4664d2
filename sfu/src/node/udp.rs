//! The media socket of one worker, read and written in batches: `recvmmsg`/`sendmmsg` on
//! Linux (one syscall for up to [`MAX_BATCH`] datagrams), one `recv_from`/`send_to` per
//! datagram elsewhere. Also the worker's wake-up pipe and the `poll` that waits on both.
//!
//! Platform socket tricks live here and nowhere else, as quinn keeps them in quinn-udp; the
//! worker above sees only "a batch of (source, bytes)" and "send these transmits".

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use crate::participant::Transmit;

/// Most datagrams moved by one `recvmmsg`/`sendmmsg`.
pub const MAX_BATCH: usize = 64;

/// Received datagrams: `len` slots of `slot` bytes each.
#[derive(Debug)]
pub struct RecvBatch {
    slot: usize,
    capacity: usize,
    bufs: Vec<u8>,
    lens: Vec<usize>,
    sources: Vec<SocketAddr>,
    len: usize,
}

impl RecvBatch {
    /// Room for `capacity` (≤ [`MAX_BATCH`]) datagrams of up to `slot` bytes. A datagram
    /// longer than `slot` arrives as `slot` bytes (the kernel truncates it), so pick `slot`
    /// larger than the engine's `max_datagram` and the engine counts it as oversized.
    pub fn new(capacity: usize, slot: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_BATCH);
        let slot = slot.max(1);
        Self {
            slot,
            capacity,
            bufs: vec![0; capacity * slot],
            lens: vec![0; capacity],
            sources: vec![SocketAddr::from(([0, 0, 0, 0], 0)); capacity],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.len {
            return None;
        }
        let start = i * self.slot;
        Some((self.sources[i], &self.bufs[start..start + self.lens[i]]))
    }

    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }

    /// Bytes of all datagrams in the batch.
    pub fn bytes(&self) -> u64 {
        self.lens[..self.len].iter().map(|l| *l as u64).sum()
    }
}

/// What one [`MediaSocket::send_batch`] achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    pub sent: u64,
    pub bytes: u64,
    /// Datagrams the kernel refused outright (e.g. a destination of the wrong family).
    pub errors: u64,
    /// Datagrams given up on because the socket buffer stayed full.
    pub dropped: u64,
}

/// A non-blocking UDP socket with batched IO.
#[derive(Debug)]
pub struct MediaSocket {
    socket: UdpSocket,
    local: SocketAddr,
}

impl MediaSocket {
    /// Bind `addr` (port 0: any free port), non-blocking, with kernel buffers of about
    /// `buffer_bytes` each way (capped by the system's `rmem_max`/`wmem_max`).
    pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        if buffer_bytes > 0 {
            let size = libc::c_int::try_from(buffer_bytes).unwrap_or(libc::c_int::MAX);
            // Best effort: a smaller buffer only means earlier drops under bursts.
            let _ = set_int_option(&socket, libc::SO_RCVBUF, size);
            let _ = set_int_option(&socket, libc::SO_SNDBUF, size);
        }
        let local = socket.local_addr()?;
        Ok(Self { socket, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Read what is queued, up to the batch's capacity, without blocking. `Ok(0)`: nothing.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.len = 0;
        let n = sys::recv_batch(&self.socket, batch)?;
        batch.len = n;
        Ok(n)
    }

    /// Send every transmit (its `source` is ignored: the socket's address is the source).
    pub fn send_batch(&self, transmits: &[Transmit]) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        for chunk in transmits.chunks(MAX_BATCH) {
            sys::send_chunk(&self.socket, chunk, &mut outcome);
        }
        outcome
    }
}

fn set_int_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd, a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until the socket can take more (after `EAGAIN` on send), at most `timeout`.
fn wait_writable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

/// How many times a send waits for buffer space before it drops the rest of a batch.
const SEND_RETRIES: u32 = 3;
const SEND_RETRY_WAIT: Duration = Duration::from_millis(2);

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, zeroed, MaybeUninit};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{wait_writable, RecvBatch, SendOutcome, MAX_BATCH, SEND_RETRIES, SEND_RETRY_WAIT};
    use crate::participant::Transmit;

    // Headers, vectors and addresses are set for the entries a call uses and nothing else:
    // zeroing all `MAX_BATCH` of each (~13 KB) on every receive and every send was ~1 % of a
    // lightly loaded node, where each packet is a call of its own.
    struct Messages {
        names: [MaybeUninit<libc::sockaddr_storage>; MAX_BATCH],
        iovs: [MaybeUninit<libc::iovec>; MAX_BATCH],
        hdrs: [MaybeUninit<libc::mmsghdr>; MAX_BATCH],
    }

    impl Messages {
        fn uninit() -> Self {
            Self {
                names: [const { MaybeUninit::uninit() }; MAX_BATCH],
                iovs: [const { MaybeUninit::uninit() }; MAX_BATCH],
                hdrs: [const { MaybeUninit::uninit() }; MAX_BATCH],
            }
        }

        /// Where each array starts (valid while `self` stays where it is).
        fn pointers(
            &mut self,
        ) -> (
            *mut libc::sockaddr_storage,
            *mut libc::iovec,
            *mut libc::mmsghdr,
        ) {
            (
                self.names.as_mut_ptr().cast(),
                self.iovs.as_mut_ptr().cast(),
                self.hdrs.as_mut_ptr().cast(),
            )
        }
    }

    /// One message header: the buffer `iov` and room for the peer's address at `name`.
    fn header(
        name: *mut libc::sockaddr_storage,
        name_len: libc::socklen_t,
        iov: *mut libc::iovec,
    ) -> libc::mmsghdr {
        // SAFETY: a plain C struct for which all-zero is a valid value (and the portable
        // way to get its private padding fields right).
        let mut h: libc::mmsghdr = unsafe { zeroed() };
        h.msg_hdr.msg_name = name.cast();
        h.msg_hdr.msg_namelen = name_len;
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h
    }

    pub(super) fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        let n = batch.capacity.min(MAX_BATCH);
        let mut arrays = Messages::uninit();
        let (names, iovs, hdrs) = arrays.pointers();
        for (i, chunk) in batch.bufs.chunks_mut(batch.slot).take(n).enumerate() {
            // SAFETY: i < n <= MAX_BATCH: in bounds of each array; writes initialise.
            unsafe {
                iovs.add(i).write(libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: chunk.len(),
                });
                hdrs.add(i).write(header(
                    names.add(i),
                    size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                    iovs.add(i),
                ));
            }
        }
        let received = loop {
            // SAFETY: `hdrs[..n]` point at `names`, `iovs` and disjoint slots of
            // `batch.bufs`, all alive and unaliased for the duration of the call.
            let rc = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    hdrs,
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                // ICMP errors queued on the socket; nothing to read now.
                io::ErrorKind::ConnectionRefused => return Ok(0),
                _ => return Err(e),
            }
        };
        for i in 0..received.min(n) {
            // SAFETY: header i was initialised above and the kernel filled it and
            // `msg_namelen` bytes of its address.
            let (len, source) = unsafe {
                let h = &*hdrs.add(i);
                (
                    h.msg_len as usize,
                    from_name(names.add(i), h.msg_hdr.msg_namelen),
                )
            };
            // A truncated datagram reports the bytes copied (the whole slot), which is more
            // than the engine accepts: it is dropped and counted as oversized there.
            batch.lens[i] = len.min(batch.slot);
            batch.sources[i] =
                source.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        }
        Ok(received.min(n))
    }

    pub(super) fn send_chunk(socket: &UdpSocket, chunk: &[Transmit], outcome: &mut SendOutcome) {
        // `send_batch` hands over at most `MAX_BATCH`; anything past that is counted as
        // dropped rather than written past the arrays.
        let n = chunk.len().min(MAX_BATCH);
        outcome.dropped += (chunk.len() - n) as u64;
        let chunk = &chunk[..n];
        let mut arrays = Messages::uninit();
        let (names, iovs, hdrs) = arrays.pointers();
        for (i, t) in chunk.iter().enumerate() {
            // SAFETY: i < n <= MAX_BATCH: in bounds of each array; writes initialise (the
            // kernel reads `name_len` bytes of the address, all written by `to_sockaddr`).
            unsafe {
                let name_len = to_sockaddr(&t.destination, names.add(i));
                iovs.add(i).write(libc::iovec {
                    // sendmmsg only reads through this pointer.
                    iov_base: t.contents.as_ptr() as *mut libc::c_void,
                    iov_len: t.contents.len(),
                });
                hdrs.add(i)
                    .write(header(names.add(i), name_len, iovs.add(i)));
            }
        }
        let mut done = 0;
        let mut retries = 0;
        while done < n {
            // SAFETY: `hdrs[done..n]` point at live `names`, `iovs` and transmit buffers.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    hdrs.add(done),
                    (n - done) as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if rc > 0 {
                for t in &chunk[done..done + rc as usize] {
                    outcome.sent += 1;
                    outcome.bytes += t.contents.len() as u64;
                }
                done += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if retries < SEND_RETRIES => {
                    retries += 1;
                    wait_writable(socket.as_raw_fd(), SEND_RETRY_WAIT);
                }
                io::ErrorKind::WouldBlock => {
                    outcome.dropped += (n - done) as u64;
                    return;
                }
                // The first datagram of the rest was refused: skip it, send the others.
                _ => {
                    tracing::debug!(destination = %chunk[done].destination, error = %e, "send refused");
                    outcome.errors += 1;
                    done += 1;
                }
            }
        }
    }

    /// The address the kernel wrote at `name` (`len` bytes of it).
    ///
    /// # Safety
    /// `name` is valid for reads of a `sockaddr_storage`, and its first `len` bytes are
    /// initialised.
    unsafe fn from_name(
        name: *const libc::sockaddr_storage,
        len: libc::socklen_t,
    ) -> Option<SocketAddr> {
        let len = len as usize;
        if len < size_of::<libc::sa_family_t>() {
            return None;
        }
        // SAFETY: the family is within the first `len` bytes; each kind is read only when
        // all its bytes are, and the storage is aligned for every sockaddr.
        match libc::c_int::from(unsafe { std::ptr::addr_of!((*name).ss_family).read() }) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                let a = unsafe { name.cast::<libc::sockaddr_in>().read() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let a = unsafe { name.cast::<libc::sockaddr_in6>().read() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Write `addr` at `out`; returns how many bytes of it the kernel should read.
    ///
    /// # Safety
    /// `out` is valid for writes of a `sockaddr_storage`.
    unsafe fn to_sockaddr(addr: &SocketAddr, out: *mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
                unsafe { out.cast::<libc::sockaddr_in>().write(sin) };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: all-zero is a valid sockaddr_in6; fields are set below.
                let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                sin6.sin6_scope_id = a.scope_id();
                // SAFETY: as above.
                unsafe { out.cast::<libc::sockaddr_in6>().write(sin6) };
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_chunk_longer_than_a_batch_sends_a_batch_and_counts_the_rest() {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
            let transmits: Vec<Transmit> = (0..MAX_BATCH + 1)
                .map(|i| Transmit {
                    source: socket.local_addr().unwrap(),
                    destination: sink.local_addr().unwrap(),
                    contents: vec![i as u8; 8],
                })
                .collect();
            let mut outcome = SendOutcome::default();
            send_chunk(&socket, &transmits, &mut outcome);
            assert_eq!((outcome.sent, outcome.dropped), (MAX_BATCH as u64, 1));
        }

        #[test]
        fn socket_addresses_convert_both_ways() {
            for addr in [
                "192.0.2.7:3478".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:40000".parse().unwrap(),
            ] {
                let mut ss = MaybeUninit::<libc::sockaddr_storage>::uninit();
                // SAFETY: `ss` is a whole sockaddr_storage; `from_name` reads only the
                // `len` bytes `to_sockaddr` wrote.
                let back = unsafe {
                    let len = to_sockaddr(&addr, ss.as_mut_ptr());
                    from_name(ss.as_ptr(), len)
                };
                assert_eq!(back, Some(addr));
                // Too short for the family it claims, or no family at all: no address.
                // SAFETY: as above, with fewer bytes claimed than were written.
                assert_eq!(unsafe { from_name(ss.as_ptr(), 8) }, None);
                assert_eq!(unsafe { from_name(ss.as_ptr(), 0) }, None);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::{wait_writable, RecvBatch, SendOutcome, SEND_RETRIES, SEND_RETRY_WAIT};
    use crate::participant::Transmit;

    pub(super) fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        let mut n = 0;
        while n < batch.capacity {
            let start = n * batch.slot;
            let buf = &mut batch.bufs[start..start + batch.slot];
            match socket.recv_from(buf) {
                Ok((len, source)) => {
                    batch.lens[n] = len.min(batch.slot);
                    batch.sources[n] = source;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    break
                }
                Err(e) if n == 0 => return Err(e),
                // Deliver what was read; the error comes back on the next call.
                Err(_) => break,
            }
        }
        Ok(n)
    }

    pub(super) fn send_chunk(socket: &UdpSocket, chunk: &[Transmit], outcome: &mut SendOutcome) {
        let mut retries = 0;
        let mut i = 0;
        while i < chunk.len() {
            let t = &chunk[i];
            match socket.send_to(&t.contents, t.destination) {
                Ok(_) => {
                    outcome.sent += 1;
                    outcome.bytes += t.contents.len() as u64;
                    i += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && retries < SEND_RETRIES => {
                    retries += 1;
                    wait_writable(socket.as_raw_fd(), SEND_RETRY_WAIT);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    outcome.dropped += (chunk.len() - i) as u64;
                    return;
                }
                Err(_) => {
                    outcome.errors += 1;
                    i += 1;
                }
            }
        }
    }
}

/// Wakes a worker blocked in [`wait`] (a control command is waiting for it).
#[derive(Clone, Debug)]
pub struct Waker {
    tx: Arc<UnixDatagram>,
}

/// The worker's end of its [`Waker`].
#[derive(Debug)]
pub struct WakeReceiver {
    rx: UnixDatagram,
}

pub fn waker() -> io::Result<(Waker, WakeReceiver)> {
    let (tx, rx) = UnixDatagram::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Waker { tx: Arc::new(tx) }, WakeReceiver { rx }))
}

impl Waker {
    pub fn wake(&self) {
        // A full buffer means wake-ups are already pending: nothing is lost.
        let _ = self.tx.send(&[1]);
    }
}

impl WakeReceiver {
    pub fn raw_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Consume pending wake-ups.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while self.rx.recv(&mut buf).is_ok() {}
    }
}

/// What became ready during [`wait`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub socket: bool,
    pub wake: bool,
}

/// Block until the socket is readable, a wake-up arrives, or `timeout` passes (rounded up
/// to whole milliseconds, `poll`'s resolution: timers fire at most 1 ms late).
pub fn wait(socket: &MediaSocket, wake: &WakeReceiver, timeout: Duration) -> Readiness {
    let mut fds = [
        libc::pollfd {
            fd: socket.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_micros().div_ceil(1000);
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    // SAFETY: two valid pollfds.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if rc <= 0 {
        return Readiness::default();
    }
    Readiness {
        socket: fds[0].revents != 0,
        wake: fds[1].revents != 0,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn a_batch_receives_what_several_senders_sent() {
        let sock = MediaSocket::bind(loopback(), 1 << 20).unwrap();
        let senders: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind(loopback()).unwrap())
            .collect();
        for round in 0..10u8 {
            for (i, s) in senders.iter().enumerate() {
                s.send_to(&[i as u8, round], sock.local_addr()).unwrap();
            }
        }
        let mut batch = RecvBatch::new(16, 2048);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 30 && Instant::now() < deadline {
            let n = sock.recv_batch(&mut batch).unwrap();
            assert!(n <= 16);
            assert_eq!(batch.len(), n);
            for (src, bytes) in batch.iter() {
                let i = usize::from(bytes[0]);
                assert_eq!(src, senders[i].local_addr().unwrap());
                got.push((i, bytes[1]));
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got.len(), 30);
        for i in 0..3 {
            let rounds: Vec<u8> = got.iter().filter(|g| g.0 == i).map(|g| g.1).collect();
            assert_eq!(
                rounds,
                (0..10).collect::<Vec<u8>>(),
                "per-source order kept"
            );
        }
        // Nothing left: a non-blocking read says so.
        assert_eq!(sock.recv_batch(&mut batch).unwrap(), 0);
        assert!(batch.is_empty());
    }

    #[test]
    fn a_dual_stack_socket_receives_and_answers_both_families() {
        // Where the machine has no IPv6 there is nothing to test.
        let (Ok(sock), Ok(v6)) = (
            MediaSocket::bind("[::]:0".parse().unwrap(), 1 << 20),
            UdpSocket::bind("[::1]:0"),
        ) else {
            eprintln!("no IPv6 loopback: skipped");
            return;
        };
        let v4 = UdpSocket::bind(loopback()).unwrap();
        let port = sock.local_addr().port();
        for round in 0..5u8 {
            v6.send_to(&[6, round], ("::1", port)).unwrap();
            v4.send_to(&[4, round], ("127.0.0.1", port)).unwrap();
        }
        let mapped = SocketAddr::new(
            std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
            v4.local_addr().unwrap().port(),
        );
        let mut batch = RecvBatch::new(3, 64);
        let mut sources = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sources.len() < 10 && Instant::now() < deadline {
            sock.recv_batch(&mut batch).unwrap();
            for (src, bytes) in batch.iter() {
                let want = if bytes[0] == 6 {
                    v6.local_addr().unwrap()
                } else {
                    mapped
                };
                assert_eq!(src, want, "datagram {bytes:?}");
                sources.push(src);
            }
        }
        assert_eq!(sources.len(), 10);
        // Answered in one batch, each family at its own address.
        let replies: Vec<Transmit> = sources
            .iter()
            .map(|&destination| Transmit {
                source: sock.local_addr(),
                destination,
                contents: vec![9],
            })
            .collect();
        assert_eq!(sock.send_batch(&replies).sent, 10);
        for s in [&v6, &v4] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 8];
            for _ in 0..5 {
                assert_eq!(s.recv(&mut buf).unwrap(), 1);
            }
        }
    }

    #[test]
    fn oversized_datagrams_come_out_longer_than_any_valid_one() {
        let sock = MediaSocket::bind(loopback(), 0).unwrap();
        let s = UdpSocket::bind(loopback()).unwrap();
        s.send_to(&[7u8; 3000], sock.local_addr()).unwrap();
        s.send_to(&[8u8; 100], sock.local_addr()).unwrap();
        let mut batch = RecvBatch::new(4, 1501);
        let mut lens = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while lens.len() < 2 && Instant::now() < deadline {
            sock.recv_batch(&mut batch).unwrap();
            lens.extend(batch.iter().map(|(_, b)| b.len()));
        }
        assert_eq!(lens, vec![1501, 100]);
    }

    #[test]
    fn a_send_batch_reaches_every_destination_and_skips_bad_ones() {
        let sock = MediaSocket::bind(loopback(), 1 << 20).unwrap();
        let sinks: Vec<UdpSocket> = (0..4)
            .map(|_| UdpSocket::bind(loopback()).unwrap())
            .collect();
        let mut transmits: Vec<Transmit> = (0..150)
            .map(|i| Transmit {
                source: sock.local_addr(),
                destination: sinks[i % 4].local_addr().unwrap(),
                contents: vec![i as u8; 100],
            })
            .collect();
        // An IPv6 destination from an IPv4 socket is refused by the kernel.
        transmits.insert(
            70,
            Transmit {
                source: sock.local_addr(),
                destination: "[::1]:9".parse().unwrap(),
                contents: vec![0; 10],
            },
        );
        let outcome = sock.send_batch(&transmits);
        assert_eq!(outcome.sent, 150);
        assert_eq!(outcome.bytes, 150 * 100);
        assert_eq!(outcome.errors, 1);
        assert_eq!(outcome.dropped, 0);
        for (k, sink) in sinks.iter().enumerate() {
            sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 200];
            let mut firsts = Vec::new();
            for _ in 0..(150 - k).div_ceil(4) {
                let (n, from) = sink.recv_from(&mut buf).unwrap();
                assert_eq!(n, 100);
                assert_eq!(from, sock.local_addr());
                firsts.push(buf[0]);
            }
            let expected: Vec<u8> = (k..150).step_by(4).map(|i| i as u8).collect();
            assert_eq!(firsts, expected);
        }
    }

    #[test]
    fn wait_returns_on_wake_data_or_timeout() {
        let sock = MediaSocket::bind(loopback(), 0).unwrap();
        let (waker, rx) = waker().unwrap();
        let t = Instant::now();
        assert_eq!(
            wait(&sock, &rx, Duration::from_millis(20)),
            Readiness::default()
        );
        assert!(t.elapsed() >= Duration::from_millis(15));

        let w = waker.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        let r = wait(&sock, &rx, Duration::from_secs(10));
        assert!(r.wake && !r.socket);
        th.join().unwrap();
        rx.drain();
        assert!(!wait(&sock, &rx, Duration::ZERO).wake);

        UdpSocket::bind(loopback())
            .unwrap()
            .send_to(b"x", sock.local_addr())
            .unwrap();
        assert!(wait(&sock, &rx, Duration::from_secs(10)).socket);
    }
}
