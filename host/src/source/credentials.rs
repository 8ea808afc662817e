//! Registry credentials from Docker's `config.json` — what `docker login`,
//! `podman login --authfile` and Kubernetes' `dockerconfigjson` Secrets write
//! — read with the `docker_credential` crate (credential helpers included).

use std::fmt;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

/// Where credentials are looked up: an explicit file
/// (`--docker-config-json-path`), else `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
#[derive(Debug, Clone)]
pub struct Credentials {
    path: Option<PathBuf>,
}

/// The credentials used for one registry, and where they came from: what an
/// authentication error names.
#[derive(Clone)]
pub struct Login {
    /// What is sent.
    pub auth: RegistryAuth,
    /// How they were found, for messages.
    pub origin: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `RegistryAuth`'s Debug redacts the secret.
        f.debug_struct("Login")
            .field("auth", &self.auth)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Credentials {
    /// Credentials from `path`, or from Docker's default location when `None`.
    pub fn new(path: Option<PathBuf>) -> Self {
        let path = path.or_else(|| {
            std::env::var_os("DOCKER_CONFIG")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker")))
                .map(|dir| dir.join("config.json"))
        });
        Self { path }
    }

    /// The config.json consulted, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The login for `registry` (`host[:port]`). Never fails: a missing file
    /// or entry means anonymous access, and the returned origin says so.
    pub fn login(&self, registry: &str) -> Login {
        let anonymous = |why: String| Login {
            auth: RegistryAuth::Anonymous,
            origin: format!("anonymously ({why})"),
        };
        let Some(path) = &self.path else {
            return anonymous(
                "no Docker config.json: neither DOCKER_CONFIG nor HOME is set".into(),
            );
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return anonymous(format!("{} does not exist", path.display()));
            }
            Err(e) => return anonymous(format!("cannot read {}: {e}", path.display())),
        };
        let found =
            docker_credential::get_credential_from_reader(std::io::BufReader::new(file), registry);
        match found {
            Ok(DockerCredential::UsernamePassword(user, password)) => Login {
                origin: format!(
                    "as `{user}` (credentials for {registry} in {})",
                    path.display()
                ),
                auth: RegistryAuth::Basic(user, password),
            },
            // An identity token is an OAuth refresh token to trade at the
            // registry's token endpoint; oci-client cannot do that exchange,
            // so, like Kubewarden, pull anonymously and say why.
            Ok(DockerCredential::IdentityToken(_)) => anonymous(format!(
                "{} has an identity token for {registry}, which is not supported: \
                 store a username and password (or a token as password) instead",
                path.display()
            )),
            Err(CredentialRetrievalError::NoCredentialConfigured) => anonymous(format!(
                "no credentials for {registry} in {}",
                path.display()
            )),
            Err(e) => anonymous(format!(
                "credentials for {registry} in {} unusable: {e}",
                path.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn username_and_password_from_auth() {
        let dir = tempfile::tempdir().unwrap();
        // base64("alice:s3cret")
        let path = write(
            dir.path(),
            r#"{"auths": {"127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"}}}"#,
        );
        let login = Credentials::new(Some(path.clone())).login("127.0.0.1:5000");
        assert_eq!(
            login.auth,
            RegistryAuth::Basic("alice".into(), "s3cret".into())
        );
        assert_eq!(
            login.origin,
            format!(
                "as `alice` (credentials for 127.0.0.1:5000 in {})",
                path.display()
            )
        );
        assert!(!format!("{login:?}").contains("s3cret"));
    }

    #[test]
    fn anonymous_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let login = Credentials::new(Some(missing.clone())).login("h");
        assert_eq!(login.auth, RegistryAuth::Anonymous);
        assert_eq!(
            login.origin,
            format!("anonymously ({} does not exist)", missing.display())
        );

        let path = write(dir.path(), r#"{"auths": {"other": {"auth": "YTpi"}}}"#);
        let login = Credentials::new(Some(path.clone())).login("h");
        assert_eq!(
            login.origin,
            format!("anonymously (no credentials for h in {})", path.display())
        );

        let path = write(dir.path(), r#"{"auths": {"h": {"identitytoken": "t"}}}"#);
        let login = Credentials::new(Some(path)).login("h");
        assert_eq!(login.auth, RegistryAuth::Anonymous);
        assert!(login.origin.contains("identity token"), "{}", login.origin);
    }
}
