//! The pull side of the OCI distribution protocol, over reqwest, with every
//! answer read under a cap ([`download`](super::download)): the manifest
//! (at most 4 MiB), the module (streamed into the download store), tokens
//! and error bodies. oci-client reads each of these whole before anything
//! can measure it (`pull_manifest_raw`, its token and error answers), which
//! a registry that sends without end turns into unbounded memory; it still
//! pushes.
//!
//! Authentication is the distribution spec's and Docker's token protocol: a
//! request goes without credentials; on 401 the `WWW-Authenticate`
//! challenge says Basic (the credentials are sent) or Bearer (a token for
//! `repository:NAME:pull` is asked of its realm, with the credentials), and
//! the request is made again. reqwest drops the `Authorization` header on a
//! redirect to another host (a blob store's signed URL).

use oci_client::Reference;
use oci_client::errors::{DigestError, OciDistributionError, OciEnvelope};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::RegistryToken;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use sha2::Digest as _;

use super::credentials::Login;
use super::download::{self, BodyError, Progress, Stage};
use super::error::FetchError;
use super::store::PartialBlob;
use super::{Fetcher, registry};

/// Largest manifest accepted (they are a few hundred bytes).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Largest token answer accepted (a JSON web token is a few KB).
const MAX_TOKEN_BYTES: usize = 1 << 20;

/// Every manifest media type a registry may answer with.
const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// The registry's digest of what it sends.
const DIGEST_HEADER: &str = "Docker-Content-Digest";

/// What is sent with each request once the registry has asked.
enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

/// One repository of a registry, reached for a pull: the endpoint that
/// answered (for an insecure source: HTTPS without verification, else plain
/// HTTP) and the authorization it accepted.
pub(super) struct Repository<'a> {
    fetcher: &'a Fetcher,
    reference: &'a Reference,
    login: &'a Login,
    progress: &'a Progress,
    /// Clients and schemes to try, in order; once one answers, only it.
    endpoints: Vec<(reqwest::Client, &'static str)>,
    authorization: Authorization,
    /// Whether a challenge was answered already (once per pull).
    challenged: bool,
}

impl<'a> Repository<'a> {
    /// The repository `reference` names, with the credentials of `login`.
    pub(super) fn new(
        fetcher: &'a Fetcher,
        reference: &'a Reference,
        login: &'a Login,
        progress: &'a Progress,
    ) -> Result<Self, FetchError> {
        let authorization = match &login.auth {
            // A token given as such is sent without being asked for.
            RegistryAuth::Bearer(token) => Authorization::Bearer(token.clone()),
            _ => Authorization::None,
        };
        Ok(Self {
            endpoints: fetcher.registry_endpoints(reference.resolve_registry())?,
            fetcher,
            reference,
            login,
            progress,
            authorization,
            challenged: false,
        })
    }

    /// The manifest's bytes (at most [`MAX_MANIFEST_BYTES`]) and digest,
    /// checked against the reference's digest and the registry's.
    pub(super) async fn manifest(&mut self) -> Result<(Vec<u8>, String), FetchError> {
        let path = self.manifest_path();
        let mut response = self.send(Method::GET, &path, Some(MANIFEST_TYPES)).await?;
        if response.status() != StatusCode::OK {
            return Err(self.refused(response).await);
        }
        self.progress.enter(Stage::Manifest);
        let header = digest_header(&response);
        let body = download::read_capped(&mut response, MAX_MANIFEST_BYTES, self.progress)
            .await
            .map_err(|error| match error {
                BodyError::TooLarge => FetchError::Protocol(format!(
                    "the manifest is larger than {MAX_MANIFEST_BYTES} bytes"
                )),
                BodyError::Transport(error) => self.fail(OciDistributionError::RequestError(error)),
            })?;
        let digest = verified_digest(&body, header.as_deref(), self.reference.digest())
            .map_err(|e| self.fail(e.into()))?;
        Ok((body, digest))
    }

