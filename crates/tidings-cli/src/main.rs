//! `tidings`: the Tidings hub and its tools in one binary.
//!
//! `tidings serve` (the default) runs the hub; `tidings listen URL` prints an event stream;
//! `tidings publish` sends events to a hub; `tidings bench` measures delivery;
//! `tidings token` makes tokens for hubs that take them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod listen;
mod publish;
mod serve;
mod token;

/// Exit codes, the same for every subcommand, so scripts can tell failures apart.
pub(crate) mod exit {
    /// Anything not listed below (reading standard input, writing standard output, ...).
    pub const FAILURE: u8 = 1;
    /// The command line, a URL or a header was invalid (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The server could not be reached, or the connection failed or went silent.
    pub const CONNECTION: u8 = 3;
    /// The server answered with an HTTP status that means "no".
    pub const STATUS: u8 = 4;
    /// The server answered with the wrong content type (or a body that could not be read).
    pub const CONTENT_TYPE: u8 = 5;
    /// An event was larger than `--max-event-size`.
    pub const EVENT_TOO_LARGE: u8 = 6;
}

/// The exit codes, as `--help` shows them.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other failure (reading standard input, writing standard output)
  2  usage: invalid arguments, URL or header
  3  connection: the server could not be reached, or the connection failed
  4  HTTP status: the server said no (e.g. 401, 404, 500)
  5  content type: the answer was not text/event-stream (listen) or not the expected JSON (publish)
  6  event too large (listen --max-event-size)";

/// The exit codes of `tidings serve`, as `--help` shows them.
const SERVE_EXIT_CODES: &str = "\
Exit codes (serve):
  0  stopped by SIGINT or SIGTERM, after a graceful shutdown
  1  could not run: the address is taken, or the engine cannot be opened or reached
     (a data dir another hub holds, an unreachable Redis)
  2  invalid settings (a flag, a TIDINGS_* variable or the config file)
The other subcommands list their own: tidings listen --help, tidings publish --help.";

/// Spec-exact server-sent events: a pub/sub hub, and the tools to talk to it.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, after_help = SERVE_EXIT_CODES, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, `tidings` runs `tidings serve` with these options.
    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: publish over HTTP, subscribe with EventSource (the default).
    #[command(after_help = SERVE_EXIT_CODES)]
    Serve(serve::ServeArgs),
    /// Print the events of an event stream as they arrive (curl for event streams).
    #[command(after_help = EXIT_CODES)]
    Listen(listen::ListenArgs),
    /// Publish events to a hub, printing the id it assigns to each.
    #[command(after_help = EXIT_CODES)]
    Publish(publish::PublishArgs),
    /// Load any SSE server with subscribers and a publisher, and measure delivery.
    Bench(bench::BenchArgs),
    /// Make a token (JWT) for a hub run with --jwt-secret, granting topics to publish to
    /// and to subscribe to.
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(token::TokenArgs),
}

/// Examples, as `tidings token --help` shows them.
const TOKEN_EXAMPLES: &str = "\
Examples:
  export TIDINGS_JWT_SECRET=\"$(openssl rand -base64 32)\"   # the hub's and the tool's
  tidings serve &                                            # publishing now takes a token
  tidings publish --token \"$(tidings token --publish 'orders')\" -t orders '{\"id\":42}'
  tidings token --subscribe 'chat/*' --ttl 12h              # for EventSource: ?access_token=

Exit codes: 0 the token is printed, 2 invalid arguments (nothing is printed).";

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        let _ = err.print();
        if let Some((flag, variable)) = environment_source(&err) {
            eprintln!("note: {flag} came from the environment variable {variable}");
        }
        std::process::exit(err.exit_code())
    });
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve::run(args),
        Command::Listen(args) => listen::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Token(args) => token::run(args),
    }
}

/// Whether `uri` names a port that is not one (`http::Uri` takes `:99999` and then reports
/// no port at all). An empty port (`host:`) is allowed, and means the default.
pub(crate) fn has_invalid_port(uri: &http::Uri) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    let written = authority
        .as_str()
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && !port.contains(']'));
    written && authority.port().is_none()
}

