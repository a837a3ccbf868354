//! Command line: `serve` (default), `migrate`, and user management for operators.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::settings::{LOGGING_ENV_VARS, LOGGING_HELP, Settings};
use crate::store::{self, Role};
use crate::{Application, users};

#[derive(Debug, Parser)]
#[command(
    name = "api_service",
    version,
    about = "User-facing stock quote API: JWT login, quotes via the quote service, history and stats",
    after_help = LOGGING_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default when no command is given).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user. The password is prompted for twice on a terminal (not echoed), or read
    /// as the first line of stdin when stdin is not a terminal or with --password-stdin.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "user")]
        role: Role,
        /// Read the password as the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user and their history. Running servers stop accepting the user's tokens
    /// within USER_CACHE_TTL (at most 2 s).
    Delete { username: String },
    /// Create the demo accounts admin/admin (admin) and johndoe/john (user). FOR DEMOS ONLY:
    /// the passwords are public. Idempotent.
    SeedDemo,
}

/// The full command definition, e.g. for a test enumerating every env var the binary reads
/// (see also [`env_vars`]).
pub fn cli_command() -> clap::Command {
    Cli::command()
}

/// Every environment variable the binary reads: the settings' and the logging ones.
pub fn env_vars() -> Vec<String> {
    let mut vars: Vec<String> = cli_command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect();
    vars.extend(LOGGING_ENV_VARS.iter().map(|v| v.to_string()));
    vars
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped().await
        }
        Command::Migrate => {
            store::run_migrations(settings.database_url.expose_secret())
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Users { command } => users_command(&settings, command).await,
    }
}

async fn users_command(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    let store = store::connect(settings.database_url.expose_secret(), 1)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    let result = async {
        match command {
            UsersCommand::Create {
                username,
                role,
                password_stdin,
            } => {
                let password = read_password(password_stdin)?;
                let user = users::create_user(store.as_ref(), &username, &password, role).await?;
                println!(
                    "created user {:?} (id {}, role {})",
                    user.username,
                    user.id,
                    user.role.as_str()
                );
            }
            UsersCommand::Delete { username } => {
                if users::delete_user(store.as_ref(), None, &username).await? {
                    println!("deleted user {username:?}");
                } else {
                    anyhow::bail!("no user named {username:?}");
                }
            }
            UsersCommand::SeedDemo => {
                eprintln!(
                    "WARNING: creating demo accounts admin/admin and johndoe/john. \
                     FOR DEMOS ONLY - these passwords are public; never do this in production."
                );
                let created = users::seed_demo(store.as_ref()).await?;
                if created.is_empty() {
                    println!("demo users already exist");
                } else {
                    println!("created demo users: {}", created.join(", "));
                }
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}

fn read_password(from_stdin: bool) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        // Scripts and pipes: the first line of stdin, no prompt.
        let mut line = Zeroizing::new(String::new());
        stdin.lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "empty password");
        return Ok(SecretString::from(password.to_owned()));
    }
    // A person at a terminal: typed without echo (rpassword talks to the terminal itself),
    // twice, so a typo does not become the password.
    let password =
        Zeroizing::new(rpassword::prompt_password("Password: ").context("reading the password")?);
    let again = Zeroizing::new(
        rpassword::prompt_password("Repeat password: ").context("reading the password")?,
    );
    anyhow::ensure!(*again == *password, "passwords do not match");
    anyhow::ensure!(!password.is_empty(), "empty password");
    Ok(SecretString::from(password.as_str().to_owned()))
}
