//! Signed policies against a real registry (Debian's `docker-registry` on
//! 127.0.0.1), driven as a user drives them: `sign`, `verify-signature`,
//! and `pull`, `run` and `serve` (with its reload) under
//! `--verification-path`. Keys are made by `openssl`, and one signature is
//! made by `openssl` alone over a payload this test writes and pushed over
//! the registry's own HTTP API, so what `sign` writes and what verification
//! accepts are held to cosign's format, not only to each other.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;

mod common;
#[path = "../../tests/src/registry.rs"]
#[allow(dead_code)] // not every helper is used here
mod registry;

use common::component;
use registry::Registry;

/// A registry, a sources.yml that lists it as an insecure (plain-HTTP)
/// source, and keys.
struct Setup {
    dir: tempfile::TempDir,
    registry: Registry,
    sources: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(&dir.path().join("registry"));
        let sources = dir.path().join("sources.yml");
        std::fs::write(
            &sources,
            format!("insecure_sources: [\"{}\"]\n", registry.host()),
        )
        .unwrap();
        Self {
            dir,
            registry,
            sources,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn uri(&self, rest: &str) -> String {
        format!("registry://{}/{rest}", self.registry.host())
    }

    /// `portcullis ARGS --sources-path … [--policies-download-dir …]`.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(args).arg("--sources-path").arg(&self.sources);
        if matches!(args[0], "pull" | "run") {
            command
                .arg("--policies-download-dir")
                .arg(self.path("downloads"));
        }
        command
            .env("DOCKER_CONFIG", self.path("no-docker"))
            .output()
            .expect("running portcullis")
    }

    /// Pushes the example component `name` to `rest`; its manifest digest.
    fn push(&self, name: &str, rest: &str, format: &str) -> String {
        let module = component(name);
        let pinned = stdout(&self.run(&[
            "push",
            module.to_str().unwrap(),
            &self.uri(rest),
            "--format",
            format,
        ]));
        pinned.trim().rsplit_once('@').unwrap().1.to_owned()
    }

    /// A P-256 key pair made by openssl: (private PKCS#8 PEM, public PEM).
    fn key(&self, name: &str) -> (PathBuf, PathBuf) {
        let private = self.path(&format!("{name}.key"));
        let public = self.path(&format!("{name}.pub"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            private.to_str().unwrap(),
        ]);
        openssl(&[
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ]);
        (private, public)
    }

    /// A verification config file `name` with `text`.
    fn config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `pull URI --verification-path CONFIG` into the download store `downloads`.
    fn pull_verified(&self, uri: &str, config: &Path) -> Output {
        self.run(&["pull", uri, "--verification-path", config.to_str().unwrap()])
    }

    /// [`pull_verified`](Self::pull_verified) into a store of its own: a tag
    /// already in a store is used from there (Kubewarden's rule), so a test
    /// of what the registry holds now starts empty.
    fn pull_verified_fresh(&self, uri: &str, config: &Path, store: &str) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["pull", uri, "--verification-path"])
            .arg(config)
            .arg("--sources-path")
            .arg(&self.sources)
            .arg("--policies-download-dir")
            .arg(self.path(store))
            .env("DOCKER_CONFIG", self.path("no-docker"))
            .output()
            .expect("running portcullis")
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr_of_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A `pubKey` entry of a verification config for the key at `public`,
/// followed by `extra` (more keys of the entry, indented by 4).
fn pub_key(public: &Path, extra: &str) -> String {
    let pem = std::fs::read_to_string(public).unwrap();
    let indented: String = pem.lines().map(|l| format!("      {l}\n")).collect();
    format!("  - kind: pubKey\n    key: |\n{indented}{extra}")
}

