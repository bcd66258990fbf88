//! `tidings serve` (the default subcommand): runs the hub. Everything lives in
//! `tidings_hub`; this is the glue between the command line and it.

use std::process::ExitCode;

/// Options of `tidings serve`: every hub setting as a flag with a `TIDINGS_*` variable,
/// plus `--config FILE` (see `tidings_hub::config`).
pub(crate) type ServeArgs = tidings_hub::Config;

/// Runs the hub until SIGINT or SIGTERM; exit code 0 after a graceful shutdown, 2 for
/// invalid settings, 1 for anything else (e.g. the address is in use).
pub(crate) fn run(args: ServeArgs) -> ExitCode {
    match tidings_hub::serve_blocking(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tidings serve: {err}");
            match err.kind() {
                tidings_hub::ErrorKind::Config => ExitCode::from(crate::exit::USAGE),
                _ => ExitCode::from(crate::exit::FAILURE),
            }
        }
    }
}
