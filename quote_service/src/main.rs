//! `quote_service`: parse settings, set up logging, build, run. Everything else is in the lib.

use std::process::ExitCode;

use clap::Parser;
use quote_service::{Application, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    shared::telemetry::init("info");
    let result = async {
        Application::build(settings)
            .await?
            .run_until_stopped()
            .await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Logged like everything else (not anyhow's multi-line Debug on stderr), with
            // each cause once.
            let error = shared::error_chain::report(err.as_ref());
            tracing::error!(error, "quote_service failed");
            ExitCode::FAILURE
        }
    }
}