/// One HTTP/1.1 exchange with the registry's API: (status, headers, body).
fn registry_http(
    registry: &Registry,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(registry.host()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Accept: application/vnd.oci.image.manifest.v1+json\r\n",
        registry.host(),
        body.len()
    );
    if let Some(content_type) = content_type {
        head += &format!("Content-Type: {content_type}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let headers = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = headers[9..12].parse().unwrap();
    (status, headers, response[split + 4..].to_vec())
}

fn sha256(bytes: &[u8]) -> String {
    portcullis::digest::Digest::of(bytes).to_string()
}

/// Uploads `bytes` as a blob of `repository`: a POST for an upload URL,
/// then one PUT with the digest.
fn put_blob(registry: &Registry, repository: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let path = format!("/v2/{repository}/blobs/uploads/");
    let (status, headers, _) = registry_http(registry, "POST", &path, None, &[]);
    assert_eq!(status, 202, "{headers}");
    let location = headers
        .lines()
        .find_map(|line| line.strip_prefix("Location: "))
        .expect("an upload location");
    let upload = location
        .strip_prefix(&format!("http://{}", registry.host()))
        .unwrap_or(location);
    let path = format!("{upload}&digest={digest}");
    let content_type = Some("application/octet-stream");
    let (status, headers, _) = registry_http(registry, "PUT", &path, content_type, bytes);
    assert_eq!(status, 201, "{headers}");
    digest
}

fn put_manifest(registry: &Registry, repository: &str, tag: &str, manifest: &[u8]) {
    let path = format!("/v2/{repository}/manifests/{tag}");
    let content_type = Some("application/vnd.oci.image.manifest.v1+json");
    let (status, headers, _) = registry_http(registry, "PUT", &path, content_type, manifest);
    assert_eq!(status, 201, "{headers}");
}

fn get_manifest(registry: &Registry, repository: &str, reference: &str) -> Vec<u8> {
    let path = format!("/v2/{repository}/manifests/{reference}");
    let (status, headers, body) = registry_http(registry, "GET", &path, None, &[]);
    assert_eq!(status, 200, "{headers}");
    body
}

fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

#[test]
fn a_policy_signed_by_sign_verifies_loads_and_stays_verified_in_the_store() {
    let mut setup = Setup::new();
    let (private, public) = setup.key("alice");
    let digest = setup.push("pod_privileged", "signed/ours:v1", "cncf");
    let tagged = setup.uri("signed/ours:v1");

    let signed = stdout(&setup.run(&[
        "sign",
        &tagged,
        "--key",
        private.to_str().unwrap(),
        "-a",
        "env=prod",
    ]));
    assert!(
        signed.contains(&format!(
            "signed     {}",
            setup.uri(&format!("signed/ours@{digest}"))
        )),
        "{signed}"
    );
    // Signing again with the same key adds nothing; the manifest stays one layer.
    stdout(&setup.run(&[
        "sign",
        &tagged,
        "--key",
        private.to_str().unwrap(),
        "-a",
        "env=prod",
    ]));

    // What `sign` wrote is cosign's layout, and openssl verifies it.
    let manifest: serde_json::Value = serde_json::from_slice(&get_manifest(
        &setup.registry,
        "signed/ours",
        &sig_tag(&digest),
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let payload_digest = layers[0]["digest"].as_str().unwrap();
    let (status, _, payload) = registry_http(
        &setup.registry,
        "GET",
        &format!("/v2/signed/ours/blobs/{payload_digest}"),
        None,
        &[],
    );
    assert_eq!(status, 200);
    let payload_json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        payload_json["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(
        payload_json["critical"]["type"],
        "cosign container image signature"
    );
    assert_eq!(payload_json["optional"]["env"], "prod");
    let signature = base64::engine::general_purpose::STANDARD
        .decode(
            layers[0]["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(setup.path("payload"), &payload).unwrap();
    std::fs::write(setup.path("payload.sig"), &signature).unwrap();
    let verified = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        public.to_str().unwrap(),
        "-signature",
        setup.path("payload.sig").to_str().unwrap(),
        setup.path("payload").to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8_lossy(&verified).trim(), "Verified OK");

    let checked = stdout(&setup.run(&[
        "verify-signature",
        &tagged,
        "--key",
        public.to_str().unwrap(),
        "-a",
        "env=prod",
    ]));
    assert!(
        checked.contains(&format!("@{digest} (1 signatures)")),
        "{checked}"
    );

    let config = setup.config(
        "alice.yml",
        &format!(
            "apiVersion: v1\nallOf:\n{}",
            pub_key(&public, "    annotations:\n      env: prod\n")
        ),
    );
    let pulled = stdout(&setup.pull_verified(&tagged, &config));
    assert!(pulled.contains("origin     pulled"), "{pulled}");
    assert!(pulled.contains(&format!("@{digest}")), "{pulled}");

    // Warm: the store's module and signatures (checked again, offline).
    setup.registry.stop();
    let again = stdout(&setup.pull_verified(&tagged, &config));
    assert!(again.contains("origin     store"), "{again}");
    // A config the stored signatures do not satisfy goes to the registry,
    // which is gone: it is not loaded from the store.
    let (_, bob) = setup.key("bob");
    let bobs = setup.config(
        "bob.yml",
        &format!("apiVersion: v1\nallOf:\n{}", pub_key(&bob, "")),
    );
    let refused = stderr_of_failure(&setup.pull_verified(&tagged, &bobs));
    assert!(refused.contains("unreachable"), "{refused}");
}

#[test]
fn a_signature_made_by_openssl_alone_loads() {
    let setup = Setup::new();
    let (private, public) = setup.key("release");
    let digest = setup.push("pod_privileged", "signed/openssl:v1", "kubewarden");
    // cosign's simple-signing payload, written here, signed by openssl.
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/signed/openssl"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        setup.registry.host()
    );
    std::fs::write(setup.path("payload"), &payload).unwrap();
    let signature = openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        private.to_str().unwrap(),
        setup.path("payload").to_str().unwrap(),
    ]);
    let config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = put_blob(&setup.registry, "signed/openssl", config);
    let payload_digest = put_blob(&setup.registry, "signed/openssl", payload.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": {
                "dev.cosignproject.cosign/signature": base64::engine::general_purpose::STANDARD.encode(&signature)
            }
        }]
    });
    put_manifest(
        &setup.registry,
        "signed/openssl",
        &sig_tag(&digest),
        &serde_json::to_vec(&manifest).unwrap(),
    );

    let config = setup.config(
        "release.yml",
        &format!("apiVersion: v1\nallOf:\n{}", pub_key(&public, "")),
    );
    let pulled = stdout(&setup.pull_verified(&setup.uri("signed/openssl:v1"), &config));
    assert!(pulled.contains(&format!("@{digest}")), "{pulled}");
    let checked = stdout(&setup.run(&[
        "verify-signature",
        &setup.uri("signed/openssl:v1"),
        "--key",
        public.to_str().unwrap(),
    ]));
    assert!(
        checked.contains(&format!("@{digest} (1 signatures)")),
        "{checked}"
    );
}

