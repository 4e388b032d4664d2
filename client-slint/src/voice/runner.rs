//! Runs a [`VoiceCall`] for real: one UDP socket, a network thread for datagrams and timers,
//! and the capture/playback device callbacks. Thin on purpose — every decision is in the
//! sans-IO call, engine and media layers, which the tests drive with simulated time.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::voice::call::{CallEvent, VoiceCall};
use crate::voice::device::{AudioDevices, AudioStream, DeviceError};

/// Why a call could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The UDP socket.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// An audio device.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// The local address the OS would use to reach `host:port` (no packet is sent: a UDP
/// `connect` only picks the route). Our ICE host candidate.
pub fn local_address_towards(host: &str, port: u16) -> Result<IpAddr, RunnerError> {
    let target = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("cannot resolve {host}"),
        )
    })?;
    let probe = UdpSocket::bind(if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

/// Bind the call's UDP socket on `ip` (any free port).
pub fn bind_media_socket(ip: IpAddr) -> Result<(UdpSocket, SocketAddr), RunnerError> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

fn lock(call: &Mutex<VoiceCall>) -> MutexGuard<'_, VoiceCall> {
    call.lock().unwrap_or_else(|p| p.into_inner())
}

fn flush(call: &mut VoiceCall, socket: &UdpSocket) {
    while let Some(d) = call.poll_transmit() {
        if let Err(e) = socket.send_to(&d.contents, d.destination) {
            tracing::debug!("media send failed: {e}");
        }
    }
}

/// A running call; dropping it stops the devices and the network thread.
pub struct CallRunner {
    call: Arc<Mutex<VoiceCall>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _input: Option<AudioStream>,
    _output: Option<AudioStream>,
    /// Events of the call (connected, disconnected, speaking, slots).
    pub events: Receiver<CallEvent>,
}

impl CallRunner {
    /// Run `call` on `socket` with the given devices (`None` names: system defaults). A
    /// missing microphone is not fatal (listen-only); a missing speaker is.
    pub fn start(
        call: VoiceCall,
        socket: UdpSocket,
        devices: &AudioDevices,
        input: Option<&str>,
        output: Option<&str>,
    ) -> Result<Self, RunnerError> {
        let call = Arc::new(Mutex::new(call));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = channel();
        let local = socket.local_addr()?;
        let send_socket = socket.try_clone()?;
        let (net_call, net_stop) = (call.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("haven-media".into())
            .spawn(move || {
                let mut buf = vec![0u8; 2048];
                while !net_stop.load(Ordering::Relaxed) {
                    let wait = {
                        let c = lock(&net_call);
                        c.poll_timeout().saturating_duration_since(Instant::now())
                    };
                    let _ = socket.set_read_timeout(Some(
                        wait.clamp(Duration::from_millis(1), Duration::from_millis(50)),
                    ));
                    let received = socket.recv_from(&mut buf);
                    let now = Instant::now();
                    let mut c = lock(&net_call);
                    if let Ok((n, source)) = received {
                        c.handle_datagram(now, source, local, &buf[..n]);
                    }
                    c.handle_timeout(now);
                    flush(&mut c, &socket);
                    while let Some(e) = c.poll_event() {
                        let _ = tx.send(e);
                    }
                }
            })?;
        let capture_call = call.clone();
        let input_stream = devices
            .open_input(input, move |samples, rate, channels| {
                let mut c = lock(&capture_call);
                c.push_capture(Instant::now(), samples, rate, channels);
                // Send right away rather than on the network thread's next wake-up.
                flush(&mut c, &send_socket);
            })
            .map_err(|e| tracing::warn!("no microphone: {e}"))
            .ok();
        let playback_call = call.clone();
        let output_stream = devices.open_output(output, move |out, rate, channels| {
            lock(&playback_call).pull_playback(Instant::now(), out, rate, channels);
        })?;
        Ok(Self {
            call,
            stop,
            thread: Some(thread),
            _input: input_stream,
            _output: Some(output_stream),
            events,
        })
    }

    /// Run `f` on the call (mute, deafen, volumes, levels).
    pub fn with_call<T>(&self, f: impl FnOnce(&mut VoiceCall) -> T) -> T {
        f(&mut lock(&self.call))
    }
}

impl Drop for CallRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self._input.take();
        self._output.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
