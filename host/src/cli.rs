//! The `canopy` command line: `serve`, `keygen`, `rotate-key`, `migrate-store`, and the
//! plugin author's tools `plugin inspect` and `plugin run` (a dry run that prints the
//! requests a plugin would send without sending anything). `main.rs` only calls [`main`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, PluginLimits};
use crate::runtime::{
    Call, ConfigError, Plugin, PluginConfig, PluginRequest, PluginResponse, Refusal, Runtime,
    Scope, Usage, Verdict,
};

#[derive(Debug, Parser)]
#[command(
    name = "canopy",
    version,
    about = "Loyalty events to marketing platforms, through sandboxed plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP server.
    Serve(Box<Config>),
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print a new random master key (base64) for `CANOPY_MASTER_KEY`.
    Keygen,
    /// Re-encrypt every stored secret under a new master key (stop the server first).
    RotateKey(RotateKey),
    /// Move an install from its data directory (the embedded store) into an empty
    /// PostgreSQL database, or onto the other embedded engine, then check the counts (stop
    /// the server first).
    MigrateStore(MigrateStore),
}

#[derive(Debug, clap::Args)]
pub struct MigrateStore {
    /// The data directory to move (the server's `--data-dir`); it is only read.
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL database to move into (`postgres://user:password@host/db`), which must
    /// hold no data yet; or `redb` / `sled` to move the data directory's store onto that
    /// embedded engine, in place (the old engine's files are kept aside).
    #[arg(long, env = "CANOPY_STORE", hide_env_values = true, value_parser = crate::config::secret)]
    pub to: crate::crypto::secret::SecretValue,
}