#[test]
fn unsigned_other_key_tampered_and_retagged_policies_are_refused() {
    let setup = Setup::new();
    let (private, public) = setup.key("alice");
    let (_, other) = setup.key("mallory");
    let config = setup.config(
        "alice.yml",
        &format!("apiVersion: v1\nallOf:\n{}", pub_key(&public, "")),
    );
    let config_text = config.display().to_string();

    // Unsigned.
    let unsigned = setup.push("pod_privileged", "p/unsigned:v1", "cncf");
    let refused = stderr_of_failure(&setup.pull_verified(&setup.uri("p/unsigned:v1"), &config));
    assert!(
        refused.contains(&format!(
            "signature verification failed for manifest {unsigned} against {config_text}: the \
             manifest is not signed: the repository has no signature manifest `{}`",
            sig_tag(&unsigned)
        )),
        "{refused}"
    );
    assert!(refused.contains(&setup.uri("p/unsigned:v1")), "{refused}");

    // Signed by another key than the config's.
    let tagged = setup.uri("p/signed:v1");
    let original = setup.push("pod_privileged", "p/signed:v1", "cncf");
    let other_config = setup.config(
        "mallory.yml",
        &format!("apiVersion: v1\nallOf:\n{}", pub_key(&other, "")),
    );
    stdout(&setup.run(&["sign", &tagged, "--key", private.to_str().unwrap()]));
    let refused = stderr_of_failure(&setup.pull_verified(&tagged, &other_config));
    assert!(
        refused.contains("allOf[0] (pubKey sha256:")
            && refused.contains("none of the 1 signatures verifies with this key"),
        "{refused}"
    );
    stdout(&setup.pull_verified(&tagged, &config));

    // The manifest changed after signing (the same module re-pushed in the
    // other layout), with the original's signatures copied to its tag.
    let tampered = setup.push("pod_privileged", "p/signed:v1", "kubewarden");
    assert_ne!(tampered, original);
    let signatures = get_manifest(&setup.registry, "p/signed", &sig_tag(&original));
    put_manifest(
        &setup.registry,
        "p/signed",
        &sig_tag(&tampered),
        &signatures,
    );
    let refused = stderr_of_failure(&setup.pull_verified_fresh(&tagged, &config, "tampered"));
    assert!(
        refused.contains(&format!(
            "the signature by this key is for the manifest {original}, not this one"
        )),
        "{refused}"
    );

    // Re-tagged to other bytes: nothing signed them.
    let retagged = setup.push("disallow_service_loadbalancer", "p/signed:v1", "cncf");
    let refused = stderr_of_failure(&setup.pull_verified_fresh(&tagged, &config, "retagged"));
    assert!(
        refused.contains(&format!("failed for manifest {retagged}"))
            && refused.contains("the manifest is not signed"),
        "{refused}"
    );
    // The digest that was signed still loads, pinned.
    stdout(&setup.pull_verified(&setup.uri(&format!("p/signed@{original}")), &config));

    // `run` refuses as `pull` does, before anything is evaluated.
    let request = common::fixture("privileged_container.json");
    let refused = stderr_of_failure(&setup.run(&[
        "run",
        "--policy",
        &setup.uri("p/unsigned:v1"),
        "--request",
        request.to_str().unwrap(),
        "--verification-path",
        &config_text,
    ]));
    assert!(refused.contains("the manifest is not signed"), "{refused}");

    // An https:// module carries no signature.
    let refused = stderr_of_failure(&setup.pull_verified("https://127.0.0.1:1/p.wasm", &config));
    assert!(
        refused.contains("only registry modules carry signatures"),
        "{refused}"
    );
}

