//! The control task: the one place where signaling's requests meet the media workers.
//!
//! It keeps the control link up (dial, register, reconnect with backoff; rooms keep running
//! while signaling is away), routes each request to the worker that owns the room or the
//! session ([`WorkerPlacement`]), relays the workers' replies and events back, sends
//! heartbeats with the node's load, and runs the graceful drain: refuse new offers, tell
//! signaling (`Heartbeat.draining`), wait for rooms to empty or the drain timeout, then hand
//! whatever is left back to signaling by closing the link (signaling ends those sessions as
//! "node lost" and the clients rejoin elsewhere) and stop the workers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_proto::control::{
    ControlBody, ControlError, ControlMessage, ErrorCode, Heartbeat, NodeLoad, NodeRegister,
    NodeSecret,
};
use haven_proto::{NodeId, RoomId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::node::control_link::{self, LinkConfig, LinkEvent};
use crate::node::cpu::{process_cpu_time, CpuMeter};
use crate::node::placement::WorkerPlacement;
use crate::node::stats::{LinkState, NodeStats};
use crate::node::worker::{WorkerCommand, WorkerHandle, WorkerReport};

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    pub secret: NodeSecret,
    pub capacity: u32,
    /// Worker 0's media address, given in the registration (each answer carries its own
    /// worker's address in its ICE candidate).
    pub media_addr: SocketAddr,
    pub link: LinkConfig,
    pub heartbeat_interval: Duration,
    /// Room packing (see `placement.rs`).
    pub pack_participants: u32,
    pub pack_cpu_permille: u32,
    pub drain_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// A request handed to a worker, waiting for its reply.
#[derive(Debug)]
struct Pending {
    generation: u64,
    /// Signaling's request id.
    id: u64,
    /// For offers: the room whose in-flight count to release.
    room: Option<RoomId>,
}

struct ActiveLink {
    generation: u64,
    out: mpsc::Sender<ControlMessage>,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    writer: tokio::task::JoinHandle<()>,
}

pub struct Controller {
    cfg: ControllerConfig,
    workers: Vec<WorkerHandle>,
    stats: Arc<NodeStats>,
    placement: WorkerPlacement,
    pending: HashMap<u64, Pending>,
    next_tag: u64,
    link: Option<ActiveLink>,
    generation: u64,
    link_tx: mpsc::UnboundedSender<LinkEvent>,
    reconnect_at: Option<tokio::time::Instant>,
    backoff: Duration,
    drain_deadline: Option<tokio::time::Instant>,
    cpu: CpuMeter,
}

impl Controller {
    pub fn new(
        cfg: ControllerConfig,
        workers: Vec<WorkerHandle>,
        stats: Arc<NodeStats>,
        link_tx: mpsc::UnboundedSender<LinkEvent>,
    ) -> Self {
        let n = workers.len();
        let placement = WorkerPlacement::new(n, cfg.pack_participants);
        Self {
            backoff: cfg.reconnect_min,
            cfg,
            workers,
            stats,
            placement,
            pending: HashMap::new(),
            next_tag: 1,
            link: None,
            generation: 0,
            link_tx,
            reconnect_at: None,
            drain_deadline: None,
            cpu: CpuMeter::new(process_cpu_time(), Instant::now()),
        }
    }

    /// Run until drained (after `drain` is cancelled) or `force` is cancelled.
    pub async fn run(
        mut self,
        mut reports: mpsc::UnboundedReceiver<WorkerReport>,
        mut link_rx: mpsc::UnboundedReceiver<LinkEvent>,
        drain: CancellationToken,
        force: CancellationToken,
    ) {
        self.start_connect();
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.drained() {
                info!("no participants left; shutting down");
                break;
            }
            let reconnect_at = self.reconnect_at;
            let drain_deadline = self.drain_deadline;
            tokio::select! {
                Some(r) = reports.recv() => self.on_report(r),
                Some(e) = link_rx.recv() => self.on_link_event(e),
                _ = heartbeat.tick() => self.heartbeat(),
                _ = sleep_until(reconnect_at) => {
                    self.reconnect_at = None;
                    self.start_connect();
                }
                _ = drain.cancelled(), if self.drain_deadline.is_none() => self.start_drain(),
                _ = sleep_until(drain_deadline) => {
                    warn!(
                        participants = self.placement.participants(),
                        "drain timeout; handing the remaining rooms back to signaling"
                    );
                    break;
                }
                _ = force.cancelled() => {
                    warn!("second signal; stopping now");
                    break;
                }
            }
        }
        self.finish(&mut reports).await;
    }

    fn drained(&self) -> bool {
        self.drain_deadline.is_some()
            && self.placement.participants() == 0
            && self.placement.in_flight() == 0
            && self.pending.is_empty()
    }

    // ------------------------------------------------------------------ link

    fn start_connect(&mut self) {
        self.generation += 1;
        self.stats
            .set_link_state(if self.stats.link_state() == LinkState::Refused {
                LinkState::Refused
            } else {
                LinkState::Connecting
            });
        let register = NodeRegister {
            node_id: self.cfg.node_id.clone(),
            media_addr: self.cfg.media_addr,
            capacity: self.cfg.capacity,
            load: self.load(),
            secret: self.cfg.secret.clone(),
        };
        debug!(generation = self.generation, to = %self.cfg.link.signaling_addr, "dialling signaling");
        tokio::spawn(control_link::connect(
            self.cfg.link.clone(),
            register,
            self.generation,
            self.link_tx.clone(),
        ));
    }

    fn schedule_reconnect(&mut self, delay: Duration) {
        // Jitter (±25 %) so a fleet of nodes does not reconnect in lockstep.
        let jitter = 0.75 + rand_unit() * 0.5;
        let delay = delay.mul_f64(jitter);
        self.reconnect_at = Some(tokio::time::Instant::now() + delay);
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up {
                generation,
                out,
                connection,
                endpoint,
                writer,
            } => {
                if generation != self.generation {
                    connection.close(0u32.into(), b"superseded");
                    return;
                }
                info!(signaling = %connection.remote_address(), "registered with signaling");
                self.stats.set_link_state(LinkState::Up);
                self.stats.link_connects.fetch_add(1, Ordering::Relaxed);
                self.backoff = self.cfg.reconnect_min;
                self.link = Some(ActiveLink {
                    generation,
                    out,
                    connection,
                    endpoint,
                    writer,
                });
                // Signaling forgot our rooms if the link was down; tell it what is here.
                for w in &self.workers {
                    w.send(WorkerCommand::ReportRosters);
                }
                self.heartbeat();
            }
            LinkEvent::Failed { generation, error } => {
                if generation != self.generation {
                    return;
                }
                let delay = if error.is_refusal() {
                    error!(error = %error, "signaling refused this node; check the node secret");
                    self.stats.set_link_state(LinkState::Refused);
                    self.cfg.reconnect_max
                } else {
                    warn!(error = %error, retry_in = ?self.backoff, "cannot reach signaling");
                    self.stats.set_link_state(LinkState::Down);
                    let d = self.backoff;
                    self.backoff = (self.backoff * 2).min(self.cfg.reconnect_max);
                    d
                };
                self.schedule_reconnect(delay);
            }
            LinkEvent::Message { generation, msg } => {
                if generation == self.generation {
                    self.stats.control_in.fetch_add(1, Ordering::Relaxed);
                    self.on_message(msg);
                }
            }
            LinkEvent::Down { generation, reason } => {
                if self
                    .link
                    .as_ref()
                    .is_none_or(|l| l.generation != generation)
                {
                    return;
                }
                warn!(%reason, "control link to signaling lost; rooms keep running");
                self.link = None;
                self.stats.set_link_state(LinkState::Down);
                self.schedule_reconnect(self.cfg.reconnect_min);
            }
        }
    }

    fn send(&self, msg: ControlMessage) {
        let Some(link) = &self.link else {
            self.stats.control_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match link.out.try_send(msg) {
            Ok(()) => {
                self.stats.control_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.control_dropped.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "control message dropped");
            }
        }
    }

    fn reply_error(&self, to: &ControlMessage, code: ErrorCode, message: &str) {
        self.send(to.reply(ControlBody::Error(ControlError {
            code,
            message: message.to_owned(),
        })));
    }

    // ------------------------------------------------------------------ requests

    fn on_message(&mut self, msg: ControlMessage) {
        let session = match &msg.body {
            ControlBody::Offer(offer) => {
                let room = offer.room;
                if self.drain_deadline.is_some() {
                    self.stats
                        .offers_refused_draining
                        .fetch_add(1, Ordering::Relaxed);
                    return self.reply_error(&msg, ErrorCode::NodeFull, "node is draining");
                }
                let used =
                    self.placement.participants() as u64 + u64::from(self.placement.in_flight());
                if used >= u64::from(self.cfg.capacity) {
                    return self.reply_error(&msg, ErrorCode::NodeFull, "node is full");
                }
                let (stats, limit) = (&self.stats, u64::from(self.cfg.pack_cpu_permille));
                let worker = self.placement.place_offer(room, |w| {
                    stats
                        .workers
                        .get(w)
                        .is_some_and(|s| s.gauges.cpu_permille.load(Ordering::Relaxed) > limit)
                });
                return self.dispatch(worker, msg, Some(room));
            }
            ControlBody::Leave(l) => l.session,
            ControlBody::Kick(k) => k.session,
            ControlBody::ServerMute(m) => m.session,
            ControlBody::SelfMute(m) => m.session,
            ControlBody::Deafen(d) => d.session,
            // Replies to our own requests (the registration) and refusals.
            ControlBody::Ack => return,
            ControlBody::Error(e) => {
                warn!(code = ?e.code, message = %e.message, id = msg.id, "signaling reported an error");
                return;
            }
            other => {
                debug!(message = ?other, "not a request the node serves");
                if msg.id != 0 {
                    self.reply_error(&msg, ErrorCode::BadMessage, "not a request the SFU serves");
                }
                return;
            }
        };
        match self.placement.worker_of_session(session) {
            Some(worker) => self.dispatch(worker, msg, None),
            None => self.reply_error(
                &msg,
                ErrorCode::UnknownSession,
                &format!("no participant with session {session}"),
            ),
        }
    }

    fn dispatch(&mut self, worker: usize, mut msg: ControlMessage, room: Option<RoomId>) {
        let tag = self.next_tag;
        self.next_tag += 1;
        let id = msg.id;
        self.pending.insert(
            tag,
            Pending {
                generation: self.generation,
                id,
                room,
            },
        );
        msg.id = tag;
        let sent = self
            .workers
            .get(worker)
            .is_some_and(|w| w.send(WorkerCommand::Control(msg)));
        if !sent {
            error!(worker, "media worker is gone");
            self.pending.remove(&tag);
            if let Some(room) = room {
                self.placement.offer_finished(room);
            }
            let reply = ControlMessage::new(
                id,
                ControlBody::Error(ControlError {
                    code: ErrorCode::Internal,
                    message: "media worker unavailable".into(),
                }),
            );
            self.send(reply);
        }
    }

    // ------------------------------------------------------------------ workers

    fn on_report(&mut self, report: WorkerReport) {
        match report {
            WorkerReport::Reply { reply, .. } => {
                let Some(p) = self.pending.remove(&reply.id) else {
                    return;
                };
                if let Some(room) = p.room {
                    self.placement.offer_finished(room);
                }
                if p.generation == self.generation {
                    self.send(ControlMessage { id: p.id, ..reply });
                }
            }
            WorkerReport::Joined {
                worker,
                room,
                session,
            } => self.placement.joined(worker, room, session),
            WorkerReport::Left { worker, left } => {
                self.placement.left(worker, left.session);
                self.send(ControlMessage::new(0, ControlBody::ParticipantLeft(left)));
            }
            WorkerReport::Notify { bodies, .. } => {
                for body in bodies {
                    self.send(ControlMessage::new(0, body));
                }
            }
            WorkerReport::Stopped { worker } => {
                error!(worker, "media worker stopped unexpectedly");
            }
        }
    }

    // ------------------------------------------------------------------ load, drain

    fn load(&self) -> NodeLoad {
        NodeLoad {
            participants: u32::try_from(self.placement.participants()).unwrap_or(u32::MAX),
            rooms: u32::try_from(self.placement.rooms()).unwrap_or(u32::MAX),
            cpu_permille: self.cpu.permille(),
        }
    }

    fn heartbeat(&mut self) {
        let permille = self.cpu.update(
            process_cpu_time(),
            Instant::now(),
            self.cfg.heartbeat_interval / 2,
        );
        self.stats
            .process_cpu_permille
            .store(u64::from(permille), Ordering::Relaxed);
        if self.link.is_some() {
            self.send(ControlMessage::new(
                0,
                ControlBody::Heartbeat(Heartbeat {
                    node_id: self.cfg.node_id.clone(),
                    load: self.load(),
                    draining: self.drain_deadline.is_some(),
                }),
            ));
        }
    }

    fn start_drain(&mut self) {
        info!(
            participants = self.placement.participants(),
            timeout = ?self.cfg.drain_timeout,
            "draining: refusing new offers, waiting for rooms to empty"
        );
        self.stats.draining.store(true, Ordering::Relaxed);
        self.drain_deadline = Some(tokio::time::Instant::now() + self.cfg.drain_timeout);
        self.heartbeat();
    }

    async fn finish(mut self, reports: &mut mpsc::UnboundedReceiver<WorkerReport>) {
        self.stats.draining.store(true, Ordering::Relaxed);
        // Close the link first: signaling ends what is left as "node lost" (the clients
        // rejoin elsewhere) instead of hearing a "left" for each.
        if let Some(link) = self.link.take() {
            // Let the writer flush what is queued (replies, the last events) first.
            drop(link.out);
            let _ = tokio::time::timeout(Duration::from_secs(2), link.writer).await;
            link.connection.close(0u32.into(), b"node shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), link.endpoint.wait_idle()).await;
        }
        self.stats.set_link_state(LinkState::Down);
        for w in &self.workers {
            w.send(WorkerCommand::Shutdown);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.workers.iter().all(|w| w.is_finished())
            && tokio::time::Instant::now() < deadline
        {
            // Reports of the last moments (goodbyes) have nowhere to go any more.
            if let Ok(None) = tokio::time::timeout(Duration::from_millis(20), reports.recv()).await
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for w in &mut self.workers {
            if w.is_finished() {
                w.join();
            }
        }
        info!("node stopped");
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A number in [0, 1) good enough for jitter, without a RNG dependency.
fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
