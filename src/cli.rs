//! The command line: `run`, `validate`, `test`, `tap`, `top`, `graph`. Exit codes: 0 success, 1 runtime failure,
//! 78 (EX_CONFIG) for any configuration error.

use crate::config::{Config, ConfigError, DEFAULT_CONFIG};
use crate::observe::{api, logging};
use crate::topology;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit code for configuration errors (sysexits.h EX_CONFIG).
pub const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A streaming ETL agent: sources -> transforms -> sinks, with backpressure."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent. Without --config, runs the built-in default config (demo -> remap -> console).
    Run {
        /// Config file or directory of *.yaml files; repeat to merge several.
        #[arg(short, long = "config", value_name = "PATH")]
        config: Vec<PathBuf>,
        /// Reload when a config file changes (checked every second), as on SIGHUP.
        #[arg(long)]
        watch_config: bool,
    },
    /// Check config files: syntax, fields, wiring, VRL programs and (unless --no-environment)
    /// that data_dir is writable and sinks' endpoints are reachable.
    Validate {
        /// Config files or directories, merged into one topology (none: the built-in default).
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Skip checks that touch the environment (data_dir, endpoints).
        #[arg(long)]
        no_environment: bool,
    },
    /// Run the unit tests written in config files (`tests:`): events inserted at transforms,
    /// conditions checked on their outputs. Exit 0 when all pass, 1 when one fails.
    Test {
        /// Config files or directories, merged into one topology.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Print a live sample of the events leaving a component, as JSON lines (from a running
    /// agent's api). Slow readers get a sample; the pipeline never waits for a tap.
    Tap {
        /// The component id.
        component: String,
        /// The agent's api address.
        #[arg(long, default_value = "127.0.0.1:8686")]
        api: std::net::SocketAddr,
        /// Stop after this many events (default: until interrupted).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show a refreshing table of per-component events/s, bytes/s, errors and buffer fill,
    /// read from a running agent's /metrics.
    Top {
        /// The agent's api address.
        #[arg(long, default_value = "127.0.0.1:8686")]
        api: std::net::SocketAddr,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many tables (default: until interrupted).
        #[arg(long)]
        iterations: Option<u32>,
    },
    /// Print the topology as a graph (Graphviz DOT or Mermaid).
    Graph {
        /// Config files or directories, merged into one topology (none: the built-in default).
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Graphviz DOT or Mermaid.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            watch_config,
        } => run(config, watch_config),
        Command::Validate {
            paths,
            no_environment,
        } => validate(paths, no_environment),
        Command::Graph { paths, format } => graph(paths, format),
        Command::Test { paths } => test(paths),
        Command::Tap {
            component,
            api,
            limit,
        } => tap(&component, api, limit),
        Command::Top {
            api,
            interval,
            iterations,
        } => match crate::top::run(api, Duration::from_secs_f64(interval.max(0.1)), iterations) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sluice top: {error}");
                ExitCode::from(1)
            }
        },
    }
}

fn load(paths: &[PathBuf]) -> Result<Config, ConfigError> {
    if paths.is_empty() {
        Config::load_str("<built-in default config>", DEFAULT_CONFIG)
    } else {
        Config::load_paths(paths)
    }
}

/// Loads a config and checks its wiring and every component (VRL programs, templates, fields),
/// reporting every error of every kind in one pass, in file order. Must run inside the tokio
/// runtime (building components may need it).
fn load_checked(paths: &[PathBuf]) -> Result<Config, ConfigError> {
    let (config, mut diagnostics) = if paths.is_empty() {
        Config::parse_str("<built-in default config>", DEFAULT_CONFIG)
    } else {
        Config::parse_paths(paths)?
    };
    diagnostics.extend(topology::check_all(&config));
    if diagnostics.is_empty() {
        return Ok(config);
    }
    let mut error = ConfigError { diagnostics };
    error.sort_in_file_order();
    Err(error)
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprint!("{error}");
    ExitCode::from(EX_CONFIG)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_unpark(crate::resident::on_worker_unpark)
        .on_thread_park(crate::resident::on_worker_park)
        .build()
        .expect("cannot start the tokio runtime")
}

