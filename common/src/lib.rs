//! Shared by the controller and the agent: the secret model and the redacting
//! value type, the provider registry and file formats, the local secret
//! store, safe file writing, the wire types of the agent's HTTP API, and the
//! one client of the remote store (`openbao`). Nothing here logs but that
//! client (URLs and statuses, at debug level); no error message carries a
//! secret value.

pub mod apply;
pub mod extract;
pub mod fingerprint;
pub mod fleet;
pub mod formats;
pub mod fsutil;
pub mod identity;
pub mod model;
pub mod names;
pub mod openbao;
pub mod placement;
pub mod policy;
pub mod proof;
pub mod providers;
pub mod secret_value;
pub mod session;
pub mod sockets;
pub mod store;
pub mod store_tls;
pub mod store_url;
pub mod text;
pub mod time;
pub mod wire;
pub mod x509;

pub use model::{ProviderSecret, Secret};
pub use secret_value::{SecretText, SecretValue, Values};
