use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let summary = bench::run(bench::Settings::parse()).await?;
    if !summary.failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
