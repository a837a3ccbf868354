use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = api_service::cli::Cli::parse();
    shared::telemetry::init("info");
    match api_service::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line with the whole cause chain; operators need the reason, not a backtrace.
            tracing::error!(error = format!("{err:#}"), "api_service failed");
            ExitCode::FAILURE
        }
    }
}