fn run(paths: Vec<PathBuf>, watch_config: bool) -> ExitCode {
    let _ = crate::observe::metrics::prometheus();
    let rt = runtime();
    let config = match rt.block_on(async { load_checked(&paths) }) {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    logging::init(&config.global.log.level, config.global.log.format);
    rt.block_on(async move {
        let components = Arc::new(std::sync::RwLock::new(config.component_ids().into_iter().collect()));
        let api_stop = CancellationToken::new();
        if config.global.api.enabled {
            let tls = match config
                .global
                .api
                .tls
                .as_ref()
                .map(|t| t.server())
                .transpose()
            {
                Ok(tls) => tls,
                Err((field, message)) => {
                    return config_failure(&ConfigError::single(format!("api.{field}"), message))
                }
            };
            match api::serve(
                config.global.api.address,
                tls,
                components.clone(),
                api_stop.clone(),
            )
            .await
            {
                Ok(address) => tracing::info!(%address, "api listening (/health, /metrics)"),
                Err(error) => {
                    eprintln!(
                        "api: cannot listen on {}: {error}",
                        config.global.api.address
                    );
                    return ExitCode::from(EX_CONFIG);
                }
            }
        }
        tracing::info!(
            sources = config.sources.len(),
            transforms = config.transforms.len(),
            sinks = config.sinks.len(),
            "sluice started"
        );
        let mut topology = match topology::Topology::start(config) {
            Ok(topology) => topology,
            Err(error) => return config_failure(&error),
        };
        release_startup_memory_later();
        let mut requests = StopRequests::new(paths, watch_config);
        let code = loop {
            tokio::select! {
                stop = requests.next() => match stop {
                    Stop::Exit => break match topology.shutdown_unless(stop_signal()).await {
                        Ok(topology::Drain::Interrupted) => {
                            tracing::warn!("sluice stopped at once; what was not acknowledged is read again on the next start");
                            ExitCode::from(EX_INTERRUPTED)
                        }
                        Ok(_) => {
                            tracing::info!("sluice stopped");
                            ExitCode::SUCCESS
                        }
                        Err(error) => {
                            tracing::error!(%error, "sluice stopped; components failed while draining");
                            ExitCode::FAILURE
                        }
                    },
                    Stop::Reload(new) => match topology.reload(*new).await {
                        Ok(summary) => {
                            release_startup_memory_later();
                            *components.write().unwrap() = topology.config().component_ids().into_iter().collect();
                            tracing::info!(
                                kept = ?summary.kept,
                                rebuilt = ?summary.rebuilt,
                                added = ?summary.added,
                                removed = ?summary.removed,
                                restarted = summary.restarted,
                                "config reloaded"
                            );
                        }
                        Err(error) => {
                            tracing::error!(error = %crate::config::secrets::redact(&error), "the reloaded config failed to start; stopping");
                            let _ = topology.shutdown().await;
                            break ExitCode::from(EX_CONFIG);
                        }
                    },
                },
                failure = topology.next_failure() => match failure {
                    None => {
                        tracing::info!("every component finished; sluice stopped");
                        break ExitCode::SUCCESS;
                    }
                    Some(error) => {
                        let _ = topology.shutdown().await;
                        tracing::error!(%error, "sluice stopped after a component failed");
                        break ExitCode::FAILURE;
                    }
                },
            }
        };
        api_stop.cancel();
        code
    })
}

/// Gives back the pages only starting needed ([`crate::resident`]) once the components have
/// had time to start.
fn release_startup_memory_later() {
    tokio::spawn(async {
        tokio::time::sleep(crate::resident::AFTER_START).await;
        crate::resident::release_startup_memory();
    });
}

/// The exit code after a second SIGINT/SIGTERM cut the drain short (128 + SIGINT, as shells
/// report an interrupted program).
const EX_INTERRUPTED: u8 = 130;

/// Completes on the next SIGINT or SIGTERM: during a drain, the request to stop at once.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Why a topology stops.
enum Stop {
    /// SIGTERM or SIGINT: drain and exit.
    Exit,
    /// SIGHUP (or a changed file with `--watch-config`) and the new config is valid: apply
    /// it component by component.
    Reload(Box<crate::config::Config>),
}

/// SIGTERM/SIGINT, SIGHUP, and (with `--watch-config`) changes of the config files. Kept
/// across waits so no signal is missed between them.
struct StopRequests {
    paths: Vec<PathBuf>,
    watch_config: bool,
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    seen: Vec<Option<std::time::SystemTime>>,
    poll: tokio::time::Interval,
}

impl StopRequests {
    fn new(paths: Vec<PathBuf>, watch_config: bool) -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(hup)) => Some((term, hup)),
            _ => None,
        };
        let seen = Self::stamp(&paths);
        StopRequests {
            paths,
            watch_config,
            signals,
            seen,
            poll: tokio::time::interval(Duration::from_secs(1)),
        }
    }

    fn stamp(paths: &[PathBuf]) -> Vec<Option<std::time::SystemTime>> {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Waits for SIGTERM/SIGINT, or for a reload request whose config loads and builds. An
    /// invalid new config is logged and the current topology keeps running.
    async fn next(&mut self) -> Stop {
        let Some((term, hup)) = self.signals.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            let why = tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM received; draining (a second signal stops at once, keeping only acknowledged positions)");
                    return Stop::Exit;
                }
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("SIGINT received; draining (a second Ctrl-C stops at once, keeping only acknowledged positions)");
                    return Stop::Exit;
                }
                _ = hup.recv() => "SIGHUP received",
                _ = self.poll.tick(), if self.watch_config => {
                    let now = Self::stamp(&self.paths);
                    if now == self.seen {
                        continue;
                    }
                    self.seen = now;
                    "config file changed"
                }
            };
            if self.paths.is_empty() {
                tracing::warn!("{why}: running the built-in default config, nothing to reload");
                continue;
            }
            let candidate = load_checked(&self.paths);
            match candidate {
                Ok(config) => {
                    tracing::info!("{why}: the new config is valid; applying it");
                    return Stop::Reload(Box::new(config));
                }
                Err(error) => {
                    tracing::error!(
                        "{why}: the new config is invalid; still running the current one.\n{}",
                        crate::config::secrets::redact(&error.to_string())
                    );
                }
            }
        }
    }
}

