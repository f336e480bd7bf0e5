//! Process lifecycle: signals, systemd notifications.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// What must happen before the process ends at once on a second signal:
/// the power cut (set by the daemon once its outputs are open).
#[derive(Clone, Default)]
pub struct ForceExit(Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>);

impl std::fmt::Debug for ForceExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ForceExit")
            .field(&self.0.get().is_some())
            .finish()
    }
}

impl ForceExit {
    /// Sets what to do before a forced exit (once; later calls are ignored).
    pub fn set(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(f));
    }

    fn run(&self) {
        if let Some(f) = self.0.get() {
            f();
        }
    }
}

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second signal
/// ends the process at once (exit 130), for an operator who means it, but
/// only after what the returned [`ForceExit`] holds (the power cut).
pub fn shutdown_on_signals() -> std::io::Result<(CancellationToken, ForceExit)> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let force = ForceExit::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    let f = force.clone();
    tokio::spawn(async move {
        for round in 0..2 {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if round == 0 {
                tracing::info!(signal = name, "shutting down");
                t.cancel();
            } else {
                f.run();
                tracing::warn!(signal = name, "second signal: power cut, exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok((token, force))
}

/// Tells systemd we are serving (`READY=1`). A no-op without `NOTIFY_SOCKET`.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Updates the status line `systemctl status` shows.
pub fn notify_status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

/// Tells systemd we are stopping (`STOPPING=1`).
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Gives memory freed in bulk (a password check's 12 MiB, the parse of a
/// large configuration file) back to the system: glibc keeps freed memory
/// in its arenas otherwise, and the box counts it as used.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free memory of the allocator's
        // arenas to the system; it touches no live allocation.
        #[expect(unsafe_code, reason = "glibc's malloc_trim has no safe wrapper")]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
