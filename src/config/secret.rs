//! Secrets come only from the environment or from files (Kubernetes secret
//! mounts); a literal secret in a config file is refused. The value never
//! appears in `Debug` output, logs or errors.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret is read from: `{ env = "NAME" }` or `{ file = "/path" }`.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for SecretRef {
    /// Hand-written so that a secret pasted inline is refused WITHOUT
    /// echoing it (serde's own message would quote the value).
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(de)?;
        let serde_json::Value::Object(map) = v else {
            return Err(D::Error::custom(
                "secrets cannot be written in the config file; use { env = \"NAME\" } or { file = \"/path\" }",
            ));
        };
        let mut r = SecretRef {
            env: None,
            file: None,
        };
        for (k, v) in map {
            match (k.as_str(), v) {
                ("env", serde_json::Value::String(s)) => r.env = Some(s),
                ("file", serde_json::Value::String(s)) => r.file = Some(PathBuf::from(s)),
                ("env" | "file", _) => {
                    return Err(D::Error::custom(format!("`{k}` must be a string")))
                }
                (other, _) => {
                    return Err(D::Error::custom(format!(
                        "unknown field `{other}`, expected `env` or `file`"
                    )))
                }
            }
        }
        Ok(r)
    }
}

/// A resolved secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// For values that never came from a config file (the demo's built-in
    /// simulator credentials, tests).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl SecretRef {
    /// Reads the secret. Errors say where it should have come from and
    /// never include the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match (&self.env, &self.file) {
            (Some(name), None) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => {
                    Ok(Secret(v.trim_end_matches(['\r', '\n']).to_string()))
                }
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("environment variable {name} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {name} is not valid UTF-8"))
                }
            },
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                warn_if_world_readable(path);
                let value = text.trim_end_matches(['\r', '\n']).to_string();
                if value.trim().is_empty() {
                    return Err(format!("secret file {} is empty", path.display()));
                }
                Ok(Secret(value))
            }
            (Some(_), Some(_)) => Err("give either `env` or `file`, not both".into()),
            (None, None) => Err("expected { env = \"NAME\" } or { file = \"/path\" }".into()),
        }
    }
}

#[cfg(unix)]
fn warn_if_world_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                path = %path.display(),
                "secret file is world-readable; restrict it (chmod 600 or defaultMode 0400)"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_path: &std::path::Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn file_secret_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").expect("write");
        let r = SecretRef {
            env: None,
            file: Some(p),
        };
        assert_eq!(r.resolve().expect("resolve").expose(), "abc");
    }

    #[test]
    fn missing_env_names_variable() {
        let r = SecretRef {
            env: Some("TRAILKEEP_TEST_SURELY_UNSET_VAR".into()),
            file: None,
        };
        let e = r.resolve().unwrap_err();
        assert!(
            e.contains("TRAILKEEP_TEST_SURELY_UNSET_VAR is not set"),
            "{e}"
        );
    }
}