#[test]
fn any_of_minimum_matches_all_of_and_annotations() {
    let setup = Setup::new();
    let (alice_key, alice) = setup.key("alice");
    let (bob_key, bob) = setup.key("bob");
    let (_, carol) = setup.key("carol");
    let tagged = setup.uri("p/two:v1");
    setup.push("pod_privileged", "p/two:v1", "cncf");
    stdout(&setup.run(&[
        "sign",
        &tagged,
        "--key",
        alice_key.to_str().unwrap(),
        "-a",
        "env=prod",
    ]));
    stdout(&setup.run(&["sign", &tagged, "--key", bob_key.to_str().unwrap()]));

    let check = |name: &str, text: String| setup.pull_verified(&tagged, &setup.config(name, &text));
    let any_of = |minimum: usize, keys: &[&Path]| {
        let entries: String = keys.iter().map(|k| pub_key(k, "")).collect();
        format!("apiVersion: v1\nanyOf:\n  minimumMatches: {minimum}\n  signatures:\n{entries}")
    };
    stdout(&check("a.yml", any_of(2, &[&alice, &bob])));
    stdout(&check("b.yml", any_of(1, &[&carol, &bob])));
    let refused = stderr_of_failure(&check("c.yml", any_of(2, &[&alice, &carol])));
    assert!(
        refused.contains(
            "anyOf: 1 of the 2 requirements hold, minimumMatches is 2 (anyOf.signatures[1] (pubKey"
        ) && refused.contains("none of the 2 signatures verifies with this key"),
        "{refused}"
    );

    let all_of = |entries: String| format!("apiVersion: v1\nallOf:\n{entries}");
    stdout(&check(
        "d.yml",
        all_of(pub_key(&alice, "") + &pub_key(&bob, "")),
    ));
    let refused = stderr_of_failure(&check(
        "e.yml",
        all_of(pub_key(&alice, "") + &pub_key(&carol, "")),
    ));
    assert!(refused.contains("allOf[1] (pubKey"), "{refused}");
    assert!(!refused.contains("allOf[0]"), "{refused}");

    // Annotations: alice signed with env=prod, bob with none.
    stdout(&check(
        "f.yml",
        all_of(pub_key(&alice, "    annotations:\n      env: prod\n")),
    ));
    let refused = stderr_of_failure(&check(
        "g.yml",
        all_of(pub_key(&alice, "    annotations:\n      env: dev\n")),
    ));
    assert!(
        refused.contains(
            r#"the signature by this key lacks the annotations env=dev (it carries {"env":"prod"})"#
        ),
        "{refused}"
    );
    let refused = stderr_of_failure(&check(
        "h.yml",
        all_of(pub_key(&bob, "    annotations:\n      env: prod\n")),
    ));
    assert!(
        refused.contains("lacks the annotations env=prod (it carries none)"),
        "{refused}"
    );
    // Both in one config: allOf and anyOf must each hold.
    let both = format!(
        "{}anyOf:\n  signatures:\n{}",
        all_of(pub_key(&alice, "")),
        pub_key(&carol, "")
    );
    let refused = stderr_of_failure(&check("i.yml", both));
    assert!(
        refused.contains("anyOf: 0 of the 1 requirements hold"),
        "{refused}"
    );
}

