//! The Postgres LISTEN connection: `LISTEN haven_events`, parse each NOTIFY, hand it on.
//!
//! A dedicated connection (LISTEN state belongs to a session), reconnected with exponential
//! backoff when the database goes away. NOTIFYs sent while we were disconnected are lost, so
//! every (re)connection after the first is announced as [`ListenerEvent::Resynced`]: the
//! consumer must treat its caches as stale and re-check what events would have told it.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db_event::DbEvent;
use crate::metrics::{inc, Metrics};

/// The NOTIFY channel of supabase/API.md.
pub const CHANNEL: &str = "haven_events";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerEvent {
    /// LISTEN is active (first connection).
    Connected,
    /// LISTEN is active again after a gap: events may have been missed.
    Resynced,
    /// The connection is down; reconnecting.
    Disconnected,
    Event(DbEvent),
}

/// Exponential backoff with a cap, reset after a successful connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay (with ±20 % jitter so restarted instances do not reconnect in step).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = 0.8 + 0.4 * (rand_unit());
        base.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

fn rand_unit() -> f64 {
    // Cheap jitter source; not security relevant.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Runs the listener until `stop` is cancelled, sending what it hears to `out`.
pub async fn run_listener(
    database_url: String,
    application_name: String,
    out: mpsc::Sender<ListenerEvent>,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut first = true;
    loop {
        if stop.is_cancelled() {
            return;
        }
        match listen_once(
            &database_url,
            &application_name,
            &out,
            &metrics,
            &stop,
            first,
            &mut backoff,
        )
        .await
        {
            Ok(()) => return, // stopped
            Err(e) => {
                inc(&metrics.db_listener_reconnects);
                warn!(error = %e, "LISTEN connection lost or refused; reconnecting");
            }
        }
        // After any attempt (successful or not), later connections are resyncs.
        if out.send(ListenerEvent::Disconnected).await.is_err() {
            return;
        }
        first = false;
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn listen_once(
    url: &str,
    application_name: &str,
    out: &mpsc::Sender<ListenerEvent>,
    metrics: &Metrics,
    stop: &CancellationToken,
    first: bool,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| e.to_string())?;
    if config.get_application_name().is_none() {
        // Lets operators (and tests) find this connection in pg_stat_activity.
        config.application_name(application_name);
    }
    let (client, mut connection) =
        tokio::time::timeout(Duration::from_secs(5), config.connect(NoTls))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
    // The connection must be polled for the LISTEN to run and to receive notifications.
    let (tx, mut messages) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(m) => {
                    if tx.send(m).is_err() {
                        break;
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err::<(), String>("connection closed".to_string())
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        info!("listening for database events");
        backoff.reset();
        let hello = if first {
            ListenerEvent::Connected
        } else {
            ListenerEvent::Resynced
        };
        if out.send(hello).await.is_err() {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = messages.recv() => match m {
                    Some(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                        inc(&metrics.db_events);
                        match DbEvent::parse(n.payload()) {
                            Ok(e) => {
                                if out.send(ListenerEvent::Event(e)).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Err(e) => {
                                inc(&metrics.db_events_dropped);
                                warn!(error = %e, "dropping an unreadable event");
                            }
                        }
                    }
                    Some(_) => {}
                    None => return Err("connection closed".to_string()),
                },
            }
        }
    }
    .await;
    driver.abort();
    drop(client);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        let bases = [100u64, 200, 400, 800, 800, 800];
        for (d, base) in delays.iter().zip(bases) {
            let ms = d.as_millis() as u64;
            assert!(
                ms >= base * 8 / 10 && ms <= base * 12 / 10,
                "{ms} vs {base}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
