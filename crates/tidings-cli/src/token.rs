//! `tidings token`: makes a token (an HS256 JWT) that a hub with the same `jwt_secret`
//! takes, granting the topics given; see `tidings_hub::auth` for what the claims mean.

use std::process::ExitCode;

use clap::Args;
use tidings_hub::auth::{issue, Rights};
use tidings_hub::config::{HumanDuration, Secret};
use tidings_hub::topics::TopicPattern;

use crate::exit;

/// Options of `tidings token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The hub's jwt_secret (prefer the environment variable: the command line is visible
    /// to other users of the machine).
    #[arg(
        long,
        env = "TIDINGS_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    secret: Option<Secret>,

    /// A topic or pattern (`chat/*`, `*`) the token may publish to (repeatable).
    #[arg(long = "publish", short = 'p', value_name = "TOPIC")]
    publish: Vec<String>,

    /// A topic or pattern the token may subscribe to and read the history of (repeatable).
    #[arg(long = "subscribe", short = 's', value_name = "TOPIC")]
    subscribe: Vec<String>,

    /// How long the token is valid: 30m, 12h, ...; 0 for a token that never expires.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    ttl: HumanDuration,

    /// The audience (`aud` claim), for hubs run with --jwt-audience.
    #[arg(long, value_name = "AUDIENCE")]
    audience: Option<String>,
}

/// Runs `tidings token`: prints the token, or says what is wrong (exit code 2).
pub fn run(args: TokenArgs) -> ExitCode {
    match make(&args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("tidings token: {message}");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn make(args: &TokenArgs) -> Result<String, String> {
    let Some(Secret(secret)) = &args.secret else {
        return Err(
            "no secret: set TIDINGS_JWT_SECRET (or --secret) to the hub's jwt_secret".to_owned(),
        );
    };
    if secret.is_empty() {
        return Err("the secret is empty; give the hub's jwt_secret".to_owned());
    }
    if args.audience.as_deref() == Some("") {
        return Err("--audience is empty; name the hub's jwt_audience, or leave it out".to_owned());
    }
    if args.publish.is_empty() && args.subscribe.is_empty() {
        return Err(
            "a token that grants nothing is of no use: give --publish TOPIC or --subscribe TOPIC (or both)"
                .to_owned(),
        );
    }
    let patterns = |texts: &[String], flag: &str| {
        texts
            .iter()
            .map(|text| {
                TopicPattern::parse(text).map_err(|err| format!("--{flag} {text:?}: {err}"))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let rights = Rights {
        publish: patterns(&args.publish, "publish")?,
        subscribe: patterns(&args.subscribe, "subscribe")?,
    };
    let ttl = Some(args.ttl.0).filter(|ttl| !ttl.is_zero());
    issue(secret.as_bytes(), &rights, ttl, args.audience.as_deref()).map_err(|err| err.to_string())
}
