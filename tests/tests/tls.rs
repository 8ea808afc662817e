//! HTTPS and mTLS with certificates generated for each test, and rotation of
//! the certificate on disk without a restart.

use std::time::{Duration, Instant};

use portcullis::Limits;
use portcullis::server::TlsFiles;
use portcullis_tests::pki::{Ca, https_client};
use portcullis_tests::server::{TestServer, test_config};
use portcullis_tests::{json_file, review};

const POLICIES: &str = "privileged: { module: pod_privileged.wasm }";

async fn start(tls: TlsFiles) -> TestServer {
    let mut config = test_config();
    config.tls = Some(tls);
    TestServer::start_with(POLICIES, config, Limits::default()).await
}

async fn validate(client: &reqwest::Client, server: &TestServer) -> Result<bool, reqwest::Error> {
    let request = json_file("examples/pod-privileged/test_data/privileged_container.json");
    let body: serde_json::Value = client
        .post(server.url("/validate/privileged"))
        .body(review(request).to_string())
        .send()
        .await?
        .json()
        .await?;
    Ok(body["response"]["allowed"].as_bool().unwrap())
}

#[tokio::test]
async fn https_serves_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server("portcullis").write(dir.path(), "server");
    let server = start(TlsFiles {
        cert,
        key,
        client_ca: None,
    })
    .await;
    assert!(server.api.starts_with("https://"));
    assert!(!validate(&https_client(&ca, None), &server).await.unwrap());
    // A client that does not trust the CA cannot talk to it.
    assert!(
        validate(&https_client(&Ca::new("other CA"), None), &server)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let (cert, key) = ca.server("portcullis").write(dir.path(), "server");
    let client_ca = dir.path().join("clients.crt");
    std::fs::write(&client_ca, clients.cert_pem()).unwrap();
    let server = start(TlsFiles {
        cert,
        key,
        client_ca: Some(client_ca),
    })
    .await;

    let apiserver = clients.client("kube-apiserver");
    assert!(
        !validate(&https_client(&ca, Some(&apiserver)), &server)
            .await
            .unwrap()
    );

    let anonymous = validate(&https_client(&ca, None), &server).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was served"
    );
    let stranger = Ca::new("stranger CA").client("intruder");
    let foreign = validate(&https_client(&ca, Some(&stranger)), &server).await;
    assert!(
        foreign.is_err(),
        "a client with a certificate from another CA was served"
    );
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let (cert, key) = old_ca.server("portcullis").write(dir.path(), "server");
    let server = start(TlsFiles {
        cert,
        key,
        client_ca: None,
    })
    .await;
    assert!(
        validate(&https_client(&old_ca, None), &server)
            .await
            .is_ok()
    );

    let new_ca = Ca::new("new CA");
    new_ca.server("portcullis").write(dir.path(), "server");
    let new_client = https_client(&new_ca, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while validate(&new_client, &server).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New connections no longer get the old certificate.
    assert!(
        validate(&https_client(&old_ca, None), &server)
            .await
            .is_err()
    );
}