#[test]
fn a_malformed_config_is_refused_at_start_with_its_line() {
    let setup = Setup::new();
    let (_, public) = setup.key("alice");
    let bad = setup.config(
        "bad.yml",
        &format!(
            "apiVersion: v1\nallOf:\n{}  - kind: pubKey\n    keys: oops\n",
            pub_key(&public, "")
        ),
    );
    let refused = stderr_of_failure(&setup.pull_verified(&setup.uri("any:v1"), &bad));
    assert!(
        refused.contains(&format!("verification config {}: line 9", bad.display()))
            && refused.contains("unknown field `keys`"),
        "{refused}"
    );
    let keyless = setup.config(
        "keyless.yml",
        "apiVersion: v1\nallOf:\n  - kind: githubAction\n    owner: kubewarden\n",
    );
    let refused = stderr_of_failure(&setup.pull_verified(&setup.uri("any:v1"), &keyless));
    assert!(
        refused.contains("allOf[0] (githubAction kubewarden): keyless signatures are not verified by this version yet"),
        "{refused}"
    );

    // serve refuses it even when every policy is a local file.
    let output = common::served::serve_command()
        .arg("--verification-path")
        .arg(&bad)
        .output()
        .unwrap();
    let refused = stderr_of_failure(&output);
    assert!(refused.contains("line 9"), "{refused}");
}

/// `serve` of `policies` under the verification config `config`.
fn serve_command(setup: &Setup, policies: &Path, config: &Path) -> Command {
    let mut command = common::served::portcullis();
    command
        .arg("--policies")
        .arg(policies)
        .arg("--sources-path")
        .arg(&setup.sources)
        .arg("--policies-download-dir")
        .arg(setup.path("serve-downloads"))
        .arg("--verification-path")
        .arg(config)
        .env("DOCKER_CONFIG", setup.path("no-docker"));
    command
}

#[test]
fn serve_does_not_start_with_an_unsigned_policy_and_a_reload_is_refused() {
    let setup = Setup::new();
    let (private, public) = setup.key("alice");
    let config = setup.config(
        "alice.yml",
        &format!("apiVersion: v1\nallOf:\n{}", pub_key(&public, "")),
    );
    setup.push("pod_privileged", "p/signed:v1", "cncf");
    setup.push("pod_privileged", "p/unsigned:v1", "cncf");
    stdout(&setup.run(&[
        "sign",
        &setup.uri("p/signed:v1"),
        "--key",
        private.to_str().unwrap(),
    ]));
    let signed = format!("signed:\n  module: {}\n", setup.uri("p/signed:v1"));
    let unsigned = format!("unsigned:\n  module: {}\n", setup.uri("p/unsigned:v1"));

    // Not ready: serve exits naming the policy, the reference and the failure.
    let policies = setup.path("policies.yml");
    std::fs::write(&policies, format!("{signed}{unsigned}")).unwrap();
    let output = serve_command(&setup, &policies, &config).output().unwrap();
    let refused = stderr_of_failure(&output);
    assert!(
        refused.contains(&format!(
            "policy `unsigned` ({}): signature verification failed",
            setup.uri("p/unsigned:v1")
        )) && refused.contains("the manifest is not signed"),
        "{refused}"
    );
    assert!(!refused.contains("policy `signed`"), "{refused}");

    // Signed only: ready; then a reload that adds the unsigned one is refused.
    std::fs::write(&policies, &signed).unwrap();
    let served = common::served::serve(serve_command(&setup, &policies, &config));
    assert_eq!(
        common::served::http(served.probes, "GET", "/readiness", "").0,
        200
    );
    std::fs::write(&policies, format!("{signed}{unsigned}")).unwrap();
    let hangup = Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let failure = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = served
            .logs
            .recv_timeout(left)
            .expect("a reload outcome is logged");
        if line.contains("configuration reload failed") {
            break line;
        }
    };
    assert!(
        failure.contains("policy `unsigned`") && failure.contains("the manifest is not signed"),
        "{failure}"
    );
    assert_eq!(
        common::served::http(served.probes, "GET", "/readiness", "").0,
        200
    );
}
