//! Keeps the deployment files honest against the code.
//!
//! No Docker engine runs where this project is developed and tested, so nothing would notice
//! a compose file that sets a variable the service no longer reads, a healthcheck on the wrong
//! port, or a Dockerfile that stopped building a binary, until someone ran `docker compose up`.
//! This test reads `docker-compose.yml`, `docker-compose-http.yml`, `Dockerfile`,
//! `.env.example` and `.dockerignore` and checks them against the code:
//!
//! - the source of truth for what a program reads is its clap command (every `env = ".."`,
//!   defaults and value parsers included), plus `RUST_LOG`/`LOG_FORMAT` read by
//!   `shared::telemetry::init`;
//! - every environment variable a service sets is read by the program it runs, and its value
//!   (with compose's `${VAR:-default}` defaults applied) parses, together with the command's
//!   subcommand, by that program's clap command;
//! - compose defaults and the defaults documented in `.env.example` equal the code's;
//! - ports agree: bind address, healthcheck URL, `expose`/`ports`, and every URL that names a
//!   compose service (`http://quote_service:8001`, `http://fake_stooq:8002`, AMQP, PostgreSQL);
//! - healthchecks run programs the image has and hit routes the service defines;
//! - the Dockerfile builds and copies every binary a `command:` runs, as a non-root user,
//!   with a Cargo profile that strips the line tables;
//! - healthchecks that a `service_healthy` dependant waits on report readiness, not mere
//!   liveness (`/readyz`, RabbitMQ running and accepting connections, PostgreSQL over TCP);
//! - storage only where it is used: no `VOLUME` in the Dockerfile, and a named volume over
//!   the data directory exactly for the services that keep a SQLite database there;
//! - start-up needs no set-up: no `${VAR:?}` or unset-without-default interpolation.
//!
//! The self-tests at the bottom mutate copies of the files in memory and check each kind of
//! drift is reported, so this test can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE_FILES: [&str; 2] = ["docker-compose.yml", "docker-compose-http.yml"];

/// Binaries every deployment must ship, whether or not a compose file runs them.
const REQUIRED_BINARIES: [&str; 2] = ["quote_service", "api_service"];

/// Programs the official images used by compose provide, by image name, and the ports they
/// listen on inside the compose network.
const OFFICIAL_IMAGES: [(&str, &[&str], &[u16]); 2] = [
    (
        "rabbitmq",
        &["rabbitmq-diagnostics", "rabbitmqctl"],
        &[5672, 15672],
    ),
    ("postgres", &["pg_isready", "psql"], &[5432]),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

fn read_repo_file(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// --- The code side ----------------------------------------------------------------------------

/// One program the image can run, as the code defines it.
struct Binary {
    name: &'static str,
    /// Source directory whose `.route("..")` calls define the program's HTTP paths.
    src_dir: &'static str,
    command: clap::Command,
    /// The same command reading no environment: parsing a compose service's settings must
    /// not depend on the variables of the process running this test.
    parser: clap::Command,
    /// Every environment variable the program reads.
    env: BTreeSet<String>,
}

impl Binary {
    fn new(name: &'static str, src_dir: &'static str, command: clap::Command) -> Self {
        let mut env = BTreeSet::new();
        collect_env(&command, &mut env);
        // The logging variables are read outside clap, by shared::telemetry::init, so they
        // count only for a program whose main calls it.
        let main_rs = read_repo_file(&format!("{src_dir}/main.rs"));
        if main_rs.contains("shared::telemetry::init") {
            env.extend(logging_env_vars());
        }
        Self {
            name,
            src_dir,
            parser: without_env(command.clone()),
            command,
            env,
        }
    }

    /// The argument that reads `var` from the environment, searching subcommands too.
    fn arg_for_env(&self, var: &str) -> Option<&clap::Arg> {
        fn find<'c>(cmd: &'c clap::Command, var: &str) -> Option<&'c clap::Arg> {
            cmd.get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == var))
                .or_else(|| cmd.get_subcommands().find_map(|sub| find(sub, var)))
        }
        find(&self.command, var)
    }

    /// The argument read from `var` when it is defined on the top-level command (and so may be
    /// passed before any subcommand).
    fn top_level_arg_for_env(&self, var: &str) -> Option<&clap::Arg> {
        self.command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var))
    }

    /// The clap default of the setting read from `var`, if it has one.
    fn default_for_env(&self, var: &str) -> Option<String> {
        let values = self.arg_for_env(var)?.get_default_values();
        if values.is_empty() {
            return None;
        }
        Some(
            values
                .iter()
                .map(|v| AsRef::<std::ffi::OsStr>::as_ref(v).to_string_lossy())
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The program's listen address setting: the env var ending in `_ADDR`.
    fn addr_env(&self) -> Option<String> {
        self.env.iter().find(|v| v.ends_with("_ADDR")).cloned()
    }

    /// Whether the program's router defines `path`: an axum `.route("/path", ..)`, or a
    /// utoipa `#[utoipa::path(.., path = "/path")]` for routes registered through utoipa-axum.
    fn has_route(&self, path: &str) -> bool {
        let route = format!(".route(\"{path}\"");
        let documented = format!("path = \"{path}\"");
        rust_sources(&repo_root().join(self.src_dir))
            .iter()
            .any(|src| src.contains(&route) || src.contains(&documented))
    }
}

fn without_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| arg.env(None::<&'static str>))
        .mut_subcommands(without_env)
}

fn collect_env(cmd: &clap::Command, out: &mut BTreeSet<String>) {
    for arg in cmd.get_arguments() {
        if let Some(env) = arg.get_env() {
            out.insert(env.to_string_lossy().into_owned());
        }
    }
    for sub in cmd.get_subcommands() {
        collect_env(sub, out);
    }
}

/// `RUST_LOG` and `LOG_FORMAT`, as api_service publishes them, each confirmed to be named in
/// shared::telemetry (the one place that reads them).
fn logging_env_vars() -> Vec<String> {
    let telemetry = read_repo_file("shared/src/telemetry.rs");
    api_service::settings::LOGGING_ENV_VARS
        .iter()
        .map(|v| {
            assert!(
                telemetry.contains(v),
                "{v} is listed as a logging variable but shared/src/telemetry.rs never names it"
            );
            v.to_string()
        })
        .collect()
}

fn rust_sources(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    out
}

/// Every program of the workspace that a container may run.
struct Code {
    binaries: Vec<Binary>,
}

impl Code {
    fn load() -> Self {
        let binaries = vec![
            Binary::new(
                "api_service",
                "api_service/src",
                api_service::cli::cli_command(),
            ),
            Binary::new(
                "quote_service",
                "quote_service/src",
                quote_service::Settings::command(),
            ),
            Binary::new(
                "fake_stooq",
                "fake_stooq/src",
                fake_stooq::Settings::command(),
            ),
        ];
        for b in &binaries {
            assert_eq!(
                b.command.get_name(),
                b.name,
                "the clap command's name should be the binary's"
            );
        }
        Self { binaries }
    }

    fn binary(&self, name: &str) -> Option<&Binary> {
        self.binaries.iter().find(|b| b.name == name)
    }

    fn all_env(&self) -> BTreeSet<String> {
        self.binaries.iter().flat_map(|b| b.env.clone()).collect()
    }
}

// --- Compose interpolation ---------------------------------------------------------------------

/// One `${NAME<op><arg>}` or `$NAME` in a compose value.
#[derive(Debug)]
struct Interpolation {
    name: String,
    /// `""`, `"-"`, `":-"`, `"?"`, `":?"`, `"+"` or `":+"`.
    op: String,
}

impl Interpolation {
    fn has_default(&self) -> bool {
        self.op == "-" || self.op == ":-"
    }
}

/// Parses compose interpolation the way compose does, rejecting what compose rejects (a lone
/// `$` is an error there; `$$` is a literal `$`).
fn scan_interpolations(s: &str) -> Result<Vec<Interpolation>, String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let start = i + 2;
                let end = matching_brace(bytes, start)
                    .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
                let inner = &s[start..end];
                let name_len = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(inner.len());
                let (name, rest) = inner.split_at(name_len);
                if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(format!("bad variable name in `${{{inner}}}` in {s:?}"));
                }
                let op = [":-", ":?", ":+", "-", "?", "+"]
                    .into_iter()
                    .find(|op| rest.starts_with(op))
                    .unwrap_or("");
                if op.is_empty() && !rest.is_empty() {
                    return Err(format!(
                        "compose does not understand `${{{inner}}}` in {s:?}"
                    ));
                }
                let arg = &rest[op.len()..];
                out.push(Interpolation {
                    name: name.to_owned(),
                    op: op.to_owned(),
                });
                out.extend(scan_interpolations(arg)?);
                i = end + 1;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                out.push(Interpolation {
                    name: s[start..end].to_owned(),
                    op: String::new(),
                });
                i = end;
            }
            _ => {
                return Err(format!(
                    "a lone `$` in {s:?}: compose rejects it (write `$$` for a literal `$`)"
                ));
            }
        }
    }
    Ok(out)
}

