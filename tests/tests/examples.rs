//! Every example policy's fixtures give the expected verdict through the
//! real component, loaded and evaluated by the host (pod-privileged has its
//! own file with Kubewarden's fixtures; the Python policy has `python.rs`).

use std::time::{Duration, Instant};

use portcullis::admission::{AdmissionResponse, parse_review_or_request};
use portcullis::{Environment, PolicySpec};
use portcullis_tests::{component, engine, json_file, repo_file, shared_cache};
use serde_json::{Value, json};

/// What a fixture must produce.
enum Expect {
    Accept,
    Reject {
        message: &'static str,
        code: Option<u16>,
    },
    Mutate {
        into: &'static str,
    },
}

async fn check(crate_name: &str, example: &str, settings: Value, cases: &[(&str, Expect)]) {
    let spec = PolicySpec::new(example, component(crate_name))
        .with_settings(settings)
        .allowed_to_mutate(true);
    let env = Environment::load(&engine(), [spec], Some(&shared_cache()))
        .await
        .unwrap();
    for (fixture, expect) in cases {
        let path = format!("examples/{example}/test_data/{fixture}");
        let body = std::fs::read(repo_file(&path)).unwrap();
        let request = parse_review_or_request(&body).unwrap();
        let verdict = env.validate(example, &request).await.unwrap().response;
        match expect {
            Expect::Accept => {
                assert!(verdict.allowed, "{path}: {verdict:?}");
                assert_eq!(verdict.mutated_object, None, "{path}");
            }
            Expect::Reject { message, code } => {
                assert!(!verdict.allowed, "{path}: {verdict:?}");
                assert_eq!(verdict.message.as_deref(), Some(*message), "{path}");
                assert_eq!(verdict.code, *code, "{path}");
            }
            Expect::Mutate { into } => {
                assert!(verdict.allowed, "{path}: {verdict:?}");
                let mutated: Value =
                    serde_json::from_str(verdict.mutated_object.as_deref().unwrap()).unwrap();
                assert_eq!(
                    mutated,
                    json_file(format!("examples/{example}/test_data/{into}")),
                    "{path}"
                );
                // And the host turns it into a patch that reproduces it.
                let response = AdmissionResponse::from_verdict(
                    &request.uid,
                    verdict,
                    request.object.as_deref(),
                )
                .unwrap();
                assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"), "{path}");
            }
        }
    }
}

#[tokio::test]
async fn disallow_service_loadbalancer_gives_kubewardens_verdicts() {
    check(
        "disallow_service_loadbalancer",
        "disallow-service-loadbalancer",
        json!({}),
        &[
            (
                "service_loadbalancer.json",
                Expect::Reject {
                    message: "Service of type LoadBalancer are not allowed",
                    code: None,
                },
            ),
            ("service-clusterip.json", Expect::Accept),
        ],
    )
    .await;
}

#[tokio::test]
async fn required_annotations_adds_or_rejects() {
    check(
        "required_annotations",
        "required-annotations",
        json_file("examples/required-annotations/test_data/settings.json"),
        &[
            (
                "pod_without_annotations.json",
                Expect::Mutate {
                    into: "pod_without_annotations.mutated.json",
                },
            ),
            (
                "deployment_without_required_annotation.json",
                Expect::Mutate {
                    into: "deployment_without_required_annotation.mutated.json",
                },
            ),
            ("pod_with_required_annotation.json", Expect::Accept),
            (
                "pod_with_wrong_annotation.json",
                Expect::Reject {
                    message: r#"annotation "fluxcd.io/cat" must be "felix", found "tom""#,
                    code: Some(400),
                },
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn trusted_images_checks_registries_and_digests() {
    check(
        "trusted_images",
        "trusted-images",
        json_file("examples/trusted-images/test_data/settings.json"),
        &[
            ("pod_trusted_images.json", Expect::Accept),
            ("deployment_pinned_images.json", Expect::Accept),
            ("cronjob_unpinned_image.json", Expect::Accept),
            ("pod_ephemeral_debug_container.json", Expect::Accept),
            (
                "pod_untrusted_image.json",
                Expect::Reject {
                    message: r#"container "miner": image "evil.example.net/tools/miner:latest" comes from registry "evil.example.net", which is not allowed (allowed registries: "registry.example.com", "docker.io")"#,
                    code: Some(403),
                },
            ),
            (
                "pod_invalid_image.json",
                Expect::Reject {
                    message: r#"container "web": invalid image reference "registry.example.com/Team/web:1.4.2": repository name "Team/web" must be lowercase"#,
                    code: Some(400),
                },
            ),
        ],
    )
    .await;
    check(
        "trusted_images",
        "trusted-images",
        json_file("examples/trusted-images/test_data/settings_require_digest.json"),
        &[
            ("deployment_pinned_images.json", Expect::Accept),
            (
                "cronjob_unpinned_image.json",
                Expect::Reject {
                    message: r#"container "backup": image "registry.example.com/ops/backup:2.0" is not pinned by digest (`@sha256:` and 64 hex digits)"#,
                    code: Some(403),
                },
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn sleeping_sleeps_as_configured_or_as_annotated() {
    check(
        "sleeping",
        "sleeping",
        json_file("examples/sleeping/test_data/settings.json"),
        &[
            ("pod.json", Expect::Accept),
            (
                "pod_with_invalid_sleep_annotation.json",
                Expect::Reject {
                    message: "annotation \"portcullis.sleep_duration_milliseconds\" must be a decimal number of \
                              milliseconds (at most 18446744073709551615), found \"soon\"",
                    code: Some(400),
                },
            ),
        ],
    )
    .await;

    // The per-request annotation overrides the configured nap, and the nap is real.
    let spec = PolicySpec::new("sleeping", component("sleeping"))
        .with_settings(json!({"sleepMilliseconds": 300}));
    let env = Environment::load(&engine(), [spec], Some(&shared_cache()))
        .await
        .unwrap();
    let mut request = json_file("examples/sleeping/test_data/pod.json");
    let started = Instant::now();
    let verdict = env
        .validate(
            "sleeping",
            &parse_review_or_request(request.to_string().as_bytes()).unwrap(),
        )
        .await
        .unwrap();
    assert!(verdict.response.allowed);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    request["object"]["metadata"]["annotations"] =
        json!({"portcullis.sleep_duration_milliseconds": "1"});
    let started = Instant::now();
    env.validate(
        "sleeping",
        &parse_review_or_request(request.to_string().as_bytes()).unwrap(),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}