fn validate(paths: Vec<PathBuf>, no_environment: bool) -> ExitCode {
    let _ = crate::observe::metrics::prometheus();
    let rt = runtime();
    rt.block_on(async move {
        // Building compiles VRL programs, parses templates and checks every field.
        let config = match load_checked(&paths) {
            Ok(config) => config,
            Err(error) => return config_failure(&error),
        };
        println!(
            "ok: {} sources, {} transforms, {} sinks, wiring valid",
            config.sources.len(),
            config.transforms.len(),
            config.sinks.len()
        );
        if no_environment {
            return ExitCode::SUCCESS;
        }
        let mut failures = Vec::new();
        let data_dir = &config.global.data_dir;
        match crate::writable::check_dir(data_dir) {
            Ok(found) => {
                if let Some(note) = found.note(data_dir) {
                    println!("ok: data_dir: {note}");
                }
            }
            Err(error) => failures.push(format!("data_dir: {error}")),
        }
        for (id, entry) in &config.sinks {
            match entry.config.healthcheck().await {
                Some(Ok(notes)) => {
                    println!("ok: sinks.{id}: healthcheck passed");
                    for note in notes {
                        println!("ok: sinks.{id}: {note}");
                    }
                }
                Some(Err(error)) => {
                    failures.push(format!("sinks.{id}: healthcheck failed: {error}"))
                }
                None => {}
            }
        }
        if failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            for failure in &failures {
                eprintln!(
                    "  x {}",
                    crate::config::secrets::redact(&failure.to_string())
                );
            }
            eprintln!("(use --no-environment to check the config alone)");
            ExitCode::from(EX_CONFIG)
        }
    })
}

