//! Loading a config: read files (or every `*.yaml` of a directory), interpolate the environment,
//! parse the global options and each component, merge files, then validate the graph.
//!
//! Components are parsed one by one: the `type` field picks the config struct (see the
//! registries in `sources/mod.rs`, `transforms/mod.rs`, `sinks/mod.rs`) and
//! `serde_path_to_error` names the failing field, which [`locate`] turns into a line.

pub mod error;
pub mod graph;
pub mod interpolate;
pub mod locate;
pub mod secrets;

pub use error::{ConfigError, Diagnostic};
pub use graph::{Graph, OutputId};

use crate::observe::logging::LogFormat;
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::transforms::TransformConfig;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The built-in default config: demo generator -> remap -> console. Used by `sluice run` when
/// no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/sluice.yaml");

/// The api server: `/health` and `/metrics`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the api. Off unless set.
    #[serde(default)]
    pub enabled: bool,
    /// Address to listen on. Loopback by default so metrics are not exposed by accident.
    #[serde(default = "default_api_address")]
    pub address: SocketAddr,
    /// Serve the api over TLS (`crt_file`, `key_file`; with `ca_file`, mutual TLS: only
    /// clients with a certificate it signed may read metrics).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
}

fn default_api_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8686))
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: false,
            address: default_api_address(),
            tls: None,
        }
    }
}

/// Logging options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Minimum level: `error`, `warn`, `info`, `debug`, `trace`, or a `tracing` filter
    /// (`sluice=debug`). The `SLUICE_LOG` environment variable overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

/// Options that apply to the whole agent.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalOptions {
    /// Where sources keep checkpoints (and sinks their disk buffers).
    pub data_dir: PathBuf,
    pub api: ApiConfig,
    pub log: LogConfig,
    /// Whether sources wait for sinks to deliver before advancing checkpoints or answering.
    pub acknowledgements: bool,
    /// How long a shutdown may take to drain in-flight events before it is forced.
    pub shutdown_timeout_secs: u64,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            data_dir: PathBuf::from("sluice-data"),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            acknowledgements: true,
            shutdown_timeout_secs: 30,
        }
    }
}

/// The top level of one config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Directory for checkpoints and buffers (default `./sluice-data`).
    data_dir: Option<PathBuf>,
    api: Option<ApiConfig>,
    log: Option<LogConfig>,
    /// End-to-end acknowledgements (default true).
    acknowledgements: Option<bool>,
    /// Drain deadline on SIGTERM/SIGINT, seconds (default 30).
    shutdown_timeout_secs: Option<u64>,
    #[serde(default)]
    sources: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    transforms: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    sinks: IndexMap<String, serde_yaml::Value>,
    /// Unit tests of the transforms, run by `sluice test` (ignored by `run`).
    #[serde(default)]
    tests: Vec<serde_yaml::Value>,
}

/// A component's config and where it was written.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub config: T,
    pub file: String,
    pub line: Option<usize>,
    /// The interpolated text of the file, kept to locate fields in later errors.
    text: std::sync::Arc<str>,
    /// The component's settings as written (after interpolation), without `inputs`: a reload
    /// rebuilds the component only if these differ.
    settings: serde_yaml::Value,
}

impl<T> Entry<T> {
    /// Same settings (type and every field but `inputs`) as `other`: a reload keeps the
    /// running component and only rewires it.
    pub fn same_settings<U>(&self, other: &Entry<U>) -> bool {
        self.settings == other.settings
    }
}

impl<T> Entry<T> {
    /// A diagnostic about this component (or one of its fields).
    pub fn diagnostic(
        &self,
        section: &str,
        id: &str,
        field: &[&str],
        message: String,
    ) -> Diagnostic {
        let line = self
            .line
            .and_then(|line| locate::field_line(&self.text, line, field));
        let mut path = format!("{section}.{id}");
        for part in field {
            path.push('.');
            path.push_str(part);
        }
        Diagnostic {
            location: line.map(|l| (self.file.clone(), l)),
            path,
            message,
        }
    }
}

/// A whole, merged, not yet validated config.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub global: GlobalOptions,
    pub sources: IndexMap<String, Entry<SourceConfig>>,
    pub transforms: IndexMap<String, Entry<TransformConfig>>,
    pub sinks: IndexMap<String, Entry<SinkConfig>>,
    /// `tests:` entries, for `sluice test`.
    pub tests: Vec<ConfigTest>,
    /// Components whose settings did not parse (their errors are already reported): inputs
    /// naming them are not reported again as dangling.
    pub unparsed: indexmap::IndexSet<String>,
}

