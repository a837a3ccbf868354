//! `rpc_echo serve` / `rpc_echo load`: the one-message-per-call baseline (see `bench::echo`).

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Bare RPC echo over RabbitMQ: the baseline the real stack is compared with")]
struct Cli {
    /// Broker to talk to.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reply to every request on the queue at once (reply_to + correlation_id, ack after publish).
    Serve {
        /// Request queue (declared durable if missing).
        #[arg(long)]
        queue: String,
        /// Unacked deliveries allowed at once, like the real worker's prefetch.
        #[arg(long, default_value_t = 64)]
        prefetch: u16,
    },
    /// Keep N calls in flight over direct reply-to and print one JSON line of results.
    Load {
        #[arg(long)]
        queue: String,
        /// Calls kept outstanding at all times.
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// How long to load (10s, 500ms, 1m).
        #[arg(long, default_value = "30s", value_parser = shared::config::parse_duration)]
        duration: Duration,
        /// A call unanswered after this long counts as an error.
        #[arg(long, default_value = "5s", value_parser = shared::config::parse_duration)]
        timeout: Duration,
        /// Delete the queue when done.
        #[arg(long)]
        delete_queue: bool,
        /// Publish `mandatory` on a confirm-mode channel and wait for each confirm, as
        /// api_service does (not part of the bare baseline).
        #[arg(long)]
        confirm: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { queue, prefetch } => {
            bench::echo::serve(&cli.amqp_url, &queue, prefetch).await
        }
        Command::Load {
            queue,
            inflight,
            duration,
            timeout,
            delete_queue,
            confirm,
        } => {
            let result =
                bench::echo::load(&cli.amqp_url, &queue, inflight, duration, timeout, confirm)
                    .await?;
            if delete_queue {
                bench::echo::delete_queue(&cli.amqp_url, &queue).await?;
            }
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
    }
}
