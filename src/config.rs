//! The configuration file (`config/redlight.toml`).
//!
//! Relative paths in it are resolved against the folder of the file itself, so the daemon
//! can be started from any working directory.

use crate::calendar::Calendar;
use crate::engine::{DEFAULT_RETENTION_DAYS, Engine};
use crate::rules::{Problem, RuleSet};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    /// The folder of the configuration file, for resolving relative paths.
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[engine]`: time zone, calendar data, rule packs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// IANA zone in which days begin and end.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Folder of the working-calendar files.
    #[serde(default = "default_calendars")]
    pub calendars: PathBuf,
    /// Rule-pack files, loaded in order.
    pub rule_packs: Vec<PathBuf>,
    /// Days an inactive case is remembered for duplicate and late events.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_timezone() -> String {
    "Asia/Shanghai".to_string()
}
fn default_calendars() -> PathBuf {
    PathBuf::from("calendars")
}
const fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{file}: `engine.timezone` is {value:?}, not an IANA time zone name")]
    TimeZone { file: PathBuf, value: String },
    #[error("{0}")]
    Calendar(#[from] crate::calendar::CalendarError),
    #[error("{} problem(s) in the rule packs:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<Problem>),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            file: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if config.engine.rule_packs.is_empty() {
            return Err(ConfigError::Invalid {
                file: path.to_path_buf(),
                message: "`engine.rule_packs` lists no pack".into(),
            });
        }
        config.timezone().map_err(|_| ConfigError::TimeZone {
            file: path.to_path_buf(),
            value: config.engine.timezone.clone(),
        })?;
        Ok(config)
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz, chrono_tz::ParseError> {
        self.engine.timezone.parse()
    }

    pub fn calendar_dir(&self) -> PathBuf {
        self.resolve(&self.engine.calendars)
    }

    pub fn rule_pack_paths(&self) -> Vec<PathBuf> {
        self.engine
            .rule_packs
            .iter()
            .map(|p| self.resolve(p))
            .collect()
    }

    pub fn load_calendar(&self) -> Result<Calendar, ConfigError> {
        let tz = self.timezone().map_err(|_| ConfigError::TimeZone {
            file: self.base.clone(),
            value: self.engine.timezone.clone(),
        })?;
        Ok(Calendar::load_dir(&self.calendar_dir(), tz)?)
    }

    pub fn load_rules(&self) -> Result<RuleSet, ConfigError> {
        RuleSet::load(&self.rule_pack_paths()).map_err(ConfigError::Rules)
    }

    /// Everything the engine needs, loaded and checked.
    pub fn build_engine(&self) -> Result<Engine, ConfigError> {
        let cal = self.load_calendar()?;
        let rules = self.load_rules()?;
        let mut engine = Engine::new(Arc::new(rules), Arc::new(cal));
        engine.set_retention_days(self.engine.retention_days);
        Ok(engine)
    }
}