/// One `tests:` entry as written, and where.
#[derive(Debug, Clone)]
pub struct ConfigTest {
    pub file: String,
    /// 1-based line of the entry's `- ` item, where found.
    pub line: Option<usize>,
    pub value: serde_yaml::Value,
}

/// A field-level failure while parsing one component.
#[derive(Debug)]
pub struct FieldError {
    pub path: Vec<String>,
    pub message: String,
}

/// Deserializes a component's fields, naming the failing field on error.
pub fn parse_fields<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let mut path: Vec<String> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = error.inner().to_string();
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            if path.last().map(String::as_str) != Some(field) {
                path.push(field.to_string());
            }
        }
        FieldError { path, message }
    })
}

/// Parses the components of one section with the section's `type` registry.
fn parse_section<T>(
    section: &'static str,
    raw: IndexMap<String, serde_yaml::Value>,
    file: &str,
    text: &std::sync::Arc<str>,
    parse: impl Fn(&str, serde_yaml::Value) -> Result<T, FieldError>,
    diagnostics: &mut Vec<Diagnostic>,
    unparsed: &mut indexmap::IndexSet<String>,
) -> IndexMap<String, Entry<T>> {
    let mut out = IndexMap::new();
    for (id, value) in raw {
        let errors_before = diagnostics.len();
        let line = locate::component_line(text, section, &id);
        let at = |field: &[String]| {
            let field: Vec<&str> = field.iter().map(String::as_str).collect();
            let line = line.and_then(|l| locate::field_line(text, l, &field));
            let mut path = format!("{section}.{id}");
            for part in &field {
                path.push('.');
                path.push_str(part);
            }
            (line.map(|l| (file.to_string(), l)), path)
        };
        if id.is_empty() || id.contains(['.', ' ', '*', '?', '[']) {
            let (location, path) = at(&[]);
            diagnostics.push(Diagnostic {
                location,
                path,
                message: "component ids may not be empty or contain '.', spaces or glob characters"
                    .into(),
            });
            unparsed.insert(id);
            continue;
        }
        let mut value = value;
        let mut settings = value.clone();
        if let Some(mapping) = settings.as_mapping_mut() {
            mapping.remove("inputs");
        }
        let kind = match value.as_mapping_mut().map(|m| m.remove("type")) {
            Some(Some(serde_yaml::Value::String(kind))) => kind,
            Some(_) => {
                let (location, path) = at(&[]);
                diagnostics.push(Diagnostic {
                    location,
                    path: path + ".type",
                    message: "missing field `type` (a string naming the component type)".into(),
                });
                unparsed.insert(id);
                continue;
            }
            None => {
                let (location, path) = at(&[]);
                diagnostics.push(Diagnostic {
                    location,
                    path,
                    message: "expected a mapping with a `type` field".into(),
                });
                unparsed.insert(id);
                continue;
            }
        };
        // A component with no other fields is written `id: {type: x}`; give serde a mapping.
        if value.as_mapping().is_some_and(|m| m.is_empty()) {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        match parse(&kind, value) {
            Ok(config) => {
                out.insert(
                    id.clone(),
                    Entry {
                        config,
                        file: file.to_string(),
                        line,
                        text: text.clone(),
                        settings,
                    },
                );
            }
            Err(error) => {
                let (location, path) = at(&error.path);
                diagnostics.push(Diagnostic {
                    location,
                    path,
                    message: error.message,
                });
            }
        }
        if diagnostics.len() > errors_before {
            unparsed.insert(id);
        }
    }
    out
}

/// The top-level keys of a config file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "api",
    "log",
    "acknowledgements",
    "shutdown_timeout_secs",
    "sources",
    "transforms",
    "sinks",
    "tests",
];