/// The flag and the environment variable it came from, when clap's error names a flag
/// the user did not write but set through its `TIDINGS_*` variable (clap names the flag,
/// e.g. `--max-topics <N>`, in both cases).
fn environment_source(err: &clap::Error) -> Option<(String, String)> {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let command = Cli::command();
    [ContextKind::InvalidArg, ContextKind::PriorArg]
        .into_iter()
        .filter_map(|kind| match err.get(kind) {
            Some(ContextValue::String(arg)) => Some(arg.clone()),
            _ => None,
        })
        .find_map(|arg| {
            let long = arg.strip_prefix("--")?.split([' ', '=']).next()?.to_owned();
            let written = std::env::args_os().any(|a| {
                a.to_str().is_some_and(|a| {
                    a == format!("--{long}") || a.starts_with(&format!("--{long}="))
                })
            });
            if written {
                return None;
            }
            std::iter::once(&command)
                .chain(command.get_subcommands())
                .flat_map(|c| c.get_arguments())
                .filter(|a| a.get_long() == Some(long.as_str()))
                .find_map(|a| a.get_env())
                .filter(|name| std::env::var_os(name).is_some())
                .map(|name| (format!("--{long}"), name.to_string_lossy().into_owned()))
        })
}

/// `--token`, for the subcommands that talk to a hub.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct TokenArg {
    /// Send `Authorization: Bearer TOKEN`, for hubs that take tokens (`tidings token`
    /// makes one).
    #[arg(
        long,
        env = "TIDINGS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

impl TokenArg {
    /// `headers` (from `--header`) with the token's `Authorization` header added.
    ///
    /// # Errors
    /// A message for people when `headers` has an `Authorization` header too: the hub
    /// refuses a request with two.
    pub(crate) fn add_to(
        &self,
        headers: &[(String, String)],
    ) -> Result<Vec<(String, String)>, String> {
        let mut all = headers.to_vec();
        if let Some(token) = &self.token {
            if headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            {
                return Err(
                    "give the token with --token or with -H 'Authorization: …', not both"
                        .to_owned(),
                );
            }
            all.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        Ok(all)
    }
}

/// `--cacert`, for the subcommands that talk to a hub over `https://`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct CaCertArg {
    /// Trust the certificates in this PEM file for https:// URLs, besides the usual
    /// public roots: for a hub with a self-signed or private certificate (as curl's
    /// --cacert).
    #[arg(long, env = "TIDINGS_CACERT", value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
}

impl CaCertArg {
    /// The DER of each certificate in the `--cacert` file (none without one).
    ///
    /// # Errors
    /// A message for people when the file cannot be read or holds no certificate.
    pub(crate) fn load(&self) -> Result<Vec<Vec<u8>>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;

        let Some(path) = &self.cacert else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read --cacert {}: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map(|c| c.as_ref().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--cacert {} is not a valid PEM file: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "--cacert {} holds no certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(certificates)
    }
}

/// The TLS client configuration of the tools: the public roots and those of `--cacert`
/// (see [`tidings::client::tls_client_config`]).
///
/// # Errors
/// A message for people when the `--cacert` file cannot be used.
pub(crate) fn tls_client_config(cacert: &CaCertArg) -> Result<rustls::ClientConfig, String> {
    tidings::client::tls_client_config(&cacert.load()?).map_err(|e| format!("--cacert: {e}"))
}

/// Parses a `--header` argument written `Name: value`.
pub(crate) fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a header: write it as `Name: value`"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{text}` has no header name before the `:`"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// A current-thread tokio runtime for one subcommand.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["tidings"]).expect("parses");
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["tidings", "serve"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::Serve(_))));
    }

    #[test]
    fn headers_are_name_colon_value() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b"),
            Ok(("Authorization".to_owned(), "Bearer a:b".to_owned()))
        );
        assert_eq!(
            parse_header("X-Empty:"),
            Ok(("X-Empty".to_owned(), String::new()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
    }

    #[test]
    fn ports_must_fit_in_sixteen_bits() {
        let invalid = |url: &str| has_invalid_port(&url.parse().expect("a URI"));
        assert!(invalid("http://127.0.0.1:99999/x"));
        assert!(invalid("http://[::1]:70000/"));
        assert!(!invalid("http://127.0.0.1:8080/x"));
        assert!(!invalid("http://[::1]/"));
        assert!(!invalid("http://example.com/"));
        assert!(!invalid("http://example.com:/"));
    }
}
