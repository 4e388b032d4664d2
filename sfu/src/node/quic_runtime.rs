//! quinn on tokio, with timers that do not wake the thread for deadlines that moved.
//!
//! quinn drives each connection with one timer, reset whenever the connection's next
//! deadline changes. A tokio `Sleep` moved later stays in the timer wheel at its old slot
//! and is re-filed only when that slot comes up, which wakes the runtime for nothing. On
//! the control link that happened after every message: the loss-detection deadline (~30 ms
//! on loopback) was set as it went out, the acknowledgement moved the deadline seconds
//! ahead, and the control thread still woke at 30 ms. That was one of the three wake-ups
//! per message (send, acknowledgement, stale timer) on a thread where each costs ~0.1 ms
//! of CPU at light load. Here a timer moved later is replaced, and dropping the old `Sleep`
//! takes it out of the wheel.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};

/// [`TokioRuntime`] with [`PromptTimer`]s.
#[derive(Debug)]
pub struct PromptTimers;

impl Runtime for PromptTimers {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(PromptTimer::new(at))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        TokioRuntime.spawn(future);
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        TokioRuntime.wrap_udp_socket(socket)
    }
}

/// A tokio sleep that is replaced, not extended, when its deadline moves later.
pub struct PromptTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl PromptTimer {
    pub fn new(at: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.sleep.deadline().into_std()
    }
}

impl fmt::Debug for PromptTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTimer")
            .field("deadline", &self.deadline())
            .finish()
    }
}

impl AsyncTimer for PromptTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        let this = self.get_mut();
        let at = tokio::time::Instant::from_std(at);
        if at > this.sleep.deadline() {
            this.sleep = Box::pin(tokio::time::sleep_until(at));
        } else {
            this.sleep.as_mut().reset(at);
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Future::poll(self.get_mut().sleep.as_mut(), cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::*;

    async fn expire(timer: &mut Pin<Box<dyn AsyncTimer>>) {
        poll_fn(|cx| timer.as_mut().poll(cx)).await;
    }

    fn is_due(timer: &mut Pin<Box<dyn AsyncTimer>>) -> bool {
        let waker = std::task::Waker::noop();
        timer
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
    }

    #[tokio::test]
    async fn a_timer_moved_later_fires_at_the_new_deadline_only() {
        let t0 = Instant::now();
        let mut timer = PromptTimers.new_timer(t0 + Duration::from_millis(20));
        assert!(!is_due(&mut timer), "registered, not due");
        timer.as_mut().reset(t0 + Duration::from_millis(1000));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            !is_due(&mut timer),
            "the old deadline passed; the new one has not"
        );
        tokio::time::timeout(Duration::from_secs(10), expire(&mut timer))
            .await
            .expect("fires");
        assert!(t0.elapsed() >= Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn a_timer_moved_earlier_fires_early() {
        let t0 = Instant::now();
        let mut timer = PromptTimers.new_timer(t0 + Duration::from_secs(60));
        assert!(!is_due(&mut timer));
        timer.as_mut().reset(t0 + Duration::from_millis(30));
        tokio::time::timeout(Duration::from_secs(10), expire(&mut timer))
            .await
            .expect("fires long before the first deadline");
        assert!(t0.elapsed() >= Duration::from_millis(30));
        // Due timers stay due until moved again.
        assert!(is_due(&mut timer));
        timer
            .as_mut()
            .reset(Instant::now() + Duration::from_secs(60));
        assert!(!is_due(&mut timer));
    }
}
