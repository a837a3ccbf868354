use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = api_service::cli::Cli::parse();
    shared::telemetry::init("info");
    api_service::cli::run(cli).await
}
