use clap::Parser;
use fake_stooq::{FakeState, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init("info");
    let settings = Settings::parse();
    let config = settings.to_config();
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, mode = %config.mode, "fake_stooq listening");
    tokio::select! {
        () = fake_stooq::serve(listener, FakeState::new(config)) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}
