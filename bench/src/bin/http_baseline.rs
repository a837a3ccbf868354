//! `http_baseline`: the bare-HTTP baseline of the benchmark (see BENCHMARKS.md). A minimal
//! axum server that answers every request with one fixed JSON body shaped like a `/stock`
//! answer: no auth, no database, no RPC, no logging. What HTTP alone costs on the machine, so
//! stock-hot can be reported as a fraction of it.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use clap::Parser;

/// The body of every answer: a `/stock` response of the same shape and size.
const BODY: &str = r#"{"symbol":"AAPL.US","company_name":"APPLE","quote":183.05}"#;

#[derive(Parser)]
#[command(about = "Minimal axum server answering a fixed JSON body: the bare-HTTP baseline")]
struct Cli {
    /// Address to bind; port 0 picks a free one (announced on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("binding {}", cli.addr))?;
    let addr = listener.local_addr()?;
    // The same shape as the services' JSON start-up line, which the harness reads the bound
    // address from.
    println!(
        "{}",
        serde_json::json!({
            "level": "INFO",
            "fields": {"message": "http_baseline listening", "addr": addr.to_string()},
        })
    );
    let app = Router::new().fallback(|| async { ([(CONTENT_TYPE, "application/json")], BODY) });
    axum::serve(listener, app).await?;
    Ok(())
}