fn matching_brace(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1;
    for (j, b) in bytes.iter().enumerate().skip(start) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// The value compose produces when no variable is set: defaults applied, `$$` unescaped.
/// Lenient: text compose would reject is kept as it is (that is reported elsewhere).
fn with_defaults(s: &str) -> String {
    let mut out = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            let next = s[i..].find('$').map_or(s.len(), |n| i + n);
            out.push_str(&s[i..next]);
            i = next;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let Some(end) = matching_brace(bytes, i + 2) else {
                    out.push_str(&s[i..]);
                    break;
                };
                let inner = &s[i + 2..end];
                if let Some(pos) = inner.find('-').filter(|&p| {
                    inner[..p]
                        .trim_end_matches(':')
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                }) {
                    out.push_str(&with_defaults(&inner[pos + 1..]));
                }
                i = end + 1;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

// --- Compose files -----------------------------------------------------------------------------

fn parse_compose(text: &str) -> Result<Yaml, String> {
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    if docs.len() != 1 {
        return Err(format!("expected one YAML document, found {}", docs.len()));
    }
    Ok(resolve_merge_keys(docs.remove(0)))
}

/// Applies YAML merge keys (`<<: *anchor`), which compose supports and yaml-rust2 leaves as
/// ordinary `<<` entries. Keys written next to a merge win over merged ones.
fn resolve_merge_keys(node: Yaml) -> Yaml {
    match node {
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(resolve_merge_keys).collect()),
        Yaml::Hash(map) => {
            let merge_key = Yaml::String("<<".into());
            let mut own = yaml_rust2::yaml::Hash::new();
            let mut merged = Vec::new();
            for (k, v) in map {
                if k == merge_key {
                    match resolve_merge_keys(v) {
                        Yaml::Array(list) => merged.extend(list),
                        other => merged.push(other),
                    }
                } else {
                    own.insert(k, resolve_merge_keys(v));
                }
            }
            for source in merged {
                if let Yaml::Hash(source) = source {
                    for (k, v) in source {
                        own.entry(k).or_insert(v);
                    }
                }
            }
            Yaml::Hash(own)
        }
        other => other,
    }
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn key(name: &str) -> Yaml {
    Yaml::String(name.to_owned())
}

fn get<'y>(y: &'y Yaml, name: &str) -> Option<&'y Yaml> {
    y.as_hash().and_then(|h| h.get(&key(name)))
}

