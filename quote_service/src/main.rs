//! `quote_service`: parse settings, set up logging, build, run. Everything else is in the lib.

use clap::Parser;
use quote_service::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    shared::telemetry::init("info");
    let app = Application::build(settings).await?;
    app.run_until_stopped().await
}
