//! systemd readiness notifications (`Type=notify`): READY, RELOADING and STOPPING through `$NOTIFY_SOCKET`.
//! Without systemd (no socket) every call does nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The service is up: configuration loaded, endpoint bound, state recovered from the stores.
pub fn ready() {
    send(&[
        NotifyState::Ready,
        NotifyState::Status("scheduling backups"),
    ]);
}

/// A configuration reload begins (followed by [`ready`]).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("finishing running backups"),
    ]);
}