/// Parses one file's top level. A misspelt or malformed top-level key is reported and left
/// out, and the rest of the file is still read, so its components are checked in the same
/// pass. `None` for an empty file or one that is not YAML at all.
fn parse_file(name: &str, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<RawFile> {
    let at = |key: &str, message: String| Diagnostic {
        location: locate::top_level_line(text, key).map(|line| (name.to_string(), line)),
        path: key.to_string(),
        message,
    };
    let value = match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Null) => return None,
        Ok(value) => value,
        Err(error) => {
            let location = error.location().map(|l| (name.to_string(), l.line()));
            let mut message = error.to_string();
            if let Some(pos) = message.find(" at line ") {
                message.truncate(pos);
            }
            diagnostics.push(Diagnostic {
                location,
                path: String::new(),
                message,
            });
            return None;
        }
    };
    let serde_yaml::Value::Mapping(mut mapping) = value else {
        diagnostics.push(Diagnostic {
            location: Some((name.to_string(), 1)),
            path: String::new(),
            message: "expected a mapping of top-level keys (sources, transforms, sinks, ...)"
                .into(),
        });
        return None;
    };
    let keys: Vec<serde_yaml::Value> = mapping.keys().cloned().collect();
    for key in keys {
        let name = key
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{key:?}"));
        if !TOP_LEVEL_KEYS.contains(&name.as_str()) {
            diagnostics.push(at(
                &name,
                format!(
                    "unknown top-level field `{name}`{}; known: {}",
                    error::did_you_mean(&name, TOP_LEVEL_KEYS.iter().copied()),
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ));
            mapping.remove(&key);
        }
    }
    // Each failing key is reported and dropped; the rest parse on.
    for _ in 0..=TOP_LEVEL_KEYS.len() {
        match parse_fields::<RawFile>(serde_yaml::Value::Mapping(mapping.clone())) {
            Ok(raw) => return Some(raw),
            Err(error) => {
                let key = error.path.first().cloned().unwrap_or_default();
                let mut path = error.path.join(".");
                if path.is_empty() {
                    path = key.clone();
                }
                diagnostics.push(Diagnostic {
                    path,
                    ..at(&key, error.message)
                });
                // A failure that names no key cannot be left out: give up on the file.
                mapping.remove(key.as_str())?;
            }
        }
    }
    None
}

/// The result of parsing a `type` that no registry knows.
pub fn unknown_type(kind: &str, known: &[&str]) -> FieldError {
    FieldError {
        path: vec!["type".into()],
        message: format!(
            "unknown component type `{kind}`{}; known types: {}",
            error::did_you_mean(kind, known.iter().copied()),
            known.join(", ")
        ),
    }
}

impl Config {
    /// Loads and merges config files; a directory contributes its `*.yaml` and `*.yml` files
    /// in name order.
    pub fn load_paths(paths: &[PathBuf]) -> Result<Config, ConfigError> {
        Self::load_texts(&Self::read_paths(paths)?)
    }