fn test(paths: Vec<PathBuf>) -> ExitCode {
    let config = match load(&paths) {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    if config.tests.is_empty() {
        eprintln!("no tests: add a `tests:` list to the config (see README, \"Testing configs\")");
        return ExitCode::from(EX_CONFIG);
    }
    let results = match crate::config_tests::run_all(&config) {
        Ok(results) => results,
        Err(error) => return config_failure(&error),
    };
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    for result in &results {
        if result.failures.is_empty() {
            println!("test {} ... passed", result.name);
        } else {
            println!("test {} ... FAILED", result.name);
            for failure in &result.failures {
                println!("  x {}", crate::config::secrets::redact(failure));
            }
        }
    }
    println!(
        "{} tests: {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn tap(component: &str, api: std::net::SocketAddr, limit: Option<usize>) -> ExitCode {
    let mut url = reqwest::Url::parse(&format!("http://{api}/tap")).expect("a valid URL");
    url.query_pairs_mut().append_pair("component", component);
    if let Some(limit) = limit {
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
    }
    let result: Result<(), String> = runtime().block_on(async move {
        let mut response = reqwest::get(url)
            .await
            .map_err(|e| format!("cannot reach the api at {api}: {e} (is `api.enabled: true`?)"))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{status}: {}", text.trim()));
        }
        use std::io::Write;
        let mut stdout = std::io::stdout();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if stdout
                .write_all(&chunk)
                .and_then(|_| stdout.flush())
                .is_err()
            {
                break; // stdout closed (`| head`)
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice tap: {error}");
            ExitCode::from(1)
        }
    }
}

fn graph(paths: Vec<PathBuf>, format: GraphFormat) -> ExitCode {
    let config = match load(&paths) {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    let graph = match config.graph() {
        Ok(graph) => graph,
        Err(error) => return config_failure(&error),
    };
    let mut nodes = Vec::new();
    for (id, e) in &config.sources {
        nodes.push((id, e.config.kind(), "source"));
    }
    for (id, e) in &config.transforms {
        nodes.push((id, e.config.kind(), "transform"));
    }
    for (id, e) in &config.sinks {
        nodes.push((id, e.config.kind(), "sink"));
    }
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str("digraph sluice {\n  rankdir=LR;\n");
            for (id, kind, role) in &nodes {
                let shape = match *role {
                    "source" => "invhouse",
                    "sink" => "house",
                    _ => "box",
                };
                out.push_str(&format!(
                    "  \"{id}\" [shape={shape}, label=\"{id}\\n({kind})\"];\n"
                ));
            }
            for (consumer, inputs) in &graph.inputs {
                for input in inputs {
                    match &input.port {
                        Some(port) => out.push_str(&format!(
                            "  \"{}\" -> \"{consumer}\" [label=\"{port}\"];\n",
                            input.component
                        )),
                        None => {
                            out.push_str(&format!("  \"{}\" -> \"{consumer}\";\n", input.component))
                        }
                    }
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for (id, kind, role) in &nodes {
                let (open, close) = match *role {
                    "source" => ("([", "])"),
                    "sink" => ("[(", ")]"),
                    _ => ("[", "]"),
                };
                out.push_str(&format!("  {id}{open}\"{id} ({kind})\"{close}\n"));
            }
            for (consumer, inputs) in &graph.inputs {
                for input in inputs {
                    match &input.port {
                        Some(port) => {
                            out.push_str(&format!("  {} -->|{port}| {consumer}\n", input.component))
                        }
                        None => out.push_str(&format!("  {} --> {consumer}\n", input.component)),
                    }
                }
            }
        }
    }
    print!("{}", crate::config::secrets::redact(&out));
    ExitCode::SUCCESS
}