#[derive(Debug, clap::Args)]
pub struct RotateKey {
    /// The data directory of the server.
    #[arg(long, env = "CANOPY_DATA_DIR", default_value = "canopy-data")]
    pub data_dir: PathBuf,
    /// The cluster's PostgreSQL database (`postgres://…`) instead of the data directory's
    /// store; stop every node first.
    #[arg(long, env = "CANOPY_STORE", hide_env_values = true, value_parser = crate::config::secret)]
    pub store: Option<crate::crypto::secret::SecretValue>,
    /// The current master key (base64).
    #[arg(long, env = "CANOPY_MASTER_KEY", hide_env_values = true, value_parser = crate::config::secret)]
    pub master_key: Option<crate::crypto::secret::SecretValue>,
    /// A file holding the current master key.
    #[arg(long, env = "CANOPY_MASTER_KEY_FILE", conflicts_with = "master_key")]
    pub master_key_file: Option<PathBuf>,
    /// The new master key (base64; `canopy keygen`).
    #[arg(long, env = "CANOPY_NEW_MASTER_KEY", hide_env_values = true, value_parser = crate::config::secret)]
    pub new_master_key: Option<crate::crypto::secret::SecretValue>,
    /// A file holding the new master key.
    #[arg(
        long,
        env = "CANOPY_NEW_MASTER_KEY_FILE",
        conflicts_with = "new_master_key"
    )]
    pub new_master_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print what a plugin says about itself (`describe`).
    Inspect {
        /// The plugin component (.wasm), or the id of a bundled plugin (`klaviyo`, …).
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Dry-run a plugin on an event: print the requests it would send (secrets as
    /// references), the verdict for a response, and what each call cost.
    Run {
        /// The plugin component (.wasm), or the id of a bundled plugin (`klaviyo`,
        /// `omnisend`, `shopify-flow`, `webhook`).
        file: PathBuf,
        /// The canonical event: a JSON file, or an event type (`tier.changed`) for the
        /// built-in sample of that type.
        #[arg(long)]
        event: PathBuf,
        /// The integration's settings, a JSON file (default: `{}`).
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Secrets to treat as set: `all` declared by the plugin, `none`, or names
        /// separated by commas. Values are never needed: the sandbox never sees them.
        #[arg(long, default_value = "all")]
        secrets: String,
        /// A response to interpret: a status (`429`), inline JSON
        /// (`{"status":429,"headers":{"retry-after":"30"},"body":"…"}`) or `@file.json`.
        #[arg(long)]
        response: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        limits: PluginLimits,
    },
    /// Start a plugin project in a new directory: source, manifest, README and test
    /// settings, ready to build and `plugin test`.
    New {
        /// The plugin's id (`[a-z0-9-]`); also the directory's name unless `--dir` is given.
        id: String,
        #[arg(long, value_enum, default_value_t = crate::scaffold::Language::Rust)]
        lang: crate::scaffold::Language,
        /// Where to create it (default: `./<id>`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin SDK: a path (the language's SDK, or a Canopy checkout holding it) or,
        /// for Rust and Python, a git URL. Default: the SDK of the source tree this binary was
        /// built from.
        #[arg(long)]
        sdk: Option<String>,
    },
    /// Run a plugin on the sample of every event type and compare each answer with the
    /// expected one kept beside the plugin (`<dir>/expected/<event type>.json`, with the
    /// settings from `<dir>/settings.json`); print a diff for each that differs and fail.
    Test {
        /// The plugin component (.wasm), or the id of a bundled plugin.
        file: PathBuf,
        /// The plugin's test directory.
        #[arg(long, default_value = "tests")]
        dir: PathBuf,
        /// Secrets to treat as set: `all` declared by the plugin, `none`, or names
        /// separated by commas.
        #[arg(long, default_value = "all")]
        secrets: String,
        /// Write every expected file from what the plugin answers now (review the result
        /// before keeping it).
        #[arg(long)]
        bless: bool,
        #[command(flatten)]
        limits: PluginLimits,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Entry point of the `canopy` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Keygen => {
            println!("{}", crate::crypto::seal::MasterKey::generate().1);
            ExitCode::SUCCESS
        }
        Command::RotateKey(args) => match rotate_key(args) {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::MigrateStore(args) => match migrate_store(args) {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Plugin(command) => match plugin_command(command) {
            Ok(output) => {
                print!("{output}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

fn rotate_key(args: RotateKey) -> Result<String, String> {
    use crate::app::master_key;
    let current = master_key(&args.master_key, &args.master_key_file, "CANOPY_MASTER_KEY")
        .map_err(|e| e.to_string())?;
    let new = master_key(
        &args.new_master_key,
        &args.new_master_key_file,
        "CANOPY_NEW_MASTER_KEY",
    )
    .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let rotated = runtime
        .block_on(crate::app::rotate_key(
            &args.data_dir,
            args.store.as_ref().map(|s| s.expose()),
            &current,
            &new,
        ))
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "re-encrypted {} secrets of {} integrations; start the server with the new key",
        rotated.secrets, rotated.integrations
    ))
}

fn migrate_store(args: MigrateStore) -> Result<String, String> {
    /// A progress bar on stderr (drawn only on a terminal).
    struct Bar(indicatif::ProgressBar);
    impl crate::app::migrate_store::Progress for Bar {
        fn start(&self, events: u64) {
            self.0.set_length(events);
        }
        fn moved(&self, events: u64) {
            self.0.set_position(events);
        }
    }
    let to = args.to.expose();
    if let Some(engine) = crate::store::EngineKind::parse(to) {
        let moved = crate::app::migrate_store::move_engine(&args.from, engine)
            .map_err(|e| e.to_string())?;
        return Ok(format!(
            "moved the store of {} from {} to {}: {}, {} keys; the counts match. The {} files \
             are kept in {}: remove them once the server runs well.",
            args.from.display(),
            moved.from,
            moved.to,
            moved.counts,
            moved.keys,
            moved.from,
            moved.backup.display()
        ));
    }
    if !crate::app::is_postgres(to) {
        return Err("--to must be `redb`, `sled` or a PostgreSQL URL (postgres://…)".into());
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events  {per_sec}  {eta} left",
        )
        .expect("a valid template"),
    );
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let moved = runtime
        .block_on(crate::app::migrate_store::migrate_store(
            &args.from,
            to,
            &Bar(bar.clone()),
        ))
        .map_err(|e| e.to_string());
    bar.finish_and_clear();
    let moved = moved?;
    Ok(format!(
        "moved {moved} into {}; the counts match. Start every node with --store (CANOPY_STORE) \
         set to it, the same master key and the admin and ingest tokens.",
        crate::store::redacted(to)
    ))
}

fn serve(config: Config) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        crate::server::run(Arc::new(config), listener, shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: `CANOPY_LOG` filters them (default `info`), `CANOPY_LOG_FORMAT=json`
/// writes one JSON object per line with the delivery and integration ids as fields.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CANOPY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if std::env::var("CANOPY_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Runs a `plugin` subcommand and returns what to print.
pub fn plugin_command(command: PluginCommand) -> Result<String, String> {
    match command {
        PluginCommand::Inspect { file, format } => {
            let plugin = load(&file, &PluginLimits::default())?;
            Ok(match format {
                Format::Json => to_json(&InspectOutput::new(&plugin)),
                Format::Text => inspect_text(&plugin),
            })
        }
        PluginCommand::Run {
            file,
            event,
            settings,
            secrets,
            response,
            format,
            limits,
        } => {
            // A dry run meters fuel unless told otherwise: authors want the count.
            let limits = PluginLimits {
                plugin_fuel: limits
                    .plugin_fuel
                    .or(Some(crate::runtime::DEFAULT_FUEL_PER_CALL)),
                ..limits
            };
            let plugin = load(&file, &limits)?;
            let event = read_event(&event)?;
            let settings: Value = match settings {
                Some(path) => serde_json::from_str(&read(&path)?)
                    .map_err(|e| format!("{} is not JSON: {e}", path.display()))?,
                None => Value::Object(Default::default()),
            };
            let config = PluginConfig {
                settings,
                secrets_present: secrets_present(&plugin, &secrets),
            };
            let response = response.as_deref().map(parse_response).transpose()?;
            let run = dry_run(&plugin, &event, &config, response.as_ref());
            Ok(match format {
                Format::Json => to_json(&run),
                Format::Text => run_text(&plugin, &run),
            })
        }
        PluginCommand::New { id, lang, dir, sdk } => {
            let sdk = crate::scaffold::Sdk::locate(sdk.as_deref(), lang)?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&id));
            crate::scaffold::new_project(&dir, &id, lang, &sdk)
        }
        PluginCommand::Test {
            file,
            dir,
            secrets,
            bless,
            limits,
        } => {
            let plugin = load(&file, &limits)?;
            let settings_file = dir.join("settings.json");
            let settings: Value = if settings_file.exists() {
                serde_json::from_str(&read(&settings_file)?)
                    .map_err(|e| format!("{} is not JSON: {e}", settings_file.display()))?
            } else {
                Value::Object(Default::default())
            };
            let config = PluginConfig {
                settings,
                secrets_present: secrets_present(&plugin, &secrets),
            };
            let report = crate::plugin_test::run(&plugin, &config, &dir.join("expected"), bless)?;
            if report.passed() {
                Ok(report.text())
            } else {
                Err(format!("{}\n\n{}", report.summary(), report.details()))
            }
        }
    }
}

fn load(file: &Path, limits: &PluginLimits) -> Result<Arc<Plugin>, String> {
    let bundled = file
        .to_str()
        .filter(|_| !file.exists())
        .and_then(crate::runtime::bundled::component);
    let bytes = match bundled {
        Some(bytes) => bytes.to_vec(),
        None => std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?,
    };
    let runtime = Runtime::new(limits.limits()?).map_err(|e| e.to_string())?;
    runtime
        .load(&bytes)
        .map(Arc::new)
        .map_err(|e| format!("{} cannot be loaded: {e}", file.display()))
}

/// An event file, or the built-in sample of an event type.
fn read_event(path: &Path) -> Result<String, String> {
    if !path.exists()
        && let Some(kind) = path
            .to_str()
            .and_then(|k| k.parse::<canopy_events::EventKind>().ok())
    {
        return Ok(kind.sample_json().to_owned());
    }
    read(path)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn to_json(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn secrets_present(plugin: &Plugin, spec: &str) -> Vec<String> {
    match spec.trim() {
        "all" => plugin
            .info()
            .settings
            .iter()
            .filter(|s| s.secret)
            .map(|s| s.name.clone())
            .collect(),
        "none" | "" => Vec::new(),
        list => list
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    }
}

/// Parses `--response`: `429`, inline JSON, or `@file.json`.
fn parse_response(spec: &str) -> Result<PluginResponse, String> {
    let spec = spec.trim();
    if let Ok(status) = spec.parse::<u16>() {
        return Ok(PluginResponse {
            status,
            ..PluginResponse::default()
        });
    }
    let text = match spec.strip_prefix('@') {
        Some(path) => read(Path::new(path))?,
        None => spec.to_owned(),
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("--response is not JSON: {e}"))?;
    let status = value
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or("--response needs a numeric \"status\"")?;
    let headers = match value.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                (k.to_ascii_lowercase(), v)
            })
            .collect(),
        Some(_) => return Err("--response \"headers\" must be an object".into()),
    };
    let body = match value.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    Ok(PluginResponse {
        status,
        headers,
        body,
    })
}

/// Everything a dry run found out.
#[derive(Debug, Serialize)]
pub struct DryRun {
    pub plugin: InspectOutput,
    pub config_errors: Vec<ConfigError>,
    pub transform: Outcome<Result<Vec<PluginRequest>, Refusal>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpret: Option<Outcome<Verdict>>,
}

/// A call's result, or the error that stopped it, with its cost.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    Ok { value: T, usage: Usage },
    Error { error: String, kind: String },
}

impl<T> From<Result<Call<T>, crate::runtime::PluginError>> for Outcome<T> {
    fn from(r: Result<Call<T>, crate::runtime::PluginError>) -> Outcome<T> {
        match r {
            Ok(call) => Outcome::Ok {
                value: call.value,
                usage: call.usage,
            },
            Err(e) => Outcome::Error {
                kind: e.kind().to_owned(),
                error: e.to_string(),
            },
        }
    }
}

pub fn dry_run(
    plugin: &Plugin,
    event: &str,
    config: &PluginConfig,
    response: Option<&PluginResponse>,
) -> DryRun {
    let config_errors = match plugin.validate_config(Scope::Fresh, config) {
        Ok(call) => call.value,
        Err(e) => vec![ConfigError {
            field: String::new(),
            message: format!("validate-config failed: {e}"),
        }],
    };
    DryRun {
        plugin: InspectOutput::new(plugin),
        config_errors,
        transform: plugin.transform(Scope::Fresh, event, config).into(),
        interpret: response.map(|r| plugin.interpret(Scope::Fresh, r).into()),
    }
}

#[derive(Debug, Serialize)]
pub struct InspectOutput {
    #[serde(flatten)]
    pub info: crate::runtime::PluginInfo,
    pub digest: String,
    pub size: usize,
    /// The contract version the component was built against.
    pub contract: &'static str,
    /// Linear memory one instance may hold here: the default or what the plugin declared.
    pub memory_limit: usize,
}

impl InspectOutput {
    fn new(plugin: &Plugin) -> InspectOutput {
        InspectOutput {
            info: plugin.info().clone(),
            digest: plugin.digest().to_owned(),
            size: plugin.size(),
            contract: plugin.contract(),
            memory_limit: plugin.memory_limit(),
        }
    }
}

fn inspect_text(plugin: &Plugin) -> String {
    let info = plugin.info();
    let mut out = String::new();
    let _ = writeln!(out, "{} ({}) {}", info.name, info.id, info.version);
    let _ = writeln!(out, "{}", info.description);
    let _ = writeln!(
        out,
        "component: {} bytes, {}, contract {}",
        plugin.size(),
        plugin.digest(),
        plugin.contract()
    );
    let _ = writeln!(
        out,
        "memory: {} MiB per instance{}",
        plugin.memory_limit() >> 20,
        if info.needs.memory_mib.is_some() {
            " (declared)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "events: {}", info.events.join(", "));
    let _ = writeln!(out, "allowed hosts: {}", info.allowed_hosts.join(", "));
    if let Some(rate) = info.rate_limit {
        let _ = writeln!(
            out,
            "rate limit: {} requests per {} s",
            rate.requests, rate.per_seconds
        );
    }
    let _ = writeln!(out, "settings:");
    for s in &info.settings {
        let mut flags = vec![format!("{:?}", s.kind).to_lowercase()];
        if s.required {
            flags.push("required".into());
        }
        if s.secret {
            flags.push("secret".into());
        }
        if let Some(default) = &s.default_value {
            flags.push(format!("default {default}"));
        }
        if !s.options.is_empty() {
            flags.push(format!("one of {}", s.options.join("|")));
        }
        let _ = writeln!(out, "  {} — {} [{}]", s.name, s.label, flags.join(", "));
        if !s.description.is_empty() {
            let _ = writeln!(out, "      {}", s.description);
        }
    }
    out
}

fn usage_text(usage: &Usage) -> String {
    format!(
        "fuel {}, time {} µs, memory {} KiB",
        usage.fuel,
        usage.duration.as_micros(),
        usage.memory_bytes >> 10
    )
}

fn run_text(plugin: &Plugin, run: &DryRun) -> String {
    let info = plugin.info();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plugin: {} {} ({})",
        info.id,
        info.version,
        plugin.digest()
    );
    if run.config_errors.is_empty() {
        let _ = writeln!(out, "config: valid");
    } else {
        for e in &run.config_errors {
            let field = if e.field.is_empty() {
                "config"
            } else {
                &e.field
            };
            let _ = writeln!(out, "config error: {field}: {}", e.message);
        }
    }
    match &run.transform {
        Outcome::Ok { value, usage } => {
            match value {
                Ok(requests) => {
                    let _ = writeln!(out, "transform: {} request(s)", requests.len());
                    for (i, request) in requests.iter().enumerate() {
                        let _ = writeln!(out, "--- request {}", i + 1);
                        let _ = write!(out, "{request}");
                    }
                    let _ = writeln!(out, "---");
                }
                Err(Refusal::Skip(reason)) => {
                    let _ = writeln!(out, "transform: skipped: {reason}");
                }
                Err(Refusal::InvalidConfig(reason)) => {
                    let _ = writeln!(out, "transform: invalid config: {reason}");
                }
                Err(Refusal::InvalidEvent(reason)) => {
                    let _ = writeln!(out, "transform: invalid event: {reason}");
                }
            }
            let _ = writeln!(out, "transform used: {}", usage_text(usage));
            for log in &usage.logs {
                let _ = writeln!(out, "plugin log [{}]: {}", log.level, log.message);
            }
        }
        Outcome::Error { error, .. } => {
            let _ = writeln!(out, "transform failed: {error}");
        }
    }
    match &run.interpret {
        None => {}
        Some(Outcome::Ok { value, usage }) => {
            let verdict = match value {
                Verdict::Delivered => "delivered".to_owned(),
                Verdict::Retry {
                    after: Some(after),
                    reason,
                } => {
                    format!("retry after {} s ({reason})", after.as_secs())
                }
                Verdict::Retry {
                    after: None,
                    reason,
                } => {
                    format!("retry on the schedule ({reason})")
                }
                Verdict::Failed { reason } => format!("failed: {reason}"),
            };
            let _ = writeln!(out, "verdict: {verdict}");
            let _ = writeln!(out, "interpret used: {}", usage_text(usage));
        }
        Some(Outcome::Error { error, .. }) => {
            let _ = writeln!(out, "interpret failed: {error}");
        }
    }
    out
}