    /// The text of every file named, a directory standing for its `*.yaml` files.
    fn read_paths(paths: &[PathBuf]) -> Result<Vec<(String, String)>, ConfigError> {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| ConfigError::single("", format!("{}: {e}", path.display())))?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| {
                        matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                    })
                    .collect();
                entries.sort();
                if entries.is_empty() {
                    return Err(ConfigError::single(
                        "",
                        format!("{}: directory has no *.yaml files", path.display()),
                    ));
                }
                files.extend(entries);
            } else {
                files.push(path.clone());
            }
        }
        let mut texts = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConfigError::single("", format!("cannot read {}: {e}", file.display()))
            })?;
            texts.push((file.display().to_string(), text));
        }
        Ok(texts)
    }

    /// Loads one config from text (the built-in default, tests).
    pub fn load_str(name: &str, text: &str) -> Result<Config, ConfigError> {
        Self::load_texts(&[(name.to_string(), text.to_string())])
    }

    fn load_texts(files: &[(String, String)]) -> Result<Config, ConfigError> {
        let (config, diagnostics) = Self::parse_texts(files);
        if diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { diagnostics })
        }
    }

    /// Like [`Config::load_paths`], but keeps going past errors: the config of everything
    /// that parsed, and the errors of the rest (see `topology::check_all`, which then checks
    /// the wiring and builds what parsed, so one run reports every error). `Err` only when a
    /// file cannot be read.
    pub fn parse_paths(paths: &[PathBuf]) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
        let texts = Self::read_paths(paths)?;
        Ok(Self::parse_texts(&texts))
    }

    /// [`Config::parse_paths`] on text.
    pub fn parse_str(name: &str, text: &str) -> (Config, Vec<Diagnostic>) {
        Self::parse_texts(&[(name.to_string(), text.to_string())])
    }

    fn parse_texts(files: &[(String, String)]) -> (Config, Vec<Diagnostic>) {
        let mut config = Config::default();
        let mut diagnostics = Vec::new();
        let mut globals_from: IndexMap<&'static str, String> = IndexMap::new();
        for (name, raw_text) in files {
            let file_errors = std::cell::RefCell::new(Vec::new());
            let lookup = |var: &str| {
                if let Some(path) = var.strip_prefix("file:") {
                    return match secrets::read_file(path) {
                        Ok(value) => {
                            secrets::register(&value);
                            Some(value)
                        }
                        Err(error) => {
                            file_errors.borrow_mut().push((var.to_string(), error));
                            None
                        }
                    };
                }
                let value = std::env::var(var).ok()?;
                if secrets::is_secret_name(var) {
                    secrets::register(&value);
                }
                Some(value)
            };
            let text = match interpolate::interpolate(raw_text, lookup) {
                Ok(text) => text,
                Err(missing) => {
                    let file_errors = file_errors.borrow();
                    for (line, var) in missing {
                        let message = match file_errors.iter().find(|(name, _)| *name == var) {
                            Some((_, error)) => error.clone(),
                            None => format!(
                                "environment variable `{var}` is not set and has no default \
                                 (write ${{{var}:-default}}, or $$ for a literal $)"
                            ),
                        };
                        diagnostics.push(Diagnostic {
                            location: Some((name.clone(), line)),
                            path: String::new(),
                            message,
                        });
                    }
                    continue;
                }
            };
            let Some(raw) = parse_file(name, &text, &mut diagnostics) else {
                continue;
            };
            let text: std::sync::Arc<str> = text.into();
            let mut merge_global = Globals {
                file: name,
                seen: &mut globals_from,
                diagnostics: &mut diagnostics,
            };
            merge_global.take("data_dir", raw.data_dir, &mut config.global.data_dir);
            merge_global.take("api", raw.api, &mut config.global.api);
            merge_global.take("log", raw.log, &mut config.global.log);
            merge_global.take(
                "acknowledgements",
                raw.acknowledgements,
                &mut config.global.acknowledgements,
            );
            merge_global.take(
                "shutdown_timeout_secs",
                raw.shutdown_timeout_secs,
                &mut config.global.shutdown_timeout_secs,
            );
            let sources = parse_section(
                "sources",
                raw.sources,
                name,
                &text,
                SourceConfig::parse,
                &mut diagnostics,
                &mut config.unparsed,
            );
            let transforms = parse_section(
                "transforms",
                raw.transforms,
                name,
                &text,
                TransformConfig::parse,
                &mut diagnostics,
                &mut config.unparsed,
            );
            let sinks = parse_section(
                "sinks",
                raw.sinks,
                name,
                &text,
                SinkConfig::parse,
                &mut diagnostics,
                &mut config.unparsed,
            );
            merge(&mut config.sources, sources, "sources", &mut diagnostics);
            merge(
                &mut config.transforms,
                transforms,
                "transforms",
                &mut diagnostics,
            );
            merge(&mut config.sinks, sinks, "sinks", &mut diagnostics);
            let lines = locate::list_item_lines(&text, "tests");
            config.tests.extend(
                raw.tests
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| ConfigTest {
                        file: name.clone(),
                        line: lines.get(i).copied(),
                        value,
                    }),
            );
        }
        (config, diagnostics)
    }

    /// Every component id: sources, then transforms, then sinks.
    pub fn component_ids(&self) -> indexmap::IndexSet<String> {
        self.sources
            .keys()
            .chain(self.transforms.keys())
            .chain(self.sinks.keys())
            .cloned()
            .collect()
    }

    /// Validates ids and wiring; returns the resolved graph.
    pub fn graph(&self) -> Result<Graph, ConfigError> {
        graph::build(self)
    }

    /// The directory a component may keep state in (created on demand by the component).
    pub fn component_data_dir(&self, id: &str) -> PathBuf {
        self.global.data_dir.join(id)
    }
}

/// Merges global options from several files: each may be set in one file only.
struct Globals<'a> {
    file: &'a str,
    seen: &'a mut IndexMap<&'static str, String>,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Globals<'_> {
    fn take<T>(&mut self, key: &'static str, value: Option<T>, slot: &mut T) {
        let Some(value) = value else { return };
        if let Some(previous) = self.seen.insert(key, self.file.to_string()) {
            self.diagnostics.push(Diagnostic {
                location: None,
                path: key.to_string(),
                message: format!(
                    "set in both {previous} and {}; set it in one file",
                    self.file
                ),
            });
            return;
        }
        *slot = value;
    }
}

fn merge<T>(
    into: &mut IndexMap<String, Entry<T>>,
    from: IndexMap<String, Entry<T>>,
    section: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for (id, entry) in from {
        if let Some(existing) = into.get(&id) {
            diagnostics.push(Diagnostic {
                location: entry.line.map(|l| (entry.file.clone(), l)),
                path: format!("{section}.{id}"),
                message: format!("defined twice (also in {})", existing.file),
            });
            continue;
        }
        into.insert(id, entry);
    }
}
