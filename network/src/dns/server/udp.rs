//! UDP: one dedicated thread per socket. The socket is nonblocking; the thread drains it in
//! batches (`recvmmsg`), answers local names and cache hits inline and sends the batch of
//! responses at once (`sendmmsg`), then sleeps in `poll` until the next datagram or a wake-up
//! on stop. Only queries that need the upstreams become tasks on the tokio runtime, which
//! send their response on the same socket.
//!
//! Keeping the hot path off the runtime spares it the wake-ups and cross-thread hand-offs of
//! several receive tasks competing for one socket: on a small machine those made the latency
//! tail.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::handle::{Handler, Outcome, Pending, Scratch};

/// Datagrams received (and responses sent) per system call at most.
const BATCH: usize = 16;
/// Receive buffer per datagram of a batch.
const RECV_BUFFER: usize = 4096;

/// A running UDP thread; dropping it (or [`stop`](UdpThread::stop)) ends the thread.
pub(super) struct UdpThread {
    wake: UnixDatagram,
    done: Option<oneshot::Receiver<()>>,
}

impl UdpThread {
    /// Serve `sock` on a new thread; upstream queries run on `rt`.
    pub(super) fn start(
        sock: Arc<UdpSocket>,
        handler: Arc<Handler>,
        rt: Handle,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let (wake, woken) = UnixDatagram::pair()?;
        woken.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("k8slite-dns-udp".into())
            .spawn(move || {
                let _done = done_tx;
                Worker::new(sock, handler, rt, shutdown).run(&woken);
            })?;
        Ok(Self {
            wake,
            done: Some(done),
        })
    }

    /// Wake the thread to end and wait until it has (and dropped its socket).
    pub(super) async fn stop(mut self) {
        let _ = self.wake.send(&[1]);
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for UdpThread {
    fn drop(&mut self) {
        let _ = self.wake.send(&[1]);
    }
}

/// The thread's state: the socket, buffers reused across batches.
struct Worker {
    sock: Arc<UdpSocket>,
    handler: Arc<Handler>,
    rt: Handle,
    shutdown: CancellationToken,
    bufs: Vec<Vec<u8>>,
    /// Length and sender of each datagram of the current batch.
    got: Vec<(usize, Option<SockaddrStorage>)>,
    outs: Vec<Vec<u8>>,
    /// Destination of each response in `outs` (same order).
    to: Vec<Option<SockaddrStorage>>,
    rx: MultiHeaders<SockaddrStorage>,
    tx: MultiHeaders<SockaddrStorage>,
    scratch: Scratch,
}

impl Worker {
    fn new(
        sock: Arc<UdpSocket>,
        handler: Arc<Handler>,
        rt: Handle,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            sock,
            handler,
            rt,
            shutdown,
            bufs: (0..BATCH).map(|_| vec![0u8; RECV_BUFFER]).collect(),
            got: Vec::with_capacity(BATCH),
            outs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            to: Vec::with_capacity(BATCH),
            // Separate headers: sendmmsg points them at our addresses, recvmmsg at its own.
            rx: MultiHeaders::preallocate(BATCH, None),
            tx: MultiHeaders::preallocate(BATCH, None),
            scratch: Scratch::default(),
        }
    }

    fn run(mut self, woken: &UnixDatagram) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            match self.receive() {
                Ok(0) => {}
                Ok(_) => {
                    self.answer();
                    self.send();
                }
                Err(Errno::EAGAIN) => {
                    if !self.wait(woken) {
                        return;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e @ (Errno::EBADF | Errno::ENOTSOCK | Errno::EINVAL | Errno::EFAULT)) => {
                    tracing::warn!(error = %e, "dns udp receive: stopping");
                    return;
                }
                // ICMP errors of earlier replies surface here on some kernels: keep serving.
                Err(e) => tracing::debug!(error = %e, "dns udp receive"),
            }
        }
    }

    /// Sleep until the socket is readable; false when woken to stop.
    fn wait(&self, woken: &UnixDatagram) -> bool {
        let mut fds = [
            PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(woken.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let stop = fds[1]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
                !stop && !self.shutdown.is_cancelled()
            }
            Err(Errno::EINTR) => true,
            Err(e) => {
                tracing::warn!(error = %e, "dns udp poll: stopping");
                false
            }
        }
    }

    /// Read up to [`BATCH`] datagrams without blocking.
    fn receive(&mut self) -> nix::Result<usize> {
        let fd = self.sock.as_raw_fd();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let res = recvmmsg(
            fd,
            &mut self.rx,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        self.got.clear();
        for m in res {
            self.got.push((m.bytes, m.address));
        }
        Ok(self.got.len())
    }

    /// Answer the received batch into `outs`/`to`; upstream queries go to the runtime.
    fn answer(&mut self) {
        self.to.clear();
        for (i, &(len, from)) in self.got.iter().enumerate() {
            let Some(from) = from else { continue };
            let Some(packet) = self.bufs.get(i).and_then(|b| b.get(..len)) else {
                continue;
            };
            let Some(out) = self.outs.get_mut(self.to.len()) else {
                continue;
            };
            match self.handler.handle(packet, false, &mut self.scratch, out) {
                Outcome::Reply => self.to.push(Some(from)),
                Outcome::Later(pending) => {
                    if let Some(peer) = socket_addr(&from) {
                        self.upstream(pending, peer);
                    }
                }
                Outcome::Nothing => {}
            }
        }
    }

    /// Send the responses of the batch. A datagram that cannot be sent is dropped (the
    /// client retries), as a failed `send_to` would.
    fn send(&mut self) {
        let n = self.to.len();
        let mut start = 0;
        while start < n {
            let iovs: Vec<[IoSlice<'_>; 1]> = self.outs[start..n]
                .iter()
                .map(|o| [IoSlice::new(o)])
                .collect();
            let cmsgs: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                self.sock.as_raw_fd(),
                &mut self.tx,
                iovs.iter(),
                &self.to[start..n],
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
            ) {
                // The count of sent datagrams is not read (nix's iterator over a send result
                // reads addresses it never set): all or the rest fail together in practice.
                Ok(_) => return,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "dns udp send");
                    // Skip the datagram that failed, try the rest.
                    start += 1;
                }
            }
        }
    }

    /// Resolve through the upstreams on the runtime, then answer on the same socket.
    fn upstream(&self, pending: Box<Pending>, peer: SocketAddr) {
        let Ok(permit) = self.handler.pending.clone().try_acquire_owned() else {
            // Too many upstream queries in flight: the client will retry.
            return;
        };
        let handler = self.handler.clone();
        let sock = self.sock.clone();
        let shutdown = self.shutdown.clone();
        // Ends with the server (the socket is not held past `run`).
        self.rt.spawn(async move {
            let answer = async {
                let mut out = Vec::with_capacity(512);
                handler.finish(pending, false, &mut out).await;
                drop(permit);
                // Nonblocking: never stalls the runtime; a full buffer drops the answer.
                if let Err(e) = sock.send_to(&out, peer) {
                    tracing::debug!(%peer, error = %e, "dns udp send");
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = answer => {}
            }
        });
    }
}

/// The sender's address as a `SocketAddr`.
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}
