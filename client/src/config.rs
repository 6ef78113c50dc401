//! The client's persistent configuration: which server, which user, the current refresh token,
//! this device's name, the pinned QUIC certificate and free-form settings.
//!
//! It lives in one directory ([`config_dir`]): `$CAIRN_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/cairn`, else `~/.config/cairn`. `config.json` there is written atomically
//! (temp file, `fsync`, rename, directory `fsync`) with mode 0600 in a 0700 directory, because it
//! holds a refresh token. Every read-modify-write runs under an exclusive lock on `config.lock`
//! ([`ConfigLock`]): a refresh token rotates on every use, and a lost update would bring an old,
//! already used token back, which the server treats as theft and answers by ending the session.
//!
//! Per-folder sync state lives under `folders/` in the same directory ([`state_dir_for`]), never
//! inside the synced folder. This module does no network IO and knows nothing of HTTP.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_protocol::api::RefreshToken;
use serde::{Deserialize, Serialize};

/// The config file's name inside the config directory.
pub const CONFIG_FILE_NAME: &str = "config.json";

/// The lock file's name inside the config directory.
pub const LOCK_FILE_NAME: &str = "config.lock";

/// Longest device name, in bytes. The server refuses heartbeat client ids over 64 characters,
/// and the name also ends up in conflict-copy file names, where shorter is kinder.
pub const DEVICE_NAME_BYTES_MAX: usize = 64;

/// Largest config file read, in bytes. A real one is well under 4 KiB even with dozens of
/// settings; the cap keeps a corrupt or hostile file from being read into memory whole.
pub const CONFIG_FILE_SIZE_MAX: u64 = 1024 * 1024;

/// What went wrong with the config directory or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither `CAIRN_CONFIG_DIR`, `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("cannot find a config directory; set CAIRN_CONFIG_DIR or HOME")]
    NoConfigDir,
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `config.json` is not valid JSON of the expected shape.
    #[error("config file '{}' is not valid: {source}; fix or delete it", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// `config.json` is larger than [`CONFIG_FILE_SIZE_MAX`].
    #[error("config file '{}' is {size} bytes; the limit is {CONFIG_FILE_SIZE_MAX}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A device name that cannot be used.
    #[error(
        "invalid device name '{0}'; use 1 to {DEVICE_NAME_BYTES_MAX} letters, digits, '.', '_' or '-'"
    )]
    InvalidDevice(String),
}

/// The contents of `config.json`.
///
/// Unknown fields are ignored on read so an older client can read a newer client's file (they
/// are dropped on the next write, which is acceptable for a single-user config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Base URL of the server, e.g. `http://127.0.0.1:8000`, without a trailing `/`.
    #[serde(default)]
    pub server: Option<String>,
    /// The user last logged in.
    #[serde(default)]
    pub username: Option<String>,
    /// The current refresh token; `None` when logged out. It rotates on every refresh.
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    /// This device's name: in commits, heartbeats and conflict-copy names. Generated once.
    pub device: String,
    /// The server's QUIC endpoint and certificate fingerprint, pinned at login.
    #[serde(default)]
    pub quic: Option<QuicPin>,
    /// Free-form settings (`conflict_copies`, ...), interpreted by their users.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// A pinned QUIC endpoint: the client accepts only a certificate with this fingerprint there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuicPin {
    /// `host:port` of the server's QUIC endpoint.
    pub addr: String,
    /// `blake3:<hex>` of the server certificate's DER bytes.
    pub fingerprint: String,
}

/// Where to look for the config directory, as read from the environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigDirSources {
    /// `$CAIRN_CONFIG_DIR`.
    pub cairn_config_dir: Option<OsString>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
}

/// An exclusive lock on a config directory, held until dropped.
///
/// It is an advisory `flock` on `config.lock`, so it serializes other `cairn` processes and
/// other `ConfigLock`s of this process alike. Do not take a second one in the same thread while
/// holding one: that waits forever.
#[derive(Debug)]
pub struct ConfigLock {
    dir: PathBuf,
    // Held for its lock; closing the file releases it.
    _file: File,
}

impl Config {
    /// A config for a new installation: nothing but a freshly generated device name.
    pub fn new_device() -> Config {
        Config {
            server: None,
            username: None,
            refresh_token: None,
            device: generate_device_name(),
            quic: None,
            settings: BTreeMap::new(),
        }
    }