    /// The manifest's digest as the registry names it now: a HEAD, or the
    /// manifest itself when the registry does not say.
    pub(super) async fn manifest_digest(&mut self) -> Result<String, FetchError> {
        let path = self.manifest_path();
        let response = self.send(Method::HEAD, &path, Some(MANIFEST_TYPES)).await?;
        if response.status() != StatusCode::OK {
            return Err(self.refused(response).await);
        }
        if let Some(header) = digest_header(&response) {
            if let Some(pinned) = self.reference.digest()
                && same_algorithm(pinned, &header)
                && pinned != header
            {
                let mismatch = DigestError::VerificationError {
                    expected: pinned.to_owned(),
                    actual: header,
                };
                return Err(self.fail(mismatch.into()));
            }
            return Ok(header);
        }
        Ok(self.manifest().await?.1)
    }

    /// Streams the module `layer` describes into the download store and
    /// checks it against the layer's digest; the caller persists it.
    pub(super) async fn module(
        &mut self,
        layer: &OciDescriptor,
    ) -> Result<PartialBlob, FetchError> {
        let path = format!("blobs/{}", layer.digest);
        let mut response = self.send(Method::GET, &path, None).await?;
        if response.status() != StatusCode::OK {
            return Err(self.refused(response).await);
        }
        self.progress.enter(Stage::Module);
        let expected = u64::try_from(layer.size).ok();
        let store = self.fetcher.store();
        let blob = download::module_to_store(&mut response, store, expected, self.progress).await?;
        let actual = blob.digest().to_string();
        if actual != layer.digest {
            return Err(FetchError::DigestMismatch {
                what: "layer",
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(blob)
    }

    /// A small blob (a signature payload) read into memory, at most
    /// `limit` bytes, and checked against the descriptor's digest.
    pub(super) async fn small_blob(
        &mut self,
        descriptor: &OciDescriptor,
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, FetchError> {
        let path = format!("blobs/{}", descriptor.digest);
        let mut response = self.send(Method::GET, &path, None).await?;
        if response.status() != StatusCode::OK {
            return Err(self.refused(response).await);
        }
        let body = download::read_capped(&mut response, limit, self.progress)
            .await
            .map_err(|error| match error {
                BodyError::TooLarge => {
                    FetchError::Protocol(format!("the {what} is larger than {limit} bytes"))
                }
                BodyError::Transport(error) => self.fail(OciDistributionError::RequestError(error)),
            })?;
        let actual = digest_like(&descriptor.digest, &body).map_err(|e| self.fail(e.into()))?;
        if actual != descriptor.digest {
            return Err(FetchError::DigestMismatch {
                what,
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(body)
    }

    fn manifest_path(&self) -> String {
        let reference = match self.reference.digest() {
            Some(digest) => digest,
            None => self.reference.tag().unwrap_or("latest"),
        };
        format!("manifests/{reference}")
    }

    /// Sends `method` to the repository's `path`, answering the registry's
    /// challenge once if it asks for credentials; returns the answer
    /// whatever its status.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        accept: Option<&[&str]>,
    ) -> Result<reqwest::Response, FetchError> {
        self.progress.enter(Stage::Connecting);
        loop {
            let response = self.send_once(&method, path, accept).await?;
            if response.status() != StatusCode::UNAUTHORIZED || self.challenged {
                return Ok(response);
            }
            self.challenged = true;
            let challenges: Vec<String> = response
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|value| value.to_str().ok().map(str::to_owned))
                .collect();
            if !self.answer(&challenges).await? {
                return Ok(response);
            }
        }
    }

    /// One request, to the first endpoint that answers.
    async fn send_once(
        &mut self,
        method: &Method,
        path: &str,
        accept: Option<&[&str]>,
    ) -> Result<reqwest::Response, FetchError> {
        let registry = self.reference.resolve_registry();
        let namespace = self
            .reference
            .namespace()
            .map(|ns| format!("?ns={ns}"))
            .unwrap_or_default();
        let repository = self.reference.repository();
        let mut tried = 0;
        loop {
            let (client, scheme) = &self.endpoints[tried];
            let url = format!("{scheme}://{registry}/v2/{repository}/{path}{namespace}");
            let mut request = client.request(method.clone(), url);
            if let Some(accept) = accept {
                request = request.header(reqwest::header::ACCEPT, accept.join(", "));
            }
            request = match &self.authorization {
                Authorization::None => request,
                Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
                Authorization::Bearer(token) => request.bearer_auth(token),
            };
            match request.send().await {
                Ok(response) => {
                    if tried > 0 {
                        self.endpoints.drain(..tried);
                    }
                    self.endpoints.truncate(1);
                    return Ok(response);
                }
                Err(_) if tried + 1 < self.endpoints.len() => tried += 1,
                Err(error) => return Err(self.fail(OciDistributionError::RequestError(error))),
            }
        }
    }

    /// Answers the first challenge it can: Bearer with a token, Basic with
    /// the credentials. Whether there is something new to send.
    async fn answer(&mut self, challenges: &[String]) -> Result<bool, FetchError> {
        for header in challenges {
            let Ok(parsed) = http_auth::parse_challenges(header) else {
                continue;
            };
            for challenge in parsed {
                let param = |name: &str| {
                    challenge
                        .params
                        .iter()
                        .find(|(key, _)| key.eq_ignore_ascii_case(name))
                        .map(|(_, value)| value.to_unescaped())
                };
                if challenge.scheme.eq_ignore_ascii_case("bearer")
                    && let Some(realm) = param("realm")
                {
                    let token = self.token(&realm, param("service")).await?;
                    self.authorization = Authorization::Bearer(token);
                    return Ok(true);
                }
                if challenge.scheme.eq_ignore_ascii_case("basic")
                    && let RegistryAuth::Basic(user, password) = &self.login.auth
                {
                    self.authorization = Authorization::Basic(user.clone(), password.clone());
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A pull token from `realm`, asked with the credentials if any.
    async fn token(&self, realm: &str, service: Option<String>) -> Result<String, FetchError> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            FetchError::Protocol(format!(
                "{}: the token realm `{realm}` is not a URL: {e}",
                self.reference.registry()
            ))
        })?;
        let scope = format!("repository:{}:pull", self.reference.repository());
        url.query_pairs_mut().append_pair("scope", &scope);
        if let Some(service) = &service {
            url.query_pairs_mut().append_pair("service", service);
        }
        let (client, _) = &self.endpoints[0];
        let mut request = client.get(url);
        if let RegistryAuth::Basic(user, password) = &self.login.auth {
            request = request.basic_auth(user, Some(password));
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.fail(OciDistributionError::RequestError(e)))?;
        if !response.status().is_success() {
            let body = download::error_body(&mut response).await;
            let reason = shortened(&body);
            return Err(self.fail(OciDistributionError::AuthenticationFailure(reason)));
        }
        let body = download::read_capped(&mut response, MAX_TOKEN_BYTES, self.progress)
            .await
            .map_err(|error| match error {
                BodyError::TooLarge => FetchError::Protocol(format!(
                    "{}: the token answer is larger than {MAX_TOKEN_BYTES} bytes",
                    self.reference.registry()
                )),
                BodyError::Transport(error) => self.fail(OciDistributionError::RequestError(error)),
            })?;
        let token: RegistryToken = serde_json::from_slice(&body).map_err(|e| {
            self.fail(OciDistributionError::RegistryTokenDecodeError(
                e.to_string(),
            ))
        })?;
        Ok(token.token().to_owned())
    }

    /// The error an answer other than 200 stands for, its body read up to
    /// [`download::ERROR_BODY_BYTES`].
    async fn refused(&self, mut response: reqwest::Response) -> FetchError {
        let status = response.status();
        let url = response.url().to_string();
        let body = download::error_body(&mut response).await;
        let error = match status {
            StatusCode::UNAUTHORIZED => OciDistributionError::UnauthorizedError { url },
            status if status.is_success() => OciDistributionError::SpecViolationError(format!(
                "expected HTTP status 200 OK, got {status}"
            )),
            status if status.is_client_error() => {
                match serde_json::from_slice::<OciEnvelope>(&body) {
                    Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
                    Err(_) => OciDistributionError::ServerError {
                        code: status.as_u16(),
                        url,
                        message: shortened(&body),
                    },
                }
            }
            status => OciDistributionError::ServerError {
                code: status.as_u16(),
                url,
                message: shortened(&body),
            },
        };
        self.fail(error)
    }

    fn fail(&self, error: OciDistributionError) -> FetchError {
        registry::classify(self.fetcher, self.reference, &self.login.origin, error)
    }
}

fn digest_header(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get(DIGEST_HEADER)?.to_str().ok()?;
    (!value.is_empty()).then(|| value.to_owned())
}

/// The manifest's digest: `body` checked against the reference's digest and
/// the registry's header, each in its own algorithm; the header's when
/// given (the spec's canonical one), else the reference's, else sha256.
fn verified_digest(
    body: &[u8],
    header: Option<&str>,
    pinned: Option<&str>,
) -> Result<String, DigestError> {
    for expected in [pinned, header].into_iter().flatten() {
        let actual = digest_like(expected, body)?;
        if actual != expected {
            return Err(DigestError::VerificationError {
                expected: expected.to_owned(),
                actual,
            });
        }
    }
    match header.or(pinned) {
        Some(digest) => Ok(digest.to_owned()),
        None => digest_like("sha256:", body),
    }
}

/// `body`'s digest in the algorithm of `like` (`sha256:…` or `sha512:…`).
fn digest_like(like: &str, body: &[u8]) -> Result<String, DigestError> {
    match like.split_once(':') {
        Some(("sha256", _)) => Ok(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(body))
        )),
        Some(("sha512", _)) => Ok(format!(
            "sha512:{}",
            hex::encode(sha2::Sha512::digest(body))
        )),
        Some((algorithm, _)) => Err(DigestError::UnsupportedAlgorithm(algorithm.to_owned())),
        None => Err(DigestError::MissingAlgorithm),
    }
}

fn same_algorithm(a: &str, b: &str) -> bool {
    a.split_once(':').map(|(alg, _)| alg) == b.split_once(':').map(|(alg, _)| alg)
}

/// An error body for a message: its start, as text.
fn shortened(body: &[u8]) -> String {
    const SHOWN: usize = 512;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    if body.len() > SHOWN {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_checked_against_the_pin_and_the_header() {
        let body = br#"{"schemaVersion":2}"#;
        let sha256 = format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)));
        let sha512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(body)));
        let other = format!("sha256:{}", "0".repeat(64));
        assert_eq!(verified_digest(body, None, None).unwrap(), sha256);
        assert_eq!(verified_digest(body, Some(&sha256), None).unwrap(), sha256);
        assert_eq!(verified_digest(body, None, Some(&sha512)).unwrap(), sha512);
        // The header's digest is the canonical one, once both hold.
        assert_eq!(
            verified_digest(body, Some(&sha512), Some(&sha256)).unwrap(),
            sha512
        );
        let Err(DigestError::VerificationError { expected, actual }) =
            verified_digest(body, Some(&sha256), Some(&other))
        else {
            panic!("a pin the bytes do not hash to is refused");
        };
        assert_eq!((expected, actual), (other.clone(), sha256.clone()));
        assert!(verified_digest(body, Some(&other), None).is_err());
        assert!(matches!(
            verified_digest(body, Some("md5:00"), None),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn long_error_bodies_are_shortened() {
        assert_eq!(shortened(b"Forbidden"), "Forbidden");
        let long = shortened(&[b'x'; 4096]);
        assert_eq!(long.chars().count(), 513);
    }
}
