use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = api_service::cli::Cli::parse();
    shared::telemetry::init("info");
    match api_service::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line with the whole cause chain, each cause once; operators need the reason,
            // not a backtrace.
            let error = shared::error_chain::report(err.as_ref());
            tracing::error!(error, "api_service failed");
            ExitCode::FAILURE
        }
    }
}
