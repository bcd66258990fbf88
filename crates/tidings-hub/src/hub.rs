//! [`Hub`]: an engine, the fan-out that feeds subscribers from it, and the settings both
//! run with. The HTTP API ([`crate::http`]) is a thin layer over it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::auth::{Access, JwtKey, Verifier, MIN_SECRET_BYTES};
use crate::config::{EngineKind, Settings};
use crate::engine::{
    DiskEngine, DiskOptions, Engine, MemoryEngine, NewEvent, RedisEngine, RedisOptions, StoredEvent,
};
use crate::error::Error;
use crate::fanout::{Fanout, FanoutCounts};

/// The hub: stores events in an [`Engine`] and fans them out to subscribers.
///
/// Create it inside a tokio runtime: it spawns the fan-out task, which stops when the hub
/// is shut down (or dropped).
pub struct Hub {
    engine: Arc<dyn Engine>,
    fanout: Arc<Fanout>,
    settings: Settings,
    fanout_task: Mutex<Option<JoinHandle<()>>>,
    shutting_down: AtomicBool,
    /// A random name for this hub process, so that what it numbers (presence sessions)
    /// differs from what other hubs sharing its engine number.
    instance: String,
    /// Checks tokens, when the settings give a key.
    verifier: Option<Verifier>,
    /// Events stored through this hub (publishes and its own presence events).
    published: AtomicU64,
    /// Requests refused for their token: without a valid one (401), and for a topic it
    /// does not grant (403).
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("engine", &self.engine.name())
            .field("fanout", &self.fanout)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with the engine `settings.engine` names (the disk engine in
    /// `settings.data_dir`, the memory engine, or the Redis engine at `settings.redis_url`).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the engine cannot be opened (for the disk engine:
    /// the data dir cannot be created or written, is in use by another hub, or holds a
    /// corrupt database; the message names the path and what to do).
    pub async fn new(settings: Settings) -> Result<Arc<Hub>, Error> {
        let engine = open_engine(&settings).await?;
        Hub::with_engine(settings, engine).await
    }

    /// A hub over a given engine (e.g. one built outside this crate).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the engine cannot tell its head;
    /// [`crate::ErrorKind::Config`] when the token settings cannot work (see
    /// [`crate::auth::AuthSettings::validate`]).
    pub async fn with_engine(
        settings: Settings,
        engine: Arc<dyn Engine>,
    ) -> Result<Arc<Hub>, Error> {
        let verifier = settings.auth.verifier()?;
        warn_about_access(&settings);
        warn_about_limits(&settings);
        // Subscribe to the live feed before reading the head: every event stored after
        // the head is then on the feed, so the fan-out misses nothing.
        let receiver = engine.subscribe_live();
        let head = engine.head().await?;
        let fanout = Arc::new(Fanout::new(
            settings.slow_client,
            settings.max_queue_bytes,
            settings.max_connections,
        ));
        let task = tokio::spawn(Arc::clone(&fanout).run(Arc::clone(&engine), receiver, head));
        Ok(Arc::new(Hub {
            engine,
            fanout,
            settings,
            fanout_task: Mutex::new(Some(task)),
            shutting_down: AtomicBool::new(false),
            instance: format!("{:08x}", random_u64() as u32),
            verifier,
            published: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
        }))
    }

    /// The engine events are stored in.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The fan-out (subscriber registry and delivery).
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// A random name for this hub process (8 hex digits), e.g. in presence events'
    /// session ids, so hubs sharing a Redis never give two sessions the same id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// What checks tokens (`None` when the settings give no key: then both kinds of access
    /// are open).
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// The settings the hub runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What the fan-out has done so far.
    pub fn counts(&self) -> FanoutCounts {
        self.fanout.counts()
    }

    /// Whether [`Hub::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stores `events` (validated already) and returns them with their ids; the fan-out
    /// delivers them from the engine's live feed.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the engine could not store them; then none were.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<StoredEvent>>, Error> {
        let stored = self.engine.append(events).await?;
        self.published
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        Ok(stored)
    }