    /// Reads `dir/config.json`. On first use (no file yet) it creates the directory and a file
    /// with a new device name, so the name stays the same from then on.
    ///
    /// # Errors
    /// When the directory or file cannot be read or created, or the file is invalid.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let lock = ConfigLock::acquire(dir)?;
        lock.load()
    }

    /// Writes `dir/config.json` atomically, replacing it.
    ///
    /// A `load` … `save` pair can lose a concurrent change (such as a rotated refresh token);
    /// read-modify-write goes through [`Config::update`] instead.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        let lock = ConfigLock::acquire(dir)?;
        lock.save(self)
    }

    /// Loads, lets `change` edit, and saves, all under the directory's lock. Returns what
    /// `change` returns. The file is written even when `change` leaves it as it was.
    ///
    /// # Errors
    /// As [`Config::load`] and [`Config::save`].
    pub fn update<T>(dir: &Path, change: impl FnOnce(&mut Config) -> T) -> Result<T, ConfigError> {
        let lock = ConfigLock::acquire(dir)?;
        let mut config = lock.load()?;
        let value = change(&mut config);
        lock.save(&config)?;
        Ok(value)
    }

    /// True when a refresh token is kept, i.e. someone is logged in.
    pub fn is_logged_in(&self) -> bool {
        self.server.is_some() && self.refresh_token.is_some()
    }
}

impl ConfigLock {
    /// Creates `dir` (mode 0700) if needed and waits for its exclusive lock.
    ///
    /// This blocks the calling thread; async code runs it in `spawn_blocking`.
    ///
    /// # Errors
    /// When the directory or lock file cannot be created or locked.
    pub fn acquire(dir: &Path) -> Result<ConfigLock, ConfigError> {
        create_private_dir(dir)?;
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| io_error(&path, source))?;
        file.lock().map_err(|source| io_error(&path, source))?;
        Ok(ConfigLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `config.json`, creating it with a new device name when it does not exist.
    ///
    /// # Errors
    /// When the file cannot be read or written, or is invalid.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let path = self.dir.join(CONFIG_FILE_NAME);
        match read_capped(&path) {
            Ok(bytes) => {
                let config: Config = serde_json::from_slice(&bytes)
                    .map_err(|source| ConfigError::Parse { path, source })?;
                check_device_name(&config.device)?;
                Ok(config)
            }
            Err(ConfigError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let config = Config::new_device();
                self.save(&config)?;
                Ok(config)
            }
            Err(err) => Err(err),
        }
    }

    /// Writes `config.json` atomically: a 0600 temp file, `fsync`, rename, directory `fsync`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, config: &Config) -> Result<(), ConfigError> {
        let path = self.dir.join(CONFIG_FILE_NAME);
        let mut bytes = serde_json::to_vec_pretty(config).map_err(|source| ConfigError::Parse {
            path: path.clone(),
            source,
        })?;
        bytes.push(b'\n');
        // One writer at a time holds the lock, so a fixed temp name cannot collide; a stale one
        // from a crash is replaced.
        let temp = self.dir.join(format!("{CONFIG_FILE_NAME}.tmp"));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|source| io_error(&temp, source))?;
        // `mode` applies only when the file is created; a stale temp file keeps its old mode.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|source| io_error(&temp, source))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| io_error(&temp, source))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(|source| io_error(&path, source))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| io_error(&self.dir, source))
    }
}

/// The config directory this process uses: [`resolve_config_dir`] over the environment.
///
/// This reads `std::env`, which the house style keeps to `main`s. It is here instead so the CLI
/// and the desktop app cannot disagree about where a user's config is; the decision itself is
/// the pure [`resolve_config_dir`].
///
/// # Errors
/// [`ConfigError::NoConfigDir`] when none of the variables is set.
pub fn config_dir() -> Result<PathBuf, ConfigError> {
    resolve_config_dir(&ConfigDirSources {
        cairn_config_dir: std::env::var_os("CAIRN_CONFIG_DIR"),
        xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
        home: std::env::var_os("HOME"),
    })
}