/// A scalar or a list of scalars as strings.
fn string_list(y: Option<&Yaml>) -> Vec<String> {
    match y {
        Some(Yaml::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(other) => scalar(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// One service of a compose file, reduced to what the checks look at.
struct Service {
    name: String,
    /// `image:` without the tag, for the official images.
    image: Option<String>,
    /// Built from this repository's Dockerfile.
    builds_here: bool,
    build_target: Option<String>,
    command: Option<Vec<String>>,
    has_entrypoint: bool,
    /// `user:`, overriding the image's USER.
    user: Option<String>,
    /// Variables in order; `None` = passed through from the shell/.env (`NAME:` with no value).
    env: Vec<(String, Option<String>)>,
    healthcheck: Option<Vec<String>>,
    expose: Vec<String>,
    ports: Vec<String>,
    /// `source:target[:mode]` entries.
    volumes: Vec<String>,
    /// (service, condition)
    depends_on: Vec<(String, String)>,
    one_shot: bool,
}

impl Service {
    fn from_yaml(name: &str, def: &Yaml) -> Self {
        let image = get(def, "image").and_then(scalar);
        let build = get(def, "build");
        let command = match get(def, "command") {
            Some(Yaml::Array(items)) => Some(items.iter().filter_map(scalar).collect()),
            Some(other) => scalar(other).map(|s| s.split_whitespace().map(String::from).collect()),
            None => None,
        };
        let env = match get(def, "environment") {
            Some(Yaml::Hash(map)) => map
                .iter()
                .filter_map(|(k, v)| Some((scalar(k)?, scalar(v))))
                .collect(),
            Some(Yaml::Array(items)) => items
                .iter()
                .filter_map(scalar)
                .map(|entry| match entry.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (entry, None),
                })
                .collect(),
            _ => Vec::new(),
        };
        let healthcheck = get(def, "healthcheck").and_then(|h| match get(h, "test") {
            Some(Yaml::Array(items)) => Some(items.iter().filter_map(scalar).collect()),
            Some(other) => scalar(other).map(|s| vec!["CMD-SHELL".to_owned(), s]),
            None => None,
        });
        let depends_on = match get(def, "depends_on") {
            Some(Yaml::Hash(map)) => map
                .iter()
                .filter_map(|(k, v)| {
                    let cond = get(v, "condition")
                        .and_then(scalar)
                        .unwrap_or_else(|| "service_started".into());
                    Some((scalar(k)?, cond))
                })
                .collect(),
            Some(list @ Yaml::Array(_)) => string_list(Some(list))
                .into_iter()
                .map(|s| (s, "service_started".to_owned()))
                .collect(),
            _ => Vec::new(),
        };
        Self {
            name: name.to_owned(),
            builds_here: build.is_some(),
            build_target: build.and_then(|b| get(b, "target")).and_then(scalar),
            image: image.map(|i| i.split(':').next().unwrap_or_default().to_owned()),
            command,
            has_entrypoint: get(def, "entrypoint").is_some(),
            user: get(def, "user").and_then(scalar),
            env,
            healthcheck,
            expose: string_list(get(def, "expose")),
            ports: string_list(get(def, "ports")),
            volumes: string_list(get(def, "volumes")),
            depends_on,
            one_shot: get(def, "restart").and_then(scalar).as_deref() == Some("no"),
        }
    }

    fn env_value(&self, var: &str) -> Option<&Option<String>> {
        self.env.iter().find(|(k, _)| k == var).map(|(_, v)| v)
    }

    fn official_image(&self) -> Option<(&'static [&'static str], &'static [u16])> {
        let image = self.image.as_deref()?;
        OFFICIAL_IMAGES
            .iter()
            .find(|(name, _, _)| *name == image)
            .map(|(_, programs, ports)| (*programs, *ports))
    }
}

/// A workspace binary and the arguments it is started with.
type Invocation = (String, Vec<String>);

/// What a service's `command:` runs.
#[derive(Debug, PartialEq)]
enum Entry {
    /// One of the workspace binaries, with its arguments.
    Binary { name: String, args: Vec<String> },
    /// A shell script that runs none of the workspace binaries (e.g. init-secrets).
    Script,
}

/// Control tokens that end a shell command.
fn ends_command(token: &str) -> bool {
    matches!(token, ";" | "&&" | "||" | "|" | "&")
}

fn entry_of(command: &[String], code: &Code) -> Result<Entry, String> {
    let Some(program) = command.first() else {
        return Err("empty command".into());
    };
    if code.binary(program).is_some() {
        return Ok(Entry::Binary {
            name: program.clone(),
            args: command[1..].to_vec(),
        });
    }
    if program == "sh" && command.get(1).map(String::as_str) == Some("-c") {
        let script = with_defaults(command.get(2).map(String::as_str).unwrap_or(""));
        let tokens: Vec<&str> = script.split_whitespace().collect();
        let mut entry = Entry::Script;
        for (i, token) in tokens.iter().enumerate() {
            if code.binary(token).is_none() {
                continue;
            }
            if i == 0 || tokens[i - 1] != "exec" {
                return Err(format!(
                    "the script runs {token} without `exec`: the shell would stay in between \
                     and the SIGTERM of `docker stop` would not reach {token}"
                ));
            }
            let args = tokens[i + 1..]
                .iter()
                .take_while(|t| !ends_command(t))
                .map(|t| t.trim_end_matches(';').to_string())
                .collect();
            entry = Entry::Binary {
                name: (*token).to_owned(),
                args,
            };
        }
        return Ok(entry);
    }
    Err(format!(
        "runs {program:?}, which is neither a workspace binary nor `sh -c`"
    ))
}

struct ComposeFile {
    file: String,
    services: Vec<Service>,
    /// Every string value, for interpolation checks.
    values: Vec<String>,
    /// Named volumes declared at the top level.
    volumes: BTreeSet<String>,
    /// The raw text, comments included, for URL checks.
    text: String,
}

impl ComposeFile {
    fn parse(file: &str, text: &str) -> Result<Self, String> {
        let root = parse_compose(text).map_err(|e| format!("{file}: {e}"))?;
        let services = match get(&root, "services") {
            Some(Yaml::Hash(map)) => map
                .iter()
                .filter_map(|(k, v)| Some(Service::from_yaml(&scalar(k)?, v)))
                .collect(),
            _ => return Err(format!("{file}: no `services:` mapping")),
        };
        let mut values = Vec::new();
        collect_values(&root, &mut values);
        let volumes = match get(&root, "volumes") {
            Some(Yaml::Hash(map)) => map.keys().filter_map(scalar).collect(),
            _ => BTreeSet::new(),
        };
        Ok(Self {
            file: file.to_owned(),
            services,
            values,
            volumes,
            text: text.to_owned(),
        })
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Variables taken from the shell or .env: interpolated ones and pass-through ones.
    fn variables_used(&self) -> BTreeSet<String> {
        let mut vars: BTreeSet<String> = self
            .values
            .iter()
            .filter_map(|v| scan_interpolations(v).ok())
            .flatten()
            .map(|i| i.name)
            .collect();
        for service in &self.services {
            for (name, value) in &service.env {
                if value.is_none() {
                    vars.insert(name.clone());
                }
            }
        }
        vars
    }
}

fn collect_values(node: &Yaml, out: &mut Vec<String>) {
    match node {
        Yaml::Hash(map) => map.values().for_each(|v| collect_values(v, out)),
        Yaml::Array(items) => items.iter().for_each(|v| collect_values(v, out)),
        other => out.extend(scalar(other)),
    }
}

// --- Dockerfile --------------------------------------------------------------------------------

struct Stage {
    name: Option<String>,
    from: String,
    /// (INSTRUCTION, arguments), continuation lines joined.
    instructions: Vec<(String, String)>,
}

struct Dockerfile {
    stages: Vec<Stage>,
}

/// What one build target of the Dockerfile contains.
struct Image {
    binaries: BTreeSet<String>,
    apt_packages: BTreeSet<String>,
    user: Option<String>,
    exposed: BTreeSet<u16>,
    /// Paths handed to the runtime user with `chown`.
    chowned: BTreeSet<String>,
    cmd: Option<Vec<String>>,
    base_image: String,
    /// The last `WORKDIR`: where a relative SQLite path puts the database.
    workdir: Option<String>,
}

impl Dockerfile {
    fn parse(text: &str) -> Self {
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            if let Some(body) = trimmed.strip_suffix('\\') {
                current.push_str(body);
                current.push(' ');
                continue;
            }
            current.push_str(trimmed);
            let joined = std::mem::take(&mut current);
            if let Some((instr, args)) = joined.split_once(char::is_whitespace) {
                instructions.push((instr.to_ascii_uppercase(), args.trim().to_owned()));
            }
        }
        let mut stages: Vec<Stage> = Vec::new();
        for (instr, args) in instructions {
            if instr == "FROM" {
                let words: Vec<&str> = args.split_whitespace().collect();
                let name = words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case("as"))
                    .and_then(|i| words.get(i + 1))
                    .map(|s| s.to_string());
                stages.push(Stage {
                    name,
                    from: words.first().copied().unwrap_or_default().to_owned(),
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push((instr, args));
            }
        }
        Self { stages }
    }

    fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    /// The stage that runs `cargo build`.
    fn builder(&self) -> Option<&Stage> {
        self.stages.iter().find(|s| {
            s.instructions
                .iter()
                .any(|(i, a)| i == "RUN" && a.contains("cargo build"))
        })
    }

    /// Binaries the builder compiles and copies out of `target/<profile>`.
    fn built_binaries(&self, code: &Code) -> BTreeSet<String> {
        let Some(builder) = self.builder() else {
            return BTreeSet::new();
        };
        let text: String = builder
            .instructions
            .iter()
            .map(|(_, a)| format!("{a}\n"))
            .collect();
        let build = builder
            .instructions
            .iter()
            .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
            .map(|(_, a)| a.as_str())
            .unwrap_or_default();
        let words: Vec<&str> = build.split_whitespace().collect();
        let named: BTreeSet<String> = words
            .windows(2)
            .filter(|w| w[0] == "--bin")
            .map(|w| w[1].to_owned())
            .collect();
        let compiled: BTreeSet<String> = if named.is_empty() {
            code.binaries.iter().map(|b| b.name.to_owned()).collect()
        } else {
            named
        };
        let Some(profile) = cargo_profile(&words) else {
            return BTreeSet::new();
        };
        let dir = profile_dir(&profile);
        compiled
            .into_iter()
            .filter(|b| text.contains(&format!("target/{dir}/{b}")))
            .collect()
    }

    /// The Cargo profile of the builder's `cargo build`: `--release` or `--profile NAME`
    /// (`None` for a debug build, which the image must not ship).
    fn build_profile(&self) -> Option<String> {
        let build = self
            .builder()?
            .instructions
            .iter()
            .find(|(i, a)| i == "RUN" && a.contains("cargo build"))?;
        let words: Vec<&str> = build.1.split_whitespace().collect();
        cargo_profile(&words)
    }

    /// `VOLUME` instructions in any stage.
    fn volumes(&self) -> Vec<String> {
        self.stages
            .iter()
            .flat_map(|s| &s.instructions)
            .filter(|(i, _)| i == "VOLUME")
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// The stages a target is made of, oldest first.
    fn chain(&self, target: &str) -> Vec<&Stage> {
        let mut chain = Vec::new();
        let mut next = self.stage(target);
        while let Some(stage) = next {
            if chain.len() > self.stages.len() {
                break;
            }
            chain.push(stage);
            next = self.stage(&stage.from);
        }
        chain.reverse();
        chain
    }

    fn image(&self, target: &str, code: &Code) -> Option<Image> {
        let chain = self.chain(target);
        if chain.is_empty() {
            return None;
        }
        let builder_name = self.builder().and_then(|b| b.name.clone());
        let mut image = Image {
            binaries: BTreeSet::new(),
            apt_packages: BTreeSet::new(),
            user: None,
            exposed: BTreeSet::new(),
            chowned: BTreeSet::new(),
            cmd: None,
            base_image: chain[0].from.clone(),
            workdir: None,
        };
        for stage in chain {
            for (instr, args) in &stage.instructions {
                match instr.as_str() {
                    "COPY" => {
                        let words: Vec<&str> = args.split_whitespace().collect();
                        let from_builder = builder_name
                            .as_ref()
                            .is_some_and(|b| words.iter().any(|w| *w == format!("--from={b}")));
                        let dest = words.last().copied().unwrap_or_default();
                        let on_path = ["/usr/local/bin", "/usr/bin", "/bin"]
                            .contains(&dest.trim_end_matches('/'));
                        if from_builder && on_path {
                            image.binaries.extend(self.built_binaries(code));
                        }
                    }
                    "RUN" => {
                        for command in args.split("&&").flat_map(|c| c.split(';')) {
                            let words: Vec<&str> = command.split_whitespace().collect();
                            if let Some(pos) =
                                words.windows(2).position(|w| w == ["apt-get", "install"])
                            {
                                image.apt_packages.extend(
                                    words[pos + 2..]
                                        .iter()
                                        .filter(|w| !w.starts_with('-'))
                                        .map(|w| w.to_string()),
                                );
                            }
                            if words.first() == Some(&"chown") {
                                image.chowned.extend(
                                    words
                                        .iter()
                                        .filter(|w| w.starts_with('/'))
                                        .map(|w| w.trim_end_matches('/').to_string()),
                                );
                            }
                        }
                    }
                    "USER" => image.user = Some(args.clone()),
                    "EXPOSE" => image.exposed.extend(
                        args.split_whitespace()
                            .filter_map(|p| p.split('/').next()?.parse::<u16>().ok()),
                    ),
                    "CMD" => image.cmd = serde_json::from_str(args).ok(),
                    "WORKDIR" => image.workdir = Some(args.trim_end_matches('/').to_owned()),
                    _ => {}
                }
            }
        }
        Some(image)
    }
}

/// The profile a `cargo build` command line builds with, when it is an optimised one.
fn cargo_profile(words: &[&str]) -> Option<String> {
    if words.contains(&"--release") || words.contains(&"-r") {
        return Some("release".into());
    }
    words.iter().enumerate().find_map(|(i, w)| {
        let name = match w.strip_prefix("--profile=") {
            Some(name) => name,
            None if *w == "--profile" => words.get(i + 1)?,
            None => return None,
        };
        (name != "dev" && name != "test").then(|| name.to_owned())
    })
}

/// The directory under `target/` a profile's binaries land in.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        other => other,
    }
}

/// The value of `key` in Cargo.toml's `[profile.NAME]`, following `inherits` (the built-in
/// profiles inherit nothing that strips).
fn profile_setting(cargo_toml: &str, profile: &str, key: &str) -> Option<String> {
    let mut name = profile.to_owned();
    for _ in 0..8 {
        let header = format!("[profile.{name}]");
        let mut in_section = false;
        let mut inherits = None;
        for line in cargo_toml.lines().map(str::trim) {
            if line.starts_with('[') {
                in_section = line == header;
                continue;
            }
            if !in_section {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v
                .split('#')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"');
            match k.trim() {
                k if k == key => return Some(v.to_owned()),
                "inherits" => inherits = Some(v.to_owned()),
                _ => {}
            }
        }
        name = inherits?;
    }
    None
}

/// The SQLite file a service's DATABASE_URL names, when it names one.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

// --- The deployment files and their checks ------------------------------------------------------

/// The deployment files as text, so the self-tests can check mutated copies.
#[derive(Clone)]
struct Deployment {
    compose: Vec<(String, String)>,
    dockerfile: String,
    cargo_toml: String,
    env_example: String,
    dockerignore: String,
}

/// The host and port of every `scheme://host[:port]` in `text` (userinfo dropped).
fn urls(text: &str) -> Vec<(String, String, Option<u16>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let scheme: String = rest[..pos]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '+')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let after = &rest[pos + 3..];
        let end = after
            .find(|c: char| "/?#\"'` ),\n".contains(c))
            .unwrap_or(after.len());
        let authority = &after[..end];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        // The port is the digits after the colon (prose may follow a URL: `...:8001.`).
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => {
                let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
                (h, p[..digits].parse().ok())
            }
            None => (host_port, None),
        };
        out.push((scheme, host.to_owned(), port));
        rest = &after[end..];
    }
    out
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "amqp" => Some(5672),
        "postgres" | "postgresql" => Some(5432),
        _ => None,
    }
}

/// Lines `NAME=value` or `# NAME=value` of .env.example: (name, value, commented).
fn env_example_entries(text: &str) -> Vec<(String, String, bool)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (body, commented) = match line.strip_prefix('#') {
                Some(rest) => (rest.strip_prefix(' ').unwrap_or(rest), true),
                None => (line, false),
            };
            let (name, value) = body.split_once('=')?;
            let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| (name.to_owned(), value.trim().to_owned(), commented))
        })
        .collect()
}

impl Deployment {
    fn from_repo() -> Self {
        Self {
            compose: COMPOSE_FILES
                .iter()
                .map(|f| (f.to_string(), read_repo_file(f)))
                .collect(),
            dockerfile: read_repo_file("Dockerfile"),
            cargo_toml: read_repo_file("Cargo.toml"),
            env_example: read_repo_file(".env.example"),
            dockerignore: read_repo_file(".dockerignore"),
        }
    }

    /// Replaces `from` (which must occur) in the named file: for the self-tests.
    fn mutate(&self, file: &str, from: &str, to: &str) -> Self {
        let mut copy = self.clone();
        let text = match file {
            "Dockerfile" => &mut copy.dockerfile,
            "Cargo.toml" => &mut copy.cargo_toml,
            ".env.example" => &mut copy.env_example,
            ".dockerignore" => &mut copy.dockerignore,
            compose => {
                &mut copy
                    .compose
                    .iter_mut()
                    .find(|(name, _)| name == compose)
                    .unwrap_or_else(|| panic!("no file {compose}"))
                    .1
            }
        };
        assert!(
            text.contains(from),
            "self-test is stale: {file} no longer contains {from:?}"
        );
        *text = text.replacen(from, to, 1);
        copy
    }

