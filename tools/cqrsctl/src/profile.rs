//! The per-profile session cache: `$XDG_CONFIG_HOME/cqrsctl/<profile>.json` (or
//! `~/.config/cqrsctl/<profile>.json`), mode 0600 in a 0700 directory. It holds the session
//! token, the current access token, its expiry and the active grant — never a password.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::errors::CliError;

/// Profile names become file names: letters, digits, `-`, `_`, `.` (not first), at most 64.
pub fn parse_profile_name(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && !raw.starts_with('.')
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("a profile name is 1-64 of A-Z a-z 0-9 - _ . and does not start with `.`".to_owned())
    }
}

/// The signed-in account, as cached for `whoami` and for asking about the caller's own grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAccount {
    pub id: String,
    pub realm: String,
    pub user_id: Option<String>,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// The grant the access token is scoped to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveGrant {
    pub organisation_id: String,
    /// Short role name, e.g. `SERVICE_DESK`.
    pub role: String,
    pub organisation_name: Option<String>,
    pub ods_code: Option<String>,
}

/// One profile's cached session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The identity service the session belongs to.
    pub identity_url: String,
    pub account: CachedAccount,
    /// Opaque credential for RefreshAccessToken.
    pub session_token: String,
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub session_expires_at: Option<DateTime<Utc>>,
    pub active_grant: Option<ActiveGrant>,
}

impl Profile {
    /// Whether the access token has less than `margin` left at `now`.
    pub fn needs_refresh(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.access_token_expires_at - margin <= now
    }
}

/// Tokens are credentials: never in debug output.
impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("identity_url", &self.identity_url)
            .field("account", &self.account)
            .field("session_token", &"<redacted>")
            .field("access_token", &"<redacted>")
            .field("access_token_expires_at", &self.access_token_expires_at)
            .field("session_expires_at", &self.session_expires_at)
            .field("active_grant", &self.active_grant)
            .finish()
    }
}

/// Where profiles live.
#[derive(Clone, Debug)]
pub struct ProfileStore {
    dir: PathBuf,
}

impl ProfileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ProfileStore { dir: dir.into() }
    }

    /// `$XDG_CONFIG_HOME/cqrsctl` when that is an absolute path, else `$HOME/.config/cqrsctl`.
    pub fn from_env() -> Result<Self, CliError> {
        Self::from_vars(
            std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
    }

    pub fn from_vars(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Result<Self, CliError> {
        let base = match (xdg.filter(|p| p.is_absolute()), home) {
            (Some(xdg), _) => xdg,
            (None, Some(home)) if home.is_absolute() => home.join(".config"),
            _ => {
                return Err(CliError::Other(
                    "cannot find a configuration directory: set XDG_CONFIG_HOME or HOME".into(),
                ));
            }
        };
        Ok(Self::new(base.join("cqrsctl")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, profile: &str) -> PathBuf {
        self.dir.join(format!("{profile}.json"))
    }

    /// The cached session, if any.
    pub fn load(&self, profile: &str) -> Result<Option<Profile>, CliError> {
        let path = self.path(profile);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CliError::Other(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            CliError::NotSignedIn(format!(
                "the cached session {} is unreadable ({e}); sign in again",
                path.display()
            ))
        })
    }

    /// Writes the profile atomically (temporary file + rename), mode 0600, directory 0700.
    pub fn save(&self, profile: &str, value: &Profile) -> Result<(), CliError> {
        let io = |what: &str, e: std::io::Error| CliError::Other(format!("cannot {what}: {e}"));
        create_private_dir(&self.dir).map_err(|e| io("create the configuration directory", e))?;
        let path = self.path(profile);
        let tmp = self.dir.join(format!(
            ".{profile}.json.{}.{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let text = serde_json::to_vec_pretty(value)
            .map_err(|e| CliError::Other(format!("cannot encode the session cache: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut file = private_file(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io(&format!("write {}", path.display()), e)
        })
    }

    /// Deletes the cached session; `false` when there was none.
    pub fn delete(&self, profile: &str) -> Result<bool, CliError> {
        let path = self.path(profile);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CliError::Other(format!(
                "cannot delete {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        Profile {
            identity_url: "http://127.0.0.1:50051".into(),
            account: CachedAccount {
                id: "acc-1".into(),
                realm: "NATIONAL".into(),
                user_id: Some("JSM482".into()),
                email: "jo@nhs.net".into(),
                first_name: "Jo".into(),
                last_name: "Smith".into(),
            },
            session_token: "session-secret".into(),
            access_token: "access-secret".into(),
            access_token_expires_at: DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            session_expires_at: None,
            active_grant: Some(ActiveGrant {
                organisation_id: "org-1".into(),
                role: "SERVICE_DESK".into(),
                organisation_name: Some("CQRS Service Desk".into()),
                ods_code: Some("X26".into()),
            }),
        }
    }

    #[test]
    fn profile_names_cannot_escape_the_directory() {
        for ok in ["default", "prod-desk", "ops_2", "a.b"] {
            assert_eq!(parse_profile_name(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(parse_profile_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn save_load_delete_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(tmp.path().join("cqrsctl"));
        assert_eq!(store.load("default").unwrap(), None);
        store.save("default", &sample()).unwrap();
        assert_eq!(store.load("default").unwrap(), Some(sample()));
        assert!(store.load("other").unwrap().is_none());
        assert!(store.delete("default").unwrap());
        assert!(!store.delete("default").unwrap());
        assert_eq!(store.load("default").unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn cache_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(tmp.path().join("cqrsctl"));
        store.save("default", &sample()).unwrap();
        // Overwriting keeps the mode too.
        store.save("default", &sample()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path("default")), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("default.json")]);
    }

    #[test]
    fn cache_never_holds_a_password() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(tmp.path());
        store.save("default", &sample()).unwrap();
        let text = fs::read_to_string(store.path("default")).unwrap();
        assert!(!text.to_lowercase().contains("password"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
            if let Some(map) = v.as_object() {
                for (k, v) in map {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
        }
        let mut all = Vec::new();
        keys(&json, &mut all);
        assert!(all.iter().all(|k| !k.contains("password")), "{all:?}");
        assert!(all.contains(&"session_token".to_owned()));
    }

    #[test]
    fn debug_output_hides_tokens() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("session-secret"));
        assert!(!text.contains("access-secret"));
    }

    #[test]
    fn config_dir_follows_xdg() {
        let s = ProfileStore::from_vars(Some("/x/cfg".into()), Some("/home/jo".into())).unwrap();
        assert_eq!(s.path("p"), PathBuf::from("/x/cfg/cqrsctl/p.json"));
        // A relative XDG_CONFIG_HOME is ignored, as the spec says.
        let s = ProfileStore::from_vars(Some("rel".into()), Some("/home/jo".into())).unwrap();
        assert_eq!(
            s.path("p"),
            PathBuf::from("/home/jo/.config/cqrsctl/p.json")
        );
        assert!(ProfileStore::from_vars(None, None).is_err());
    }

    #[test]
    fn unreadable_cache_means_not_signed_in() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(tmp.path());
        fs::write(store.path("default"), "{not json").unwrap();
        assert_eq!(store.load("default").unwrap_err().exit_code(), 3);
    }

    #[test]
    fn refresh_margin() {
        let p = sample();
        let at = p.access_token_expires_at;
        let margin = chrono::Duration::seconds(30);
        assert!(!p.needs_refresh(at - chrono::Duration::seconds(31), margin));
        assert!(p.needs_refresh(at - chrono::Duration::seconds(30), margin));
        assert!(p.needs_refresh(at + chrono::Duration::seconds(1), margin));
    }
}
