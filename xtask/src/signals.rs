//! Waiting for Ctrl-C or SIGTERM without a signal-handling dependency.
//!
//! The main thread blocks SIGINT/SIGTERM and waits for them synchronously, so shutdown
//! runs ordinary code (drop the services in order) instead of an async handler.
//! Services are spawned through haven-devstack, which clears the inherited mask.

/// Blocks SIGINT and SIGTERM for this thread (call before spawning helper threads).
pub fn block_shutdown_signals() {
    // SAFETY: plain sigset manipulation on a local, then pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until SIGINT or SIGTERM arrives; returns the signal's name.
pub fn wait_for_shutdown() -> &'static str {
    // SAFETY: as above; sigwait writes the received signal into `sig`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig: libc::c_int = 0;
        libc::sigwait(&set, &mut sig);
        if sig == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        }
    }
}
