//! The remote store's view of this machine: the saved secrets of the local
//! store (`common::store`, `~/.rh/secrets`), behind one small interface so
//! the push/pull logic does not depend on how they are kept (gathering saved
//! and detected secrets is `crate::local_secrets`). Errors name secrets and
//! paths, never values.

use std::path::Path;

use common::store::{self, StoreError};
use common::Secret;

/// The saved secret `name`, if any.
pub fn load(home: &Path, name: &str) -> Result<Option<Secret>, StoreError> {
    match store::load(home, name) {
        Ok(secret) => Ok(Some(secret)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Save a secret (0600).
pub fn save(home: &Path, secret: &Secret) -> Result<(), StoreError> {
    store::save(home, secret)
}

/// Whether `name` is saved.
pub fn exists(home: &Path, name: &str) -> bool {
    store::exists(home, name)
}

/// The saved secrets, in the store's order.
pub fn list(home: &Path) -> Result<Vec<Secret>, StoreError> {
    store::list(home)
}

/// Delete the saved secret `name` (its files are left alone); absent is fine.
pub fn delete(home: &Path, name: &str) -> Result<(), StoreError> {
    match store::delete(home, name) {
        Err(StoreError::NotFound { .. }) => Ok(()),
        other => other,
    }
}