    fn compose_files(&self) -> Result<Vec<ComposeFile>, Vec<String>> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (name, text) in &self.compose {
            match ComposeFile::parse(name, text) {
                Ok(f) => files.push(f),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(files)
        } else {
            Err(errors)
        }
    }

    /// Runs `check` on every compose file, collecting problems (or the parse errors).
    fn per_compose(&self, check: impl Fn(&ComposeFile, &mut Vec<String>)) -> Vec<String> {
        match self.compose_files() {
            Ok(files) => {
                let mut problems = Vec::new();
                for f in &files {
                    check(f, &mut problems);
                }
                problems
            }
            Err(errors) => errors,
        }
    }

    /// The program each service of ours runs (None for a script such as init-secrets).
    fn entries<'f>(
        file: &'f ComposeFile,
        code: &Code,
        problems: &mut Vec<String>,
    ) -> Vec<(&'f Service, Option<Invocation>)> {
        let mut out = Vec::new();
        for service in file.services.iter().filter(|s| s.builds_here) {
            let at = format!("{}: service {}", file.file, service.name);
            if service.has_entrypoint {
                problems.push(format!(
                    "{at}: sets `entrypoint:`, which this test does not model; use `command:`"
                ));
                continue;
            }
            let Some(command) = &service.command else {
                problems.push(format!(
                    "{at}: has no `command:`; name the program explicitly so it can be checked"
                ));
                continue;
            };
            match entry_of(command, code) {
                Ok(Entry::Binary { name, args }) => out.push((service, Some((name, args)))),
                Ok(Entry::Script) => out.push((service, None)),
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        out
    }

    /// Every variable a service of ours sets is read by the program it runs.
    fn check_env_vars_are_read(&self, code: &Code) -> Vec<String> {
        self.per_compose(|file, problems| {
            for (service, entry) in Self::entries(file, code, problems) {
                let (reader, read): (String, BTreeSet<String>) = match &entry {
                    Some((name, _)) => (
                        name.clone(),
                        code.binary(name).map(|b| b.env.clone()).unwrap_or_default(),
                    ),
                    None => ("its shell script".into(), BTreeSet::new()),
                };
                for (var, _) in &service.env {
                    if !read.contains(var) {
                        problems.push(format!(
                            "{}: service {} sets {var}, which {reader} does not read",
                            file.file, service.name
                        ));
                    }
                }
            }
        })
    }

    /// Each command names a subcommand the program has, and every setting's value (compose
    /// defaults applied) is accepted by the program's own parser.
    fn check_commands_and_values_parse(&self, code: &Code) -> Vec<String> {
        self.per_compose(|file, problems| {
            for (service, entry) in Self::entries(file, code, problems) {
                let Some((name, args)) = entry else { continue };
                let Some(binary) = code.binary(&name) else {
                    continue;
                };
                let mut argv = vec![name.clone()];
                for (var, value) in &service.env {
                    let Some(value) = value.as_deref().map(with_defaults) else {
                        continue;
                    };
                    // Empty: unset in the shell, so either replaced by the command (JWT_SECRET)
                    // or left for the program's own default.
                    if value.is_empty() {
                        continue;
                    }
                    if let Some(long) = binary.top_level_arg_for_env(var).and_then(|a| a.get_long())
                    {
                        argv.push(format!("--{long}={value}"));
                    }
                }
                argv.extend(args);
                if let Err(e) = binary.parser.clone().try_get_matches_from(&argv) {
                    problems.push(format!(
                        "{}: service {}: {name} rejects its command or settings ({}):\n{}",
                        file.file,
                        service.name,
                        argv.join(" "),
                        e.render()
                    ));
                }
            }
        })
    }

    /// `${VAR:-x}` in compose uses the code's default x, so the compose file cannot silently
    /// change behaviour when the code's default moves.
    fn check_compose_defaults_match_code(&self, code: &Code) -> Vec<String> {
        self.per_compose(|file, problems| {
            for (service, entry) in Self::entries(file, code, problems) {
                let Some(binary) = entry.and_then(|(name, _)| code.binary(&name)) else {
                    continue;
                };
                for (var, value) in &service.env {
                    let Some(value) = value else { continue };
                    let prefix = format!("${{{var}:-");
                    let Some(default) = value
                        .strip_prefix(&prefix)
                        .and_then(|rest| rest.strip_suffix('}'))
                    else {
                        continue;
                    };
                    if let Some(code_default) = binary.default_for_env(var)
                        && default != code_default
                    {
                        problems.push(format!(
                            "{}: service {}: {var} defaults to {default:?} here but to \
                                 {code_default:?} in {}",
                            file.file, service.name, binary.name
                        ));
                    }
                }
            }
        })
    }

    /// Every `$` is valid compose interpolation and every variable has a default, so
    /// `docker compose up` needs no .env and prints no "variable is not set" warning.
    fn check_zero_setup_interpolation(&self) -> Vec<String> {
        self.per_compose(|file, problems| {
            for value in &file.values {
                match scan_interpolations(value) {
                    Err(e) => problems.push(format!("{}: {e}", file.file)),
                    Ok(found) => {
                        for i in found.iter().filter(|i| !i.has_default()) {
                            problems.push(format!(
                                "{}: ${{{}{}...}} has no default: `docker compose up` on a \
                                 fresh checkout must not need it set (use ${{{}:-default}})",
                                file.file, i.name, i.op, i.name
                            ));
                        }
                    }
                }
            }
        })
    }

    /// Ports each service listens on inside the compose network, or a problem.
    fn listen_ports(
        file: &ComposeFile,
        code: &Code,
        problems: &mut Vec<String>,
    ) -> BTreeMap<String, Vec<u16>> {
        let mut ports = BTreeMap::new();
        for service in &file.services {
            if let Some((_, official)) = service.official_image() {
                ports.insert(service.name.clone(), official.to_vec());
            }
        }
        for (service, entry) in Self::entries(file, code, problems) {
            let Some(binary) = entry.and_then(|(name, _)| code.binary(&name)) else {
                continue;
            };
            let at = format!("{}: service {}", file.file, service.name);
            let Some(var) = binary.addr_env() else {
                problems.push(format!("{at}: {} has no *_ADDR setting", binary.name));
                continue;
            };
            let raw = match service.env_value(&var) {
                Some(Some(v)) => with_defaults(v),
                _ => binary.default_for_env(&var).unwrap_or_default(),
            };
            match raw.parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => problems.push(format!(
                    "{at}: {var}={raw} listens on loopback only: other containers and \
                     published ports cannot reach it (use 0.0.0.0)"
                )),
                Ok(addr) => {
                    ports.insert(service.name.clone(), vec![addr.port()]);
                }
                Err(e) => problems.push(format!("{at}: {var}={raw:?} is not an address: {e}")),
            }
        }
        ports
    }

    /// Bind port = healthcheck port = expose/ports entries, and every URL naming a service
    /// uses a port that service listens on.
    fn check_ports(&self, code: &Code) -> Vec<String> {
        let mut problems = Vec::new();
        let files = match self.compose_files() {
            Ok(f) => f,
            Err(e) => return e,
        };
        let mut all_ports: Vec<BTreeMap<String, Vec<u16>>> = Vec::new();
        for file in &files {
            let ports = Self::listen_ports(file, code, &mut problems);
            for service in &file.services {
                let Some(listen) = ports.get(&service.name) else {
                    continue;
                };
                let at = format!("{}: service {}", file.file, service.name);
                for e in &service.expose {
                    let port = with_defaults(e);
                    if !listen.iter().any(|p| p.to_string() == port) {
                        problems.push(format!("{at}: exposes {port}, but listens on {listen:?}"));
                    }
                }
                for p in &service.ports {
                    let mapping = with_defaults(p);
                    let container = mapping.rsplit(':').next().unwrap_or_default();
                    let container = container.split('/').next().unwrap_or_default();
                    if !listen.iter().any(|l| l.to_string() == container) {
                        problems.push(format!(
                            "{at}: publishes {mapping}, but listens on {listen:?}"
                        ));
                    }
                }
                if service.builds_here
                    && let Some(test) = &service.healthcheck
                {
                    for (_, host, port) in urls(&test.join(" ")) {
                        if host == "localhost" || host == "127.0.0.1" {
                            let port = port.unwrap_or(80);
                            if !listen.contains(&port) {
                                problems.push(format!(
                                    "{at}: healthcheck probes port {port}, but the service \
                                         listens on {listen:?}"
                                ));
                            }
                        }
                    }
                }
            }
            // Every URL that names a service, in values and in comments.
            for (line_no, line) in file.text.lines().enumerate() {
                for (scheme, host, port) in urls(&with_defaults(line)) {
                    check_url_port(
                        &format!("{} line {}", file.file, line_no + 1),
                        &scheme,
                        &host,
                        port,
                        std::slice::from_ref(&ports),
                        &mut problems,
                    );
                }
            }
            all_ports.push(ports);
        }
        for (line_no, line) in self.env_example.lines().enumerate() {
            for (scheme, host, port) in urls(line) {
                check_url_port(
                    &format!(".env.example line {}", line_no + 1),
                    &scheme,
                    &host,
                    port,
                    &all_ports,
                    &mut problems,
                );
            }
        }
        problems
    }

    /// The two services agree on how they talk to each other.
    fn check_shared_settings(&self, code: &Code) -> Vec<String> {
        self.per_compose(|file, problems| {
            let (Some(api), Some(quote)) =
                (file.service("api_service"), file.service("quote_service"))
            else {
                problems.push(format!(
                    "{}: needs both api_service and quote_service",
                    file.file
                ));
                return;
            };
            for var in ["QUOTE_TRANSPORT", "QUOTE_QUEUE", "AMQP_URL"] {
                let a = api
                    .env_value(var)
                    .cloned()
                    .flatten()
                    .map(|v| with_defaults(&v));
                let q = quote
                    .env_value(var)
                    .cloned()
                    .flatten()
                    .map(|v| with_defaults(&v));
                if a != q {
                    problems.push(format!(
                        "{}: {var} differs between api_service ({a:?}) and quote_service ({q:?})",
                        file.file
                    ));
                }
            }
            let transport = api
                .env_value("QUOTE_TRANSPORT")
                .cloned()
                .flatten()
                .map(|v| with_defaults(&v))
                .or_else(|| {
                    code.binary("api_service")
                        .and_then(|b| b.default_for_env("QUOTE_TRANSPORT"))
                })
                .unwrap_or_default();
            let needed = if transport == "http" {
                "QUOTE_SERVICE_URL"
            } else {
                "AMQP_URL"
            };
            match api.env_value(needed) {
                Some(Some(url)) => {
                    let host_is_service = urls(&with_defaults(url))
                        .iter()
                        .any(|(_, host, _)| file.service(host).is_some());
                    if !host_is_service {
                        problems.push(format!(
                            "{}: QUOTE_TRANSPORT={transport} but {needed}={url} names no \
                             service of this file",
                            file.file
                        ));
                    }
                }
                _ => problems.push(format!(
                    "{}: QUOTE_TRANSPORT={transport} but api_service does not set {needed} \
                     (its default points at 127.0.0.1, not at a container)",
                    file.file
                )),
            }
        })
    }

    /// Healthchecks run programs the image has and probe routes the program defines.
    fn check_healthchecks(&self, code: &Code) -> Vec<String> {
        let dockerfile = Dockerfile::parse(&self.dockerfile);
        self.per_compose(|file, problems| {
            let entries: BTreeMap<String, Option<String>> = Self::entries(file, code, problems)
                .into_iter()
                .map(|(s, e)| (s.name.clone(), e.map(|(n, _)| n)))
                .collect();
            for service in &file.services {
                let at = format!("{}: service {}", file.file, service.name);
                let Some(test) = &service.healthcheck else {
                    if !service.one_shot {
                        problems.push(format!(
                            "{at}: a long-running service without a healthcheck"
                        ));
                    }
                    continue;
                };
                let program = match test.first().map(String::as_str) {
                    Some("CMD") => test.get(1).cloned(),
                    Some("CMD-SHELL") => test
                        .get(1)
                        .and_then(|s| s.split_whitespace().next())
                        .map(String::from),
                    _ => None,
                };
                let Some(program) = program else {
                    problems.push(format!("{at}: healthcheck test {test:?} runs nothing"));
                    continue;
                };
                if let Some((programs, _)) = service.official_image() {
                    if !programs.contains(&program.as_str()) {
                        problems.push(format!(
                            "{at}: healthcheck runs {program}, not known to be in the {} image",
                            service.image.as_deref().unwrap_or_default()
                        ));
                    }
                    continue;
                }
                if !service.builds_here {
                    problems.push(format!(
                        "{at}: image {:?} is neither built here nor a known official image",
                        service.image
                    ));
                    continue;
                }
                let target = service.build_target.clone().unwrap_or_default();
                let Some(image) = dockerfile.image(&target, code) else {
                    problems.push(format!(
                        "{at}: build target {target:?} is no Dockerfile stage"
                    ));
                    continue;
                };
                let installed =
                    image.apt_packages.contains(&program) || image.binaries.contains(&program);
                if !installed {
                    problems.push(format!(
                        "{at}: healthcheck runs {program}, which the {target:?} image does not \
                         install (apt-get: {:?})",
                        image.apt_packages
                    ));
                }
                if program == "curl"
                    && !test.iter().any(|a| {
                        a == "--fail"
                            || (a.starts_with('-') && !a.starts_with("--") && a.contains('f'))
                    })
                {
                    problems.push(format!(
                        "{at}: curl without -f/--fail exits 0 on an HTTP error: the check \
                         would pass while the service answers 503"
                    ));
                }
                let Some(Some(binary)) = entries.get(&service.name) else {
                    continue;
                };
                let Some(binary) = code.binary(binary) else {
                    continue;
                };
                for word in test.iter().flat_map(|a| a.split_whitespace()) {
                    let Some(rest) = word.strip_prefix("http://") else {
                        continue;
                    };
                    let path = rest.find('/').map_or("/", |i| &rest[i..]);
                    let path = path.split('?').next().unwrap_or(path);
                    if !binary.has_route(path) {
                        problems.push(format!(
                            "{at}: healthcheck probes {path}, which {} defines no route for \
                             (no `.route(\"{path}\"` under {})",
                            binary.name, binary.src_dir
                        ));
                    }
                }
            }
        })
    }

    /// The image builds and ships every binary the compose files run, runs them as a non-root
    /// user, and the volumes it mounts are writable by that user.
    fn check_image(&self, code: &Code) -> Vec<String> {
        let dockerfile = Dockerfile::parse(&self.dockerfile);
        let mut problems = Vec::new();
        if dockerfile.builder().is_none() {
            problems.push("Dockerfile: no stage runs `cargo build`".to_owned());
        }
        let built = dockerfile.built_binaries(code);
        for required in REQUIRED_BINARIES {
            if !built.contains(required) {
                problems.push(format!(
                    "Dockerfile: the build stage does not build and copy out {required} \
                     (`cargo build --profile P --bin {required}` and `target/P/{required}`)"
                ));
            }
        }
        problems.extend(self.per_compose(|file, problems| {
            let entries = Self::entries(file, code, problems);
            for (service, entry) in entries {
                let at = format!("{}: service {}", file.file, service.name);
                let target = service.build_target.clone().unwrap_or_default();
                let Some(image) = dockerfile.image(&target, code) else {
                    problems.push(format!(
                        "{at}: build target {target:?} is no Dockerfile stage"
                    ));
                    continue;
                };
                let user = service.user.as_ref().or(image.user.as_ref());
                if user.is_none_or(|u| {
                    u == "root" || u == "0" || u.starts_with("root:") || u.starts_with("0:")
                }) {
                    problems.push(format!(
                        "{at}: runs as root (the {target:?} image needs a USER, and compose \
                         must not override it with `user:`)"
                    ));
                }
                let uses_shell = service
                    .command
                    .as_ref()
                    .and_then(|c| c.first())
                    .is_some_and(|p| p == "sh");
                if uses_shell && !image.base_image.starts_with("debian:") {
                    problems.push(format!(
                        "{at}: runs `sh`, but the image is based on {} (only debian images \
                         are known here to have sh and coreutils)",
                        image.base_image
                    ));
                }
                if let Some((name, _)) = &entry
                    && !image.binaries.contains(name)
                {
                    problems.push(format!(
                        "{at}: runs {name}, which the {target:?} image does not contain \
                         (it has {:?})",
                        image.binaries
                    ));
                }
                if let Some(cmd) = &image.cmd {
                    match entry_of(cmd, code) {
                        Ok(Entry::Binary { name, args }) => {
                            let argv: Vec<String> =
                                std::iter::once(name.clone()).chain(args).collect();
                            let ok = code.binary(&name).is_some_and(|b| {
                                b.parser.clone().try_get_matches_from(&argv).is_ok()
                            });
                            if !ok || !image.binaries.contains(&name) {
                                problems.push(format!(
                                    "Dockerfile: target {target:?} has CMD {cmd:?}, which its \
                                     binaries do not accept"
                                ));
                            }
                        }
                        _ => problems.push(format!(
                            "Dockerfile: target {target:?} has CMD {cmd:?}, not a workspace binary"
                        )),
                    }
                }
                if let Some(port) =
                    Self::listen_ports(file, code, &mut Vec::new()).get(&service.name)
                {
                    for p in port {
                        if !image.exposed.contains(p) {
                            problems.push(format!(
                                "{at}: listens on {p}, but the {target:?} image does not EXPOSE it"
                            ));
                        }
                    }
                }
                for volume in &service.volumes {
                    let parts: Vec<&str> = volume.split(':').collect();
                    let (Some(source), Some(target_path)) = (parts.first(), parts.get(1)) else {
                        continue;
                    };
                    if source.starts_with('.') || source.starts_with('/') {
                        continue; // a bind mount: owned by the host
                    }
                    if !file.volumes.contains(*source) {
                        problems.push(format!(
                            "{at}: mounts volume {source}, which is not declared under `volumes:`"
                        ));
                    }
                    if !image.chowned.contains(target_path.trim_end_matches('/')) {
                        problems.push(format!(
                            "{at}: mounts {source} at {target_path}, which the image does not \
                             create and chown to its non-root user: a new volume would be \
                             root-owned and unusable"
                        ));
                    }
                }
            }
        }));
        problems
    }

    /// The shipped binaries come from a profile that strips line tables (they were 200 MB of
    /// a 499 MB image).
    fn check_stripped(&self) -> Vec<String> {
        let dockerfile = Dockerfile::parse(&self.dockerfile);
        let Some(profile) = dockerfile.build_profile() else {
            return vec![
                "Dockerfile: the build stage builds no optimised profile (`--release` or \
                 `--profile NAME`)"
                    .into(),
            ];
        };
        let strip = profile_setting(&self.cargo_toml, &profile, "strip");
        match strip.as_deref() {
            Some("true" | "symbols" | "debuginfo") => Vec::new(),
            _ => vec![format!(
                "Cargo.toml: profile {profile:?}, which the image ships, does not strip \
                 (strip = {strip:?}): the binaries carry their line tables"
            )],
        }
    }

    /// Storage only where it is used: no `VOLUME` in the Dockerfile (every container would
    /// get an anonymous volume, left behind by `docker compose down`), no anonymous volumes in
    /// compose, and a named volume over the directory of a SQLite database exactly for the
    /// services that keep one.
    fn check_storage(&self, code: &Code) -> Vec<String> {
        let dockerfile = Dockerfile::parse(&self.dockerfile);
        let mut problems: Vec<String> = dockerfile
            .volumes()
            .into_iter()
            .map(|v| {
                format!(
                    "Dockerfile: VOLUME {v} gives every container of the image (one-shot ones \
                     and those on PostgreSQL too) an anonymous volume that `docker compose \
                     down` leaves behind; declare a named volume in compose where SQLite needs it"
                )
            })
            .collect();
        problems.extend(self.per_compose(|file, problems| {
            for (service, entry) in Self::entries(file, code, problems) {
                let at = format!("{}: service {}", file.file, service.name);
                let target = service.build_target.clone().unwrap_or_default();
                let Some(image) = dockerfile.image(&target, code) else {
                    continue;
                };
                let workdir = image.workdir.clone().unwrap_or_else(|| "/".into());
                let sqlite_dir = entry.as_ref().and_then(|(name, _)| {
                    let binary = code.binary(name)?;
                    let url = match service.env_value("DATABASE_URL") {
                        Some(Some(v)) => with_defaults(v),
                        _ if binary.env.contains("DATABASE_URL") => {
                            binary.default_for_env("DATABASE_URL")?
                        }
                        _ => return None,
                    };
                    let path = sqlite_path(&url)?;
                    let path = if path.starts_with('/') {
                        path
                    } else {
                        format!("{workdir}/{path}")
                    };
                    path.rsplit_once('/').map(|(dir, _)| dir.to_owned())
                });
                let mut mounts = Vec::new();
                for volume in &service.volumes {
                    match volume.split_once(':') {
                        Some((source, rest)) => {
                            let target = rest.split(':').next().unwrap_or_default();
                            mounts
                                .push((source.to_owned(), target.trim_end_matches('/').to_owned()));
                        }
                        None => problems.push(format!(
                            "{at}: anonymous volume {volume}: `docker compose down` leaves it \
                             behind; name it under `volumes:`"
                        )),
                    }
                }
                for (source, target) in &mounts {
                    if *target == workdir && sqlite_dir.as_deref() != Some(target.as_str()) {
                        problems.push(format!(
                            "{at}: mounts {source} over the data directory {target}, but keeps \
                             no SQLite database there: storage nobody uses"
                        ));
                    }
                }
                if let Some(dir) = &sqlite_dir {
                    match mounts.iter().find(|(_, t)| t == dir) {
                        None => problems.push(format!(
                            "{at}: keeps its SQLite database in {dir}, which no volume holds: \
                             it is lost with the container"
                        )),
                        Some((source, _)) if !file.volumes.contains(source) => {
                            problems.push(format!(
                                "{at}: keeps its SQLite database on {source}, which is not a \
                                 named volume declared under `volumes:`"
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }));
        problems
    }

    /// A service others wait on with `service_healthy` is healthy only once it is ready for
    /// them: otherwise the dependant starts against a broker still booting, a database still
    /// being created, or an API with no worker.
    fn check_readiness_healthchecks(&self) -> Vec<String> {
        self.per_compose(|file, problems| {
            let waited_on: BTreeSet<&str> = file
                .services
                .iter()
                .flat_map(|s| &s.depends_on)
                .filter(|(_, condition)| condition == "service_healthy")
                .map(|(dep, _)| dep.as_str())
                .collect();
            for name in waited_on {
                let Some(service) = file.service(name) else {
                    continue;
                };
                let Some(test) = &service.healthcheck else {
                    continue; // reported by check_start_order
                };
                let at = format!("{}: service {}", file.file, service.name);
                let command = test.get(1..).unwrap_or_default().join(" ");
                match service.image.as_deref() {
                    Some("rabbitmq")
                        if !(command.contains("check_running")
                            && command.contains("check_port_connectivity")) =>
                    {
                        problems.push(format!(
                            "{at}: healthcheck {command:?} can pass while the node still \
                             boots; dependants need `rabbitmq-diagnostics -q check_running` \
                             and `check_port_connectivity`"
                        ));
                    }
                    Some("rabbitmq") => {}
                    Some("postgres") => {
                        let words: Vec<&str> = command.split_whitespace().collect();
                        let over_tcp = words
                            .windows(2)
                            .any(|w| (w[0] == "-h" || w[0] == "--host") && w[1] == "127.0.0.1")
                            || words.contains(&"--host=127.0.0.1");
                        if !words.contains(&"pg_isready") || !over_tcp {
                            problems.push(format!(
                                "{at}: healthcheck {command:?} needs `pg_isready -h 127.0.0.1`: \
                                 on its first start the image runs a temporary socket-only \
                                 server that a socket check already calls ready"
                            ));
                        }
                    }
                    _ if service.builds_here => {
                        let probes_readiness = urls(&command)
                            .iter()
                            .any(|(_, host, _)| host == "localhost" || host == "127.0.0.1")
                            && command.contains("/readyz");
                        if !probes_readiness {
                            problems.push(format!(
                                "{at}: others wait for it to be healthy, but its healthcheck \
                                 {command:?} does not probe /readyz: healthy would mean alive, \
                                 not ready"
                            ));
                        }
                    }
                    _ => {}
                }
            }
        })
    }

    /// depends_on names real services with conditions they can meet.
    fn check_start_order(&self) -> Vec<String> {
        self.per_compose(|file, problems| {
            for service in &file.services {
                for (dep, condition) in &service.depends_on {
                    let at = format!("{}: service {}", file.file, service.name);
                    let Some(target) = file.service(dep) else {
                        problems.push(format!("{at}: depends on {dep}, which does not exist"));
                        continue;
                    };
                    match condition.as_str() {
                        "service_healthy" if target.healthcheck.is_none() => {
                            problems.push(format!(
                                "{at}: waits for {dep} to be healthy, but it has no healthcheck"
                            ))
                        }
                        "service_completed_successfully" if !target.one_shot => {
                            problems.push(format!(
                                "{at}: waits for {dep} to complete, but it is not `restart: \"no\"`"
                            ));
                        }
                        "service_healthy"
                        | "service_completed_successfully"
                        | "service_started" => {}
                        other => problems.push(format!("{at}: unknown condition {other}")),
                    }
                }
            }
        })
    }

    /// .env.example documents exactly the variables that matter, with the code's defaults.
    fn check_env_example(&self, code: &Code) -> Vec<String> {
        let mut problems = Vec::new();
        let files = match self.compose_files() {
            Ok(f) => f,
            Err(e) => return e,
        };
        let compose_vars: BTreeSet<String> =
            files.iter().flat_map(ComposeFile::variables_used).collect();
        let read_by_code = code.all_env();
        let entries = env_example_entries(&self.env_example);
        let documented: BTreeSet<String> = entries.iter().map(|(n, _, _)| n.clone()).collect();
        for (name, value, commented) in &entries {
            if !read_by_code.contains(name) && !compose_vars.contains(name) {
                problems.push(format!(
                    ".env.example: {name} is read by no service and used by no compose file"
                ));
            }
            if !commented && !value.is_empty() {
                problems.push(format!(
                    ".env.example: {name}={value} is set, not commented: nothing may be \
                     required, and a copied .env should change nothing by itself"
                ));
            }
            let defaults: BTreeSet<String> = code
                .binaries
                .iter()
                .filter_map(|b| b.default_for_env(name))
                .collect();
            if !defaults.is_empty() && !defaults.contains(value) {
                problems.push(format!(
                    ".env.example: documents {name}={value}, but the default is {defaults:?}"
                ));
            }
        }
        for var in &compose_vars {
            if !documented.contains(var) {
                problems.push(format!(
                    ".env.example: compose takes {var} from the environment but .env.example \
                     does not document it"
                ));
            }
        }
        for binary in &code.binaries {
            for var in &binary.env {
                if !documented.contains(var) {
                    problems.push(format!(
                        ".env.example: {} reads {var}, which .env.example does not document",
                        binary.name
                    ));
                }
            }
        }
        problems
    }

    /// The build context keeps what the build needs.
    fn check_dockerignore(&self) -> Vec<String> {
        let patterns: Vec<&str> = self
            .dockerignore
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
            .collect();
        let root_manifest = read_repo_file("Cargo.toml");
        let mut needed = vec!["Cargo.toml", "Cargo.lock"];
        needed.extend(
            [
                "shared",
                "fake_stooq",
                "quote_service",
                "api_service",
                "tests",
                "bench",
            ]
            .into_iter()
            .filter(|m| root_manifest.contains(&format!("\"{m}\""))),
        );
        let mut problems = Vec::new();
        for pattern in &patterns {
            let p = pattern.trim_start_matches('/').trim_end_matches('/');
            if p == "*" || p == "**" || needed.contains(&p) || p.ends_with(".rs") || p == "**/*.rs"
            {
                problems.push(format!(
                    ".dockerignore: `{pattern}` drops files the image build needs"
                ));
            }
        }
        if !patterns
            .iter()
            .any(|p| p.trim_start_matches('/').trim_end_matches('/') == "target")
        {
            problems
                .push(".dockerignore: target/ is not excluded (gigabytes of build context)".into());
        }
        problems
    }

    fn problems(&self, code: &Code) -> Vec<String> {
        let mut all = Vec::new();
        all.extend(self.check_env_vars_are_read(code));
        all.extend(self.check_commands_and_values_parse(code));
        all.extend(self.check_compose_defaults_match_code(code));
        all.extend(self.check_zero_setup_interpolation());
        all.extend(self.check_ports(code));
        all.extend(self.check_shared_settings(code));
        all.extend(self.check_healthchecks(code));
        all.extend(self.check_image(code));
        all.extend(self.check_stripped());
        all.extend(self.check_storage(code));
        all.extend(self.check_readiness_healthchecks());
        all.extend(self.check_start_order());
        all.extend(self.check_env_example(code));
        all.extend(self.check_dockerignore());
        all.sort();
        all.dedup();
        all
    }
}

fn check_url_port(
    at: &str,
    scheme: &str,
    host: &str,
    port: Option<u16>,
    files: &[BTreeMap<String, Vec<u16>>],
    problems: &mut Vec<String>,
) {
    let Some(port) = port.or_else(|| default_port(scheme)) else {
        return;
    };
    let mut known = false;
    for ports in files {
        if let Some(listen) = ports.get(host) {
            known = true;
            if !listen.contains(&port) {
                problems.push(format!(
                    "{at}: {scheme}://{host}:{port}, but {host} listens on {listen:?}"
                ));
            }
        }
    }
    // A bare name with an underscore can only be a compose service (DNS names have none).
    if !known && host.contains('_') && !host.contains('.') {
        problems.push(format!(
            "{at}: {scheme}://{host}:{port} names no compose service"
        ));
    }
}

fn assert_none(what: &str, problems: Vec<String>) {
    if problems.is_empty() {
        return;
    }
    let mut msg = format!("{what}: {} problem(s)\n", problems.len());
    for p in &problems {
        let _ = writeln!(msg, "  - {p}");
    }
    panic!("{msg}");
}

// --- The checks on the real files ---------------------------------------------------------------

#[test]
fn compose_sets_only_variables_the_services_read() {
    let code = Code::load();
    assert_none(
        "environment variables",
        Deployment::from_repo().check_env_vars_are_read(&code),
    );
}

#[test]
fn compose_commands_and_settings_parse_with_the_services_own_cli() {
    let code = Code::load();
    assert_none(
        "commands and values",
        Deployment::from_repo().check_commands_and_values_parse(&code),
    );
}

#[test]
fn compose_defaults_are_the_code_defaults() {
    let code = Code::load();
    assert_none(
        "defaults",
        Deployment::from_repo().check_compose_defaults_match_code(&code),
    );
}

#[test]
fn compose_starts_without_any_setup() {
    assert_none(
        "interpolation",
        Deployment::from_repo().check_zero_setup_interpolation(),
    );
}

#[test]
fn ports_agree_everywhere() {
    let code = Code::load();
    assert_none("ports", Deployment::from_repo().check_ports(&code));
}

#[test]
fn both_services_agree_on_the_transport() {
    let code = Code::load();
    assert_none(
        "shared settings",
        Deployment::from_repo().check_shared_settings(&code),
    );
}

#[test]
fn healthchecks_use_programs_in_the_image_and_real_routes() {
    let code = Code::load();
    assert_none(
        "healthchecks",
        Deployment::from_repo().check_healthchecks(&code),
    );
}

#[test]
fn image_builds_and_ships_every_binary_compose_runs() {
    let code = Code::load();
    assert_none("image", Deployment::from_repo().check_image(&code));
}

#[test]
fn the_image_ships_stripped_binaries() {
    assert_none("strip", Deployment::from_repo().check_stripped());
}

#[test]
fn storage_is_declared_only_where_sqlite_needs_it() {
    let code = Code::load();
    assert_none("storage", Deployment::from_repo().check_storage(&code));
}

#[test]
fn dependants_wait_for_readiness_not_liveness() {
    assert_none(
        "readiness healthchecks",
        Deployment::from_repo().check_readiness_healthchecks(),
    );
}

#[test]
fn start_order_is_satisfiable() {
    assert_none("depends_on", Deployment::from_repo().check_start_order());
}

#[test]
fn env_example_documents_exactly_what_is_read() {
    let code = Code::load();
    assert_none(
        ".env.example",
        Deployment::from_repo().check_env_example(&code),
    );
}

#[test]
fn dockerignore_keeps_the_sources() {
    assert_none(
        ".dockerignore",
        Deployment::from_repo().check_dockerignore(),
    );
}

#[test]
fn the_model_sees_what_it_checks() {
    // Guards against checks that pass because they found nothing to look at.
    let code = Code::load();
    let deployment = Deployment::from_repo();
    let files = deployment.compose_files().expect("compose files parse");
    for file in &files {
        let mut problems = Vec::new();
        let entries = Deployment::entries(file, &code, &mut problems);
        assert_none("entries", problems);
        let runs: BTreeSet<String> = entries
            .iter()
            .filter_map(|(_, e)| e.as_ref().map(|(n, _)| n.clone()))
            .collect();
        for required in REQUIRED_BINARIES {
            assert!(runs.contains(required), "{}: runs no {required}", file.file);
        }
        let api = file.service("api_service").expect("api_service");
        assert!(
            api.env.len() > 5,
            "merged environment of api_service: {:?}",
            api.env
        );
        assert!(
            api.env_value("RUST_LOG").is_some(),
            "merge keys (<<: *logging-env) resolved"
        );
        assert!(api.healthcheck.is_some() && api.command.is_some());
        let ports = Deployment::listen_ports(file, &code, &mut Vec::new());
        assert_eq!(ports.get("api_service"), Some(&vec![8000]));
        assert_eq!(ports.get("quote_service"), Some(&vec![8001]));
    }
    let dockerfile = Dockerfile::parse(&deployment.dockerfile);
    let image = dockerfile.image("runtime", &code).expect("runtime stage");
    assert!(image.binaries.contains("api_service") && image.binaries.contains("quote_service"));
    assert!(image.apt_packages.contains("curl"));
    assert!(
        code.binary("api_service")
            .unwrap()
            .env
            .contains("JWT_SECRET")
    );
    assert!(
        code.binary("quote_service")
            .unwrap()
            .env
            .contains("LOG_FORMAT")
    );
    assert!(env_example_entries(&deployment.env_example).len() > 20);
}

// --- Self-tests: every kind of drift is reported -----------------------------------------------

/// Asserts the mutated deployment reports a problem containing every `expected` fragment.
fn assert_reported(mutated: &Deployment, expected: &[&str]) {
    let problems = mutated.problems(&Code::load());
    assert!(
        problems
            .iter()
            .any(|p| expected.iter().all(|e| p.contains(e))),
        "expected a problem mentioning {expected:?}, got {problems:#?}"
    );
}

#[test]
fn the_real_files_have_no_problems_at_all() {
    assert_none(
        "deployment files",
        Deployment::from_repo().problems(&Code::load()),
    );
}

#[test]
fn reports_a_variable_no_service_reads() {
    for file in COMPOSE_FILES {
        let mutated = Deployment::from_repo().mutate(
            file,
            "      API_ADDR: 0.0.0.0:8000\n",
            "      API_ADDR: 0.0.0.0:8000\n      BOGUS_VAR: x\n",
        );
        assert_reported(
            &mutated,
            &[file, "api_service", "BOGUS_VAR", "does not read"],
        );
    }
    // A quote_service variable set on the API is drift too.
    let mutated = Deployment::from_repo().mutate(
        "docker-compose.yml",
        "      API_ADDR: 0.0.0.0:8000\n",
        "      API_ADDR: 0.0.0.0:8000\n      CACHE_TTL: 10s\n",
    );
    assert_reported(&mutated, &["service api_service sets CACHE_TTL"]);
}

#[test]
fn reports_a_value_the_service_would_reject() {
    let mutated = Deployment::from_repo().mutate(
        "docker-compose.yml",
        "${BATCH_SIZE:-50}",
        "${BATCH_SIZE:-fifty}",
    );
    assert_reported(&mutated, &["quote_service rejects"]);
}

#[test]
fn reports_an_unknown_subcommand() {
    let mutated = Deployment::from_repo().mutate(
        "docker-compose-http.yml",
        "exec api_service serve",
        "exec api_service serv",
    );
    assert_reported(&mutated, &["api_service rejects its command"]);
    let mutated = Deployment::from_repo().mutate(
        "docker-compose.yml",
        "[\"api_service\", \"migrate\"]",
        "[\"api_service\", \"migrations\"]",
    );
    assert_reported(&mutated, &["service migrate", "rejects"]);
}

#[test]
fn reports_a_program_run_without_exec() {
    let mutated = Deployment::from_repo().mutate(
        "docker-compose.yml",
        "exec api_service serve",
        "api_service serve",
    );
    assert_reported(&mutated, &["without `exec`"]);
}

#[test]
fn reports_a_compose_default_that_drifted_from_the_code() {
    let mutated = Deployment::from_repo().mutate(
        "docker-compose.yml",
        "${CACHE_TTL:-10s}",
        "${CACHE_TTL:-11s}",
    );
    assert_reported(&mutated, &["CACHE_TTL defaults to \"11s\""]);
}

#[test]
fn reports_a_variable_that_must_be_set_before_start() {
    let mutated = Deployment::from_repo().mutate(
        "docker-compose.yml",
        "${JWT_SECRET:-}",
        "${JWT_SECRET:?set JWT_SECRET}",
    );
    assert_reported(&mutated, &["JWT_SECRET:?", "fresh checkout"]);
    let mutated = Deployment::from_repo().mutate("docker-compose-http.yml", "$$key", "$key");
    assert_reported(&mutated, &["has no default"]);
    let mutated = Deployment::from_repo().mutate("docker-compose.yml", "$$(cat", "$(cat");
    assert_reported(&mutated, &["lone `$`"]);
}

#[test]
fn reports_port_drift() {
    let base = Deployment::from_repo();
    let healthcheck = base.mutate(
        "docker-compose.yml",
        "\"http://localhost:8000/healthz\"]",
        "\"http://localhost:8009/healthz\"]",
    );
    assert_reported(&healthcheck, &["api_service", "probes port 8009"]);
    let url = base.mutate(
        "docker-compose-http.yml",
        "QUOTE_SERVICE_URL: http://quote_service:8001",
        "QUOTE_SERVICE_URL: http://quote_service:8011",
    );
    assert_reported(&url, &["http://quote_service:8011", "listens on [8001]"]);
    let bind = base.mutate(
        "docker-compose.yml",
        "QUOTE_HTTP_ADDR: 0.0.0.0:8001",
        "QUOTE_HTTP_ADDR: 0.0.0.0:8005",
    );
    assert_reported(&bind, &["quote_service", "exposes 8001"]);
    let fake = base.mutate(
        "docker-compose.yml",
        "STOOQ_URL=http://fake_stooq:8002",
        "STOOQ_URL=http://fake_stooq:8003",
    );
    assert_reported(&fake, &["fake_stooq:8003"]);
    let published = base.mutate("docker-compose.yml", ":-8000}:8000", ":-8000}:8080");
    assert_reported(&published, &["publishes 8000:8080"]);
    let loopback = base.mutate(
        "docker-compose.yml",
        "FAKE_STOOQ_ADDR: 0.0.0.0:8002",
        "FAKE_STOOQ_ADDR: 127.0.0.1:8002",
    );
    assert_reported(&loopback, &["loopback"]);
    let documented = base.mutate(
        ".env.example",
        "http://quote_service:8001",
        "http://quote_service:8002",
    );
    assert_reported(&documented, &[".env.example line", "quote_service:8002"]);
}

#[test]
fn reports_services_that_disagree_on_the_transport() {
    let mutated = Deployment::from_repo().mutate(
        "docker-compose-http.yml",
        "      QUOTE_TRANSPORT: http\n      QUOTE_SERVICE_URL",
        "      QUOTE_TRANSPORT: amqp\n      QUOTE_SERVICE_URL",
    );
    assert_reported(&mutated, &["QUOTE_TRANSPORT differs"]);
}

#[test]
fn reports_healthchecks_that_cannot_work() {
    let base = Deployment::from_repo();
    let no_curl = base.mutate("Dockerfile", "ca-certificates curl", "ca-certificates");
    assert_reported(&no_curl, &["healthcheck runs curl", "does not install"]);
    let path = base.mutate(
        "docker-compose.yml",
        "http://localhost:8001/readyz",
        "http://localhost:8001/ready",
    );
    assert_reported(&path, &["probes /ready,", "quote_service"]);
    let no_fail = base.mutate(
        "docker-compose.yml",
        "\"-fsS\", \"http://localhost:8000",
        "\"-sS\", \"http://localhost:8000",
    );
    assert_reported(&no_fail, &["without -f/--fail"]);
}

#[test]
fn reports_a_binary_the_image_does_not_build() {
    let base = Deployment::from_repo();
    let not_built = base.mutate("Dockerfile", "--bin quote_service", "");
    assert_reported(&not_built, &["does not build and copy out quote_service"]);
    assert_reported(
        &not_built,
        &["runs quote_service, which the \"runtime\" image does not contain"],
    );
    let not_copied = base.mutate("Dockerfile", " target/dist/fake_stooq", "");
    assert_reported(
        &not_copied,
        &["runs fake_stooq, which the \"runtime\" image does not contain"],
    );
    let root = base.mutate("Dockerfile", "USER app:app", "USER root");
    assert_reported(&root, &["runs as root"]);
    let root_override = base.mutate(
        "docker-compose.yml",
        "    restart: \"no\"\n    command:\n      - sh",
        "    restart: \"no\"\n    user: root\n    command:\n      - sh",
    );
    assert_reported(&root_override, &["service init-secrets: runs as root"]);
    let no_shell = base.mutate(
        "Dockerfile",
        "FROM debian:${DEBIAN_RELEASE}-slim AS base",
        "FROM gcr.io/distroless/cc AS base",
    );
    assert_reported(&no_shell, &["service api_service: runs `sh`"]);
    let no_chown = base.mutate(
        "Dockerfile",
        "chown app:app /data /run/quote-secrets",
        "chown app:app /data",
    );
    assert_reported(&no_chown, &["/run/quote-secrets", "chown"]);
}

#[test]
fn reports_an_unsatisfiable_start_order() {
    let mutated = Deployment::from_repo().mutate(
        "docker-compose-http.yml",
        "      migrate:\n        condition: service_completed_successfully",
        "      rabbitmq:\n        condition: service_healthy",
    );
    assert_reported(&mutated, &["depends on rabbitmq, which does not exist"]);
}

#[test]
fn reports_env_example_drift() {
    let base = Deployment::from_repo();
    let unknown = base.mutate(
        ".env.example",
        "# CACHE_TTL=10s\n",
        "# CACHE_TTL=10s\n# NOT_READ_ANYWHERE=1\n",
    );
    assert_reported(&unknown, &["NOT_READ_ANYWHERE is read by no service"]);
    let wrong_default = base.mutate(".env.example", "# CACHE_TTL=10s\n", "# CACHE_TTL=30s\n");
    assert_reported(&wrong_default, &["CACHE_TTL=30s", "default"]);
    let undocumented = base.mutate(".env.example", "# CACHE_TTL=10s\n", "");
    assert_reported(&undocumented, &["CACHE_TTL", "does not document"]);
    let required = base.mutate(".env.example", "# JWT_SECRET=\n", "JWT_SECRET=changeme\n");
    assert_reported(&required, &["JWT_SECRET=changeme is set"]);
}

#[test]
fn reports_a_dockerignore_that_drops_sources() {
    let mutated =
        Deployment::from_repo().mutate(".dockerignore", "target/\n", "target/\nCargo.lock\n");
    assert_reported(&mutated, &["`Cargo.lock` drops files"]);
}

#[test]
fn interpolation_parser_follows_compose() {
    let found = scan_interpolations("a ${X:-1} $Y ${Z-${W:-2}} $$ok").unwrap();
    let names: Vec<(&str, &str)> = found
        .iter()
        .map(|i| (i.name.as_str(), i.op.as_str()))
        .collect();
    assert_eq!(names, [("X", ":-"), ("Y", ""), ("Z", "-"), ("W", ":-")]);
    assert!(scan_interpolations("cost: $5").is_err());
    assert!(scan_interpolations("${X").is_err());
    assert_eq!(with_defaults("${A:-x}/${B}/$$C/${D-${E:-y}}"), "x//$C/y");
}

#[test]
fn reports_binaries_shipped_with_their_line_tables() {
    let base = Deployment::from_repo();
    let unstripped = base.mutate("Cargo.toml", "strip = \"debuginfo\"", "strip = \"none\"");
    assert_reported(&unstripped, &["profile \"dist\"", "does not strip"]);
    let release = base.mutate("Dockerfile", "--profile dist", "--release");
    assert_reported(&release, &["profile \"release\"", "does not strip"]);
    let debug = base.mutate("Dockerfile", "--profile dist", "");
    assert_reported(&debug, &["builds no optimised profile"]);
}

#[test]
fn reports_storage_nobody_uses_or_a_database_without_storage() {
    let base = Deployment::from_repo();
    let volume = base.mutate(
        "Dockerfile",
        "WORKDIR /data\n",
        "WORKDIR /data\nVOLUME [\"/data\"]\n",
    );
    assert_reported(&volume, &["Dockerfile: VOLUME", "anonymous volume"]);
    let unused = base.mutate(
        "docker-compose.yml",
        "    command: [\"api_service\", \"migrate\"]\n",
        "    command: [\"api_service\", \"migrate\"]\n    volumes:\n      - jwt-secret:/data\n",
    );
    assert_reported(&unused, &["service migrate", "storage nobody uses"]);
    let anonymous = base.mutate(
        "docker-compose-http.yml",
        "      - jwt-secret:/run/quote-secrets:ro\n",
        "      - jwt-secret:/run/quote-secrets:ro\n      - /data\n",
    );
    assert_reported(
        &anonymous,
        &["service api_service", "anonymous volume /data"],
    );
    let sqlite = base.mutate(
        "docker-compose.yml",
        "      DATABASE_URL: postgres://${POSTGRES_USER:-quotes}:${POSTGRES_PASSWORD:-quotes}@postgres:5432/${POSTGRES_DB:-quotes}\n      DATABASE_MAX",
        "      DATABASE_URL: sqlite://api_service.db\n      DATABASE_MAX",
    );
    assert_reported(
        &sqlite,
        &["service api_service", "SQLite database in /data", "lost"],
    );
    // The same database on a named volume is what SQLite needs: nothing to report.
    let kept = sqlite
        .mutate(
            "docker-compose.yml",
            "      - jwt-secret:/run/quote-secrets:ro\n",
            "      - jwt-secret:/run/quote-secrets:ro\n      - api-data:/data\n",
        )
        .mutate(
            "docker-compose.yml",
            "\n  jwt-secret:\n",
            "\n  jwt-secret:\n  api-data:\n",
        );
    assert_none("storage", kept.check_storage(&Code::load()));
}

#[test]
fn reports_healthchecks_that_say_healthy_before_ready() {
    let base = Deployment::from_repo();
    let alive = base.mutate(
        "docker-compose-http.yml",
        "http://localhost:8001/readyz",
        "http://localhost:8001/healthz",
    );
    assert_reported(&alive, &["service quote_service", "does not probe /readyz"]);
    let ping = base.mutate(
        "docker-compose.yml",
        "rabbitmq-diagnostics -q check_running && rabbitmq-diagnostics -q check_port_connectivity",
        "rabbitmq-diagnostics -q ping",
    );
    assert_reported(&ping, &["service rabbitmq", "check_running"]);
    let socket = base.mutate(
        "docker-compose.yml",
        "pg_isready -q -h 127.0.0.1",
        "pg_isready -q",
    );
    assert_reported(&socket, &["service postgres", "pg_isready -h 127.0.0.1"]);
}