/// `$CAIRN_CONFIG_DIR`, else `$XDG_CONFIG_HOME/cairn`, else `$HOME/.config/cairn`. Empty or
/// relative values are ignored, as the XDG base directory specification asks.
///
/// # Errors
/// [`ConfigError::NoConfigDir`] when no usable source is set.
pub fn resolve_config_dir(sources: &ConfigDirSources) -> Result<PathBuf, ConfigError> {
    let usable = |value: &Option<OsString>| {
        value
            .as_ref()
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(dir) = usable(&sources.cairn_config_dir) {
        return Ok(dir);
    }
    if let Some(xdg) = usable(&sources.xdg_config_home) {
        return Ok(xdg.join("cairn"));
    }
    if let Some(home) = usable(&sources.home) {
        return Ok(home.join(".config").join("cairn"));
    }
    Err(ConfigError::NoConfigDir)
}

/// Where the sync state of the folder `folder` lives: [`state_dir_in`] of [`config_dir`].
///
/// # Errors
/// When there is no config directory or `folder` cannot be resolved (e.g. it does not exist).
pub fn state_dir_for(folder: &Path) -> Result<PathBuf, ConfigError> {
    state_dir_in(&config_dir()?, folder)
}

/// `<config_dir>/folders/<first 16 hex digits of BLAKE3 of the canonical absolute path>`.
///
/// The path is canonicalized (symlinks resolved), so two spellings of one folder share one
/// state directory. The directory is not created here.
///
/// # Errors
/// When `folder` cannot be canonicalized (e.g. it does not exist).
pub fn state_dir_in(config_dir: &Path, folder: &Path) -> Result<PathBuf, ConfigError> {
    let canonical = folder
        .canonicalize()
        .map_err(|source| io_error(folder, source))?;
    Ok(config_dir.join("folders").join(state_dir_name(&canonical)))
}

/// The state directory's name for a canonical absolute folder path.
pub fn state_dir_name(canonical: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let hash = blake3::hash(canonical.as_os_str().as_bytes());
    let mut name = hash.to_hex().to_string();
    name.truncate(16);
    name
}

/// Checks a device name: 1 to [`DEVICE_NAME_BYTES_MAX`] ASCII letters, digits, `.`, `_`, `-`.
/// Names go into file names (conflict copies) and URLs (`/ws/sync/{client_id}`), hence the
/// narrow alphabet.
///
/// # Errors
/// [`ConfigError::InvalidDevice`] for any other name.
pub fn check_device_name(name: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let ok = !name.is_empty()
        && name.len() <= DEVICE_NAME_BYTES_MAX
        && name.chars().all(allowed)
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidDevice(name.to_owned()))
    }
}

/// The device name for a host: the hostname cleaned to the device alphabet, or
/// `device-<random hex>` when there is no usable hostname.
pub fn device_name_from(hostname: Option<&str>, random: u64) -> String {
    let cleaned: String = hostname
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(DEVICE_NAME_BYTES_MAX)
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() || cleaned == "localhost" || cleaned == "(none)" {
        format!("device-{:012x}", random & 0xffff_ffff_ffff)
    } else {
        cleaned.to_owned()
    }
}

fn generate_device_name() -> String {
    device_name_from(read_hostname().as_deref(), random_u64())
}

/// The kernel's hostname, or `/etc/hostname`, without a new dependency for `gethostname(2)`.
fn read_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// A random number for a device name, without a `rand` dependency: `RandomState` is seeded from
/// the OS's random source once per process, mixed here with the time and the process id. A
/// device name needs to be distinct, not secret.
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::collections::hash_map::RandomState::new().hash_one((now, std::process::id()))
}

fn create_private_dir(dir: &Path) -> Result<(), ConfigError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| io_error(dir, source))
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let mut bytes = Vec::new();
    file.take(CONFIG_FILE_SIZE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| io_error(path, source))?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > CONFIG_FILE_SIZE_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok(bytes)
}