    /// Events stored through this hub so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Requests refused for their token so far: (401 unauthorized, 403 forbidden).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.unauthorized.load(Ordering::Relaxed),
            self.forbidden.load(Ordering::Relaxed),
        )
    }

    /// Counts a request refused for its token (`forbidden`: a 403, else a 401).
    pub(crate) fn count_refusal(&self, forbidden: bool) {
        let counter = if forbidden {
            &self.forbidden
        } else {
            &self.unauthorized
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Refuses new subscribers and closes every open stream, so clients reconnect (after
    /// their jittered `retry:`) to another hub or to this one when it is back.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.fanout.close_all();
    }

    /// Stops the fan-out task and flushes the engine. Call after the server stopped.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the engine could not flush.
    pub async fn finish_shutdown(&self) -> Result<(), Error> {
        self.begin_shutdown();
        let task = self
            .fanout_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
        self.engine.flush().await
    }
}

/// Opens the engine `settings.engine` names, with the retention the settings give. The
/// disk engine blocks while it opens its database (start-up only).
///
/// # Errors
/// [`crate::ErrorKind::Engine`] when the engine cannot be opened (for the disk engine: the
/// data dir cannot be created or written, is in use by another hub, or holds a corrupt
/// database; the message names the path and what to do).
pub(crate) async fn open_engine(settings: &Settings) -> Result<Arc<dyn Engine>, Error> {
    if settings.engine != EngineKind::Disk && settings.history_max_bytes.is_some() {
        tracing::warn!(
            history_max_bytes = settings.history_max_bytes,
            engine = ?settings.engine,
            "history_max_bytes applies to the disk engine only; this engine keeps history_max_events and history_max_age"
        );
    }
    if settings.engine != EngineKind::Disk && !settings.retention.is_empty() {
        tracing::warn!(
            topics = ?settings.retention.keys().collect::<Vec<_>>(),
            engine = ?settings.engine,
            "the [retention] tables of the configuration apply to the disk engine only; \
             this engine keeps history_max_events and history_max_age for every topic"
        );
    }
    Ok(match settings.engine {
        EngineKind::Memory => Arc::new(MemoryEngine::new(
            settings.history_max_events,
            settings.history_max_age,
        )),
        EngineKind::Disk => Arc::new(DiskEngine::open(
            &settings.data_dir,
            DiskOptions::from_settings(settings)?,
        )?),
        EngineKind::Redis => {
            Arc::new(RedisEngine::connect(RedisOptions::from_settings(settings)?).await?)
        }
    })
}

/// Warns about limits that are valid but work against each other.
fn warn_about_limits(settings: &Settings) {
    if settings.max_queue_bytes < settings.max_body_bytes {
        tracing::warn!(
            max_queue_bytes = settings.max_queue_bytes,
            max_body_bytes = settings.max_body_bytes,
            "max_queue_bytes is below max_body_bytes: one large publish can reach a live subscriber faster than it reads, and the slow-client policy then acts on subscribers that keep up"
        );
    }
}

/// Warns about access settings that are valid but likely not what was meant.
fn warn_about_access(settings: &Settings) {
    let auth = &settings.auth;
    if auth.publish == Access::Open && !settings.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %settings.listen,
            "anyone who can reach this address may publish; set jwt_secret (or jwt_public_key) so that publishing takes a token"
        );
    }
    if let Some(JwtKey::Secret(secret)) = &auth.key {
        if secret.len() < MIN_SECRET_BYTES {
            tracing::warn!(
                bytes = secret.len(),
                "jwt_secret is short; use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 32`)"
            );
        }
    }
    if auth.key.is_some() && auth.publish == Access::Open && auth.subscribe == Access::Open {
        tracing::warn!("a JWT key is set but publish_auth and subscribe_auth are both open: no token is ever checked");
    }
}

/// A random number, different in each process and each call (std's hasher keys are
/// seeded from the OS). For ids and jitter, not for secrets.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self
            .fanout_task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}
