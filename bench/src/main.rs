use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = bench::Settings::parse();
    let run = Box::pin(async move {
        if settings.compare_with.is_some() {
            bench::compare(settings).await.map(|s| s.failures.len())
        } else {
            bench::run(settings).await.map(|s| s.failures.len())
        }
    });
    let failures = tokio::select! {
        failures = run => failures?,
        (signal, status) = interrupted() => {
            // The run future is gone here: its services, wrk and the echo load are killed as
            // their handles drop (`kill_on_drop`). Only the databases need a round trip.
            eprintln!("bench: {signal}; services stopped, dropping the run's databases");
            bench::db::drop_created().await;
            std::process::exit(status);
        }
    };
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Ctrl-C or a SIGTERM (a `timeout`, a CI job cancelled): the run stops and cleans up
/// rather than leaving services running and a `bench_*` database behind. Returns what
/// happened and the shell's exit status for it (128 + the signal's number).
async fn interrupted() -> (&'static str, i32) {
    const BY_CTRL_C: (&str, i32) = ("interrupted", 130);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            eprintln!("bench: cannot watch for SIGTERM ({err}); Ctrl-C still cleans up");
            let _ = tokio::signal::ctrl_c().await;
            return BY_CTRL_C;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => BY_CTRL_C,
        _ = term.recv() => ("terminated", 143),
    }
}
