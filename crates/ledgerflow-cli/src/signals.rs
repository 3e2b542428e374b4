//! SIGTERM / SIGINT for the long-running commands.

use tokio::signal::unix::{signal, SignalKind};

/// On the first SIGTERM or SIGINT, logs `{signal}: {what}` and calls `then`.
pub fn on_shutdown(what: &'static str, then: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name}: {what}");
        then();
    });
    Ok(())
}
