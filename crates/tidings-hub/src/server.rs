//! [`Server`]: the hub bound to a socket, run until a shutdown signal, then shut down
//! gracefully; and [`serve`], what `tidings serve` runs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::{Config, LogFormat, Settings};
use crate::error::{Error, ErrorKind};
use crate::hub::Hub;
use crate::tls::Certificates;

/// The hub listening on a socket.
///
/// ```no_run
/// # async fn run() -> Result<(), tidings_hub::Error> {
/// use tidings_hub::{Server, Settings};
///
/// let settings = Settings { listen: "127.0.0.1:0".parse().expect("addr"), ..Settings::default() };
/// let server = Server::bind(settings).await?;
/// println!("listening on http://{}", server.local_addr());
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// server.run_until(async { let _ = stopped.await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<Certificates>>,
    hub: Arc<Hub>,
}

impl Server {
    /// Opens the engine and binds `settings.listen`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the address cannot be bound; [`ErrorKind::Engine`] when the
    /// engine cannot be opened; [`ErrorKind::Config`] when `settings.tls` names files that
    /// cannot serve HTTPS.
    pub async fn bind(settings: Settings) -> Result<Server, Error> {
        let engine = crate::hub::open_engine(&settings).await?;
        Server::bind_with_engine(settings, engine).await
    }

    /// As [`Server::bind`], over an engine built by the caller (e.g. one from another
    /// crate, or a test double); `settings.engine` is ignored.
    ///
    /// # Errors
    /// As [`Server::bind`].
    pub async fn bind_with_engine(
        mut settings: Settings,
        engine: Arc<dyn crate::engine::Engine>,
    ) -> Result<Server, Error> {
        fit_open_files(&mut settings);
        let tls = match settings.tls.clone() {
            Some(files) => Some(Arc::new(Certificates::load(files)?)),
            None => None,
        };
        let listen = settings.listen;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("cannot listen on {listen}"), e)
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::with_source(ErrorKind::Io, "cannot read the bound address", e))?;
        let hub = Hub::with_engine(settings, engine).await?;
        Ok(Server {
            listener,
            local_addr,
            tls,
            hub,
        })
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL of the hub's root: `https://` when it serves TLS, else `http://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.local_addr)
    }

    /// The hub behind the server.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully (see
    /// [`Server::run_until`]).
    ///
    /// # Errors
    /// As [`Server::run_until`].
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then: stops accepting connections, closes every
    /// event stream (each flushes what is queued and ends; clients reconnect after their
    /// jittered `retry:`), waits for open requests to finish (at most
    /// `shutdown_timeout`), and flushes the engine.
    ///
    /// With TLS, `SIGHUP` reads the certificate files again (on Unix): new connections get
    /// the new certificate; when the files cannot serve, the error is logged and the old
    /// certificate stays.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when serving fails; [`ErrorKind::Engine`] when the final flush
    /// fails.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Server {
            listener, tls, hub, ..
        } = self;
        let timeout = hub.settings().shutdown_timeout;
        let started = Arc::new(Notify::new());
        let signal = {
            let hub = Arc::clone(&hub);
            let started = Arc::clone(&started);
            async move {
                shutdown.await;
                tracing::info!(
                    streams = hub.fanout().connections(),
                    "shutting down: closing event streams"
                );
                hub.begin_shutdown();
                started.notify_one();
            }
        };
        let app = crate::http::router(Arc::clone(&hub));
        // Event streams are written straight to their sockets, each event from the
        // fan-out's thread while the subscriber keeps up (see `tidings::server::serve`; no
        // layer of the hub rewrites event-stream bodies); every other request is served by
        // hyper as usual.
        let mut serving = tidings::server::serve(listener, app)
            .lean_when(|request| request.uri.path() == crate::http::EVENTS_PATH)
            .direct_writes(true)
            .with_graceful_shutdown(signal);
        let _reloading = match &tls {
            Some(certificates) => {
                serving = serving.tls(certificates.server_config()?);
                Some(AbortOnDrop(tokio::spawn(reload_on_hangup(Some(
                    Arc::clone(certificates),
                )))))
            }
            None => None,
        };
        let deadline = async {
            started.notified().await;
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            result = std::future::IntoFuture::into_future(serving) => {
                result.map_err(|e| Error::with_source(ErrorKind::Io, "the server failed", e))?;
            }
            () = deadline => {
                tracing::warn!(?timeout, "shutdown timeout: some connections did not finish; exiting anyway");
            }
        }
        hub.finish_shutdown().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What `tidings serve` runs: resolves `config`, starts logging, binds, serves until
