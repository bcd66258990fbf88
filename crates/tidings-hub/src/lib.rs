//! # tidings-hub
//!
//! The Tidings hub as a library: a standalone server-sent events pub/sub server. Anyone
//! publishes with one HTTP request; any browser subscribes with a plain `EventSource`.
//! The `tidings` binary runs it as `tidings serve` (the default subcommand).
//!
//! Where things live:
//! - [`http`]: the routes (subscribe, publish, topics, health), problem+json errors, CORS;
//! - [`engine`]: the [`Engine`](engine::Engine) trait, the in-memory engine and the durable
//!   disk engine (SQLite, group commit; see `ENGINES.md`);
//! - [`fanout`]: the subscriber registry, delivery of live events, resume without gaps;
//! - [`topics`]: topic names and patterns;
//! - [`auth`]: who may publish and subscribe (JSON Web Tokens that name topics);
//! - [`config`]: flags, environment variables and the TOML file;
//! - [`tls`]: HTTPS, the certificate and its reload;
//! - [`web`]: the page served at `/`.
//!
//! Start a hub in your own program:
//!
//! ```no_run
//! # async fn run() -> Result<(), tidings_hub::Error> {
//! use tidings_hub::{Server, Settings};
//!
//! let server = Server::bind(Settings::default()).await?; // 127.0.0.1:8080
//! server.run().await // until SIGINT/SIGTERM, then a graceful shutdown
//! # }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod engine;
mod error;
pub mod fanout;
pub mod http;
mod hub;
mod server;
pub mod tls;
pub mod topics;
pub mod web;

pub use config::{Config, Settings};
pub use error::{Error, ErrorKind};
pub use hub::Hub;
pub use server::{init_logging, serve, serve_blocking, Server};
