//! Passwords and tokens: where they come from, and a wrapper that never prints them.
//!
//! The config file only names a secret's source (an environment variable or a file), so the
//! file can be shared, committed or pasted into a support request without leaking anything.
//! Values are read when a connection needs them, which is why commands that never touch a
//! mail server run without any secret set.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

/// A secret value. `Debug` and `Display` are redacted so it cannot leak through logs or
/// error messages by accident; [`Secret::expose`] is the one deliberate way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
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

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret is kept, as named in the config (`password_env` / `password_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret now. The error names the variable or file and how to fix it, but
    /// never any part of the value.
    pub fn load(&self) -> anyhow::Result<Secret> {
        match self {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                Ok(_) => bail!("Environment variable {var} is empty: set it to the password"),
                Err(_) => {
                    bail!("Environment variable {var} is not set: export it (or use password_file)")
                }
            },
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("Cannot read the secret file {}", path.display()))?;
                // Files written by editors and `echo` end in a newline that is not part of
                // the password.
                let value = text.trim_end_matches(['\r', '\n']).to_string();
                if value.is_empty() {
                    bail!("Secret file {} is empty", path.display());
                }
                Ok(Secret(value))
            }
        }
    }

    /// Names the source for messages (`$GATEHOUSE_IMAP_PASSWORD`, `/etc/gatehouse/imap.pw`).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(var) => format!("${var}"),
            SecretSource::File(path) => path.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn file_secrets_lose_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(SecretSource::File(path).load().unwrap().expose(), "s3cret");
    }

    #[test]
    fn a_missing_variable_is_named_in_the_error() {
        let err = SecretSource::Env("GATEHOUSE_TEST_SURELY_UNSET".into()).load().unwrap_err();
        assert!(err.to_string().contains("GATEHOUSE_TEST_SURELY_UNSET"));
    }
}
