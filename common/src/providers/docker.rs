//! Docker registry credentials for SkyPilot (`SKYPILOT_DOCKER_*` variables):
//! environment variables only, no default file. Never reads or writes a file
//! unless a path is given explicitly.

use super::env_only::EnvOnly;

/// The docker provider.
pub static DOCKER: EnvOnly = EnvOnly {
    id: "docker",
    vars: &[
        ("username", "SKYPILOT_DOCKER_USERNAME"),
        ("password", "SKYPILOT_DOCKER_PASSWORD"),
        ("server", "SKYPILOT_DOCKER_SERVER"),
    ],
    keys: &["username", "password", "server"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_only() {
        crate::providers::env_only::check_env_only(
            &DOCKER,
            &[
                ("username", "SKYPILOT_DOCKER_USERNAME"),
                ("password", "SKYPILOT_DOCKER_PASSWORD"),
                ("server", "SKYPILOT_DOCKER_SERVER"),
            ],
        );
    }
}