/// SIGINT or SIGTERM, shuts down gracefully. `SIGHUP` reads the TLS certificate again
/// (see [`Server::run_until`]), and is ignored without one.
///
/// # Errors
/// [`ErrorKind::Config`] for invalid settings; otherwise as [`Server::bind`] and
/// [`Server::run`].
pub async fn serve(config: Config) -> Result<(), Error> {
    let settings = config.resolve()?;
    init_logging(&settings)?;
    let server = Server::bind(settings).await?;
    let shutdown = shutdown_signal();
    // `SIGHUP` is a reload, never the end: with TLS, `run_until` reads the certificate
    // again; without, it is logged and ignored (as by nginx, a service manager's
    // `reload` must not stop the hub).
    let _hangups = server
        .tls
        .is_none()
        .then(|| AbortOnDrop(tokio::spawn(reload_on_hangup(None))));
    let settings = server.hub().settings();
    tracing::info!(
        address = %server.local_addr(),
        engine = server.hub().engine().name(),
        history_max_events = settings.history_max_events,
        "tidings hub listening on {}",
        server.url()
    );
    server.run_until(shutdown).await
}

/// [`serve`] on a new multi-threaded tokio runtime, for a `main` that has none: the
/// whole of `tidings serve`.
///
/// # Errors
/// [`ErrorKind::Io`] when the runtime cannot start; otherwise as [`serve`].
pub fn serve_blocking(config: Config) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::with_source(ErrorKind::Io, "cannot start the tokio runtime", e))?;
    runtime.block_on(serve(config))
}

/// Starts the tracing subscriber the settings ask for (once per process; later calls do
/// nothing).
///
/// # Errors
/// [`ErrorKind::Config`] when the log filter does not parse.
pub fn init_logging(settings: &Settings) -> Result<(), Error> {
    check_log_filter(&settings.log)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!("log filter {:?} is not valid", settings.log),
            e,
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _already_set = match settings.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

/// Refuses a log filter that would quietly log nothing: `EnvFilter` reads a bare word that
/// is not a level (`warning`, `verbose`) as a target name, which matches no log at all.
fn check_log_filter(filter: &str) -> Result<(), Error> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let refuse = |why: String| {
        Error::new(
            ErrorKind::Config,
            format!(
                "log filter {filter:?}: {why}; use a level ({}) or target=level, comma-separated",
                LEVELS.join(", ")
            ),
        )
    };
    if filter.trim().is_empty() {
        return Err(refuse("it is empty".to_owned()));
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(refuse(format!("`{directive}` is not a level")));
        }
    }
    Ok(())
}

/// Reads the certificate files again on every `SIGHUP` (Unix; elsewhere, never); without
/// certificates, logs that there is nothing to reload. The handler is installed here,
/// before the future is first polled, so that a `SIGHUP` sent as soon as the hub listens
/// reloads instead of ending the process.
fn reload_on_hangup(certificates: Option<Arc<Certificates>>) -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let hangups = signal(SignalKind::hangup());
        async move {
            let mut hangups = match hangups {
                Ok(hangups) => hangups,
                Err(err) => {
                    return tracing::warn!(error = %err, "cannot watch SIGHUP; TLS certificates are read at start-up only");
                }
            };
            while hangups.recv().await.is_some() {
                let Some(certificates) = &certificates else {
                    tracing::info!("SIGHUP: nothing to reload (no TLS certificate); ignored");
                    continue;
                };
                match certificates.reload() {
                    Ok(()) => {
                        tracing::info!("SIGHUP: TLS certificate reloaded; new connections get it")
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "SIGHUP: TLS certificate not reloaded; still serving the previous one")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    async move {
        drop(certificates);
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are installed here, before the future is first polled: a signal sent
    // as soon as the hub says it is listening must not find the default action (exit).
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
                return std::future::pending::<()>().await;
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// File descriptors kept for everything but event streams: the listener, publishers and
/// health checks, the engine's files, the runtime's own.
const RESERVED_FILES: u64 = 128;

/// Raises the soft limit on open files to the hard one (shells and systemd start a process
/// at 1,024, far below what an SSE hub holds), then keeps `max_connections` under what the
/// limit allows: past it the hub answers 503, instead of failing to accept anyone at all.
#[cfg(unix)]
fn fit_open_files(settings: &mut Settings) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            soft = limit.maximum;
        }
    }
    // `None` is no limit at all.
    let Some(soft) = soft else {
        return;
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .max(16);
    if settings.max_connections > room {
        tracing::warn!(
            max_connections = settings.max_connections,
            open_files_limit = soft,
            "lowering max_connections to {room} to stay under the open-files limit; raise the limit (ulimit -n, systemd LimitNOFILE=) to hold more streams"
        );
        settings.max_connections = room;
    }
}

#[cfg(not(unix))]
fn fit_open_files(_settings: &mut Settings) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_that_would_log_nothing_are_refused() {
        for good in [
            "info",
            "WARN",
            "warn,tidings_hub=debug",
            "tidings_hub::fanout=trace",
        ] {
            assert!(check_log_filter(good).is_ok(), "{good}");
        }
        for bad in ["warning", "verbose", "", "  ", "info,nonsense"] {
            let err = check_log_filter(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Config);
        }
    }
}