fn io_error(path: &Path, source: io::Error) -> ConfigError {
    ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(cairn: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> ConfigDirSources {
        ConfigDirSources {
            cairn_config_dir: cairn.map(OsString::from),
            xdg_config_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
        }
    }

    fn check_dir(sources: &ConfigDirSources, expect: Option<&str>) {
        let got = resolve_config_dir(sources).ok();
        assert_eq!(got.as_deref(), expect.map(Path::new), "{sources:?}");
    }

    #[test]
    fn config_dir_precedence() {
        check_dir(&sources(Some("/c"), Some("/x"), Some("/h")), Some("/c"));
        check_dir(&sources(None, Some("/x"), Some("/h")), Some("/x/cairn"));
        check_dir(&sources(None, None, Some("/h")), Some("/h/.config/cairn"));
        // Relative or empty values are ignored.
        check_dir(
            &sources(Some(""), Some("rel"), Some("/h")),
            Some("/h/.config/cairn"),
        );
        check_dir(&sources(None, None, None), None);
    }

    #[test]
    fn first_load_creates_a_private_file_and_keeps_the_device() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("cfg");
        let first = Config::load(&dir).expect("load");
        check_device_name(&first.device).expect("generated name is valid");
        assert!(!first.is_logged_in());
        let second = Config::load(&dir).expect("load again");
        assert_eq!(first.device, second.device);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CONFIG_FILE_NAME)), 0o600);
    }

    #[test]
    fn update_round_trips_and_unknown_fields_are_tolerated() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path();
        std::fs::write(
            dir.join(CONFIG_FILE_NAME),
            r#"{"device":"laptop","server":"http://s","future_field":[1,2]}"#,
        )
        .expect("write");
        Config::update(dir, |config| {
            config.refresh_token = Some(RefreshToken("s3cr3t-value".into()));
            config
                .settings
                .insert("conflict_copies".into(), "true".into());
        })
        .expect("update");
        let config = Config::load(dir).expect("load");
        assert_eq!(config.device, "laptop");
        assert_eq!(config.server.as_deref(), Some("http://s"));
        assert_eq!(
            config.refresh_token,
            Some(RefreshToken("s3cr3t-value".into()))
        );
        assert_eq!(
            config.settings.get("conflict_copies").map(String::as_str),
            Some("true")
        );
        assert!(config.is_logged_in());
        assert!(
            !format!("{config:?}").contains("s3cr3t"),
            "the token is redacted"
        );
    }

    #[test]
    fn invalid_files_are_errors_that_name_the_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path();
        std::fs::write(dir.join(CONFIG_FILE_NAME), "{not json").expect("write");
        let err = Config::load(dir).expect_err("invalid");
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("config.json"), "{err}");
        std::fs::write(dir.join(CONFIG_FILE_NAME), r#"{"device":"a/b"}"#).expect("write");
        let err = Config::load(dir).expect_err("bad device");
        assert!(matches!(err, ConfigError::InvalidDevice(_)), "{err}");
    }

    #[test]
    fn device_names() {
        assert_eq!(device_name_from(Some("laptop\n"), 1), "laptop");
        assert_eq!(device_name_from(Some("my host!"), 1), "myhost");
        assert_eq!(device_name_from(None, 0xab), "device-0000000000ab");
        assert_eq!(
            device_name_from(Some("localhost"), 0xab),
            "device-0000000000ab"
        );
        let long = "x".repeat(100);
        assert_eq!(
            device_name_from(Some(&long), 0).len(),
            DEVICE_NAME_BYTES_MAX
        );
        for bad in ["", "a/b", "a b", ".hidden", &"x".repeat(65)] {
            assert!(check_device_name(bad).is_err(), "{bad:?}");
        }
        for good in ["laptop", "device-00ab", "host.example.org", "a_b"] {
            assert!(check_device_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn state_dirs_follow_the_canonical_path() {
        let root = tempfile::tempdir().expect("tempdir");
        let folder = root.path().join("folder");
        std::fs::create_dir(&folder).expect("mkdir");
        let config_dir = Path::new("/cfg");
        let direct = state_dir_in(config_dir, &folder).expect("state dir");
        let dotted =
            state_dir_in(config_dir, &folder.join("..").join("folder")).expect("state dir");
        assert_eq!(direct, dotted);
        let name = direct.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(name.len(), 16);
        assert!(direct.starts_with("/cfg/folders"));
        let canonical = folder.canonicalize().expect("canonical");
        assert_eq!(
            name,
            &blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex()[..16]
        );
        assert!(state_dir_in(config_dir, &root.path().join("missing")).is_err());
    }
}
