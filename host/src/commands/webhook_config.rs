//! `portcullis webhook-config`: the ValidatingWebhookConfiguration and
//! MutatingWebhookConfiguration that send the API server's requests to
//! `portcullis serve`, one webhook per policy, with the rules each component
//! declares in its `metadata`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use portcullis::bindings::{Operation, PolicyMetadata, Rule};
use portcullis::{Engine, Environment, Group, Limits};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::cli::{CacheArgs, PolicySource};

/// Arguments of `portcullis webhook-config`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("endpoint").required(true).args(["url", "service"])))]
pub struct WebhookConfigArgs {
    /// The policies `portcullis serve` runs.
    #[command(flatten)]
    pub source: PolicySource,
    /// Base URL the API server reaches Portcullis at (`https://host:port`); each
    /// policy's webhook calls `<url>/validate/<policy id>`.
    #[arg(long)]
    pub url: Option<String>,
    /// Name of the Service in front of Portcullis (in --namespace), instead of --url.
    #[arg(long)]
    pub service: Option<String>,
    /// Port of that Service.
    #[arg(long, default_value_t = 443, requires = "service")]
    pub service_port: u16,
    /// PEM CA bundle that signed Portcullis's serving certificate; becomes each webhook's `caBundle`.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// The namespace Portcullis runs in: never sent to the webhooks, so the
    /// policies cannot block Portcullis's own pods.
    #[arg(long, default_value = "portcullis")]
    pub namespace: String,
    /// Name of the two webhook configurations; also part of each webhook's name.
    #[arg(long, default_value = "portcullis")]
    pub name: String,
    /// The server's default evaluation timeout, in seconds, as given to
    /// `portcullis serve --policy-timeout`; sets `timeoutSeconds` of the
    /// policies without `timeoutEvalSeconds`.
    #[arg(long, env = "PORTCULLIS_POLICY_TIMEOUT", default_value_t = 2)]
    pub policy_timeout: u64,
    /// Also print the ClusterRole and ClusterRoleBinding the context-aware
    /// policies need (`get`, `list`, `watch` on exactly the granted resources),
    /// bound to --service-account in --namespace.
    #[arg(long)]
    pub rbac: bool,
    /// The service account `portcullis serve` runs as (for --rbac).
    #[arg(long, default_value = "portcullis", requires = "rbac")]
    pub service_account: String,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The API server waits `timeoutSeconds` for a webhook; Portcullis should
/// answer first, with its own timeout message, even when the request waited
/// for a worker. This much is added to the policy's evaluation timeout.
const TIMEOUT_HEADROOM: Duration = Duration::from_secs(2);

/// The largest `timeoutSeconds` the API server accepts.
const MAX_WEBHOOK_TIMEOUT_SECONDS: u64 = 30;

/// Set on namespaces by the API server (Kubernetes ≥ 1.21) and in
/// `deploy/00-namespace.yaml` (so older clusters match too).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Prints both webhook configurations as one multi-document YAML stream.
pub async fn webhook_config(args: WebhookConfigArgs) -> anyhow::Result<ExitCode> {
    let endpoint = Endpoint::from_args(&args)?;
    let ca_bundle = ca_bundle(&args.ca_file)?;
    let configuration = super::policies(&args.source)?;
    let configuration = super::fetch_remote(configuration, &args.source, &args.cache).await?;
    let rbac = match args.rbac {
        true => {
            // Group members read the cluster as any policy does.
            let readers: Vec<_> = configuration.specs().cloned().collect();
            super::rbac::rbac(&readers, &args.name, &args.namespace, &args.service_account)
        }
        false => None,
    };
    let engine = Engine::new(Limits {
        timeout: Duration::from_secs(args.policy_timeout.max(1)),
        ..Limits::default()
    })?;
    // Loading runs each component's `metadata` and `validate-settings`, so a
    // configuration `serve` would refuse produces no webhooks either.
    let cache = super::cache(&args.cache);
    let environment =
        Environment::load_configuration(&engine, configuration, cache.as_ref()).await?;
    let generator = Generator {
        endpoint,
        ca_bundle,
        namespace: args.namespace.clone(),
        name: args.name.clone(),
    };
    let (validating, mutating) = generator.configurations(&environment)?;
    let mut documents = vec![
        serde_saphyr::to_string(&validating)?,
        serde_saphyr::to_string(&mutating)?,
    ];
    if let Some((role, binding)) = rbac {
        documents.push(format!(
            "# What the context-aware policies read: bind it to the service account of `serve`.\n{}",
            serde_saphyr::to_string(&role)?
        ));
        documents.push(serde_saphyr::to_string(&binding)?);
    } else if args.rbac {
        eprintln!("no policy reads the cluster: no RBAC is needed");
    }
    let text = documents.join("---\n");
    print!("# Generated by `portcullis webhook-config`: one webhook per policy and group.\n{text}");
    Ok(ExitCode::SUCCESS)
}

/// The `caBundle`: the file's bytes, once they are known to hold certificates.
fn ca_bundle(path: &Path) -> anyhow::Result<ByteString> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("--ca-file {}", path.display()))?;
    if certificates.is_empty() {
        bail!("--ca-file {}: no PEM certificate found", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
    Ok(ByteString(bytes))
}

/// Where the API server sends the requests.
#[derive(Debug, Clone)]
enum Endpoint {
    /// A base URL; the policy's path is appended.
    Url(String),
    /// A Service in the webhook's namespace.
    Service { name: String, port: u16 },
}

impl Endpoint {
    fn from_args(args: &WebhookConfigArgs) -> anyhow::Result<Self> {
        match (&args.url, &args.service) {
            (Some(url), None) => Self::url(url),
            (None, Some(service)) => Ok(Self::Service {
                name: service.clone(),
                port: args.service_port,
            }),
            // clap's `endpoint` group makes exactly one of them present.
            _ => unreachable!("clap requires exactly one of --url and --service"),
        }
    }

    fn url(url: &str) -> anyhow::Result<Self> {
        // The API server calls webhooks over HTTPS only, and refuses URLs with
        // a query or fragment.
        let Some(rest) = url.strip_prefix("https://") else {
            bail!("--url {url}: must start with https:// (the API server calls webhooks over TLS)");
        };
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#']) {
            bail!("--url {url}: expected https://host[:port][/path], without query or fragment");
        }
        Ok(Self::Url(url.trim_end_matches('/').to_owned()))
    }

    fn client_config(&self, namespace: &str, policy: &str, ca: &ByteString) -> WebhookClientConfig {
        let path = format!("/validate/{policy}");
        match self {
            Self::Url(base) => WebhookClientConfig {
                url: Some(format!("{base}{path}")),
                ca_bundle: Some(ca.clone()),
                service: None,
            },
            Self::Service { name, port } => WebhookClientConfig {
                url: None,
                ca_bundle: Some(ca.clone()),
                service: Some(ServiceReference {
                    name: name.clone(),
                    namespace: namespace.to_owned(),
                    path: Some(path),
                    port: Some(i32::from(*port)),
                }),
            },
        }
    }
}

/// Builds the configurations from loaded policies.
struct Generator {
    endpoint: Endpoint,
    ca_bundle: ByteString,
    namespace: String,
    name: String,
}

/// What one webhook shares between its validating and mutating form.
struct Common {
    name: String,
    client_config: WebhookClientConfig,
    rules: Vec<RuleWithOperations>,
    namespace_selector: LabelSelector,
    timeout_seconds: i32,
}

impl Generator {
    fn configurations(
        &self,
        environment: &Environment,
    ) -> anyhow::Result<(ValidatingWebhookConfiguration, MutatingWebhookConfiguration)> {
        let mut validating = Vec::new();
        let mut mutating = Vec::new();
        for policy in environment.policies() {
            let metadata = policy.metadata();
            let allowed = policy.spec().allowed_to_mutate;
            let placement = placement(metadata, allowed);
            match placement {
                Placement::None => {
                    tracing::warn!(policy = policy.id(), "no admission rules: no webhook");
                    continue;
                }
                Placement::Validating if allowed => tracing::warn!(
                    policy = policy.id(),
                    "allowedToMutate, but the component says it never mutates: validating webhook"
                ),
                Placement::Validating if metadata.mutating => tracing::warn!(
                    policy = policy.id(),
                    "the component may mutate but allowedToMutate is false: \
                     requests it would change are rejected"
                ),
                _ => {}
            }
            if placement == Placement::Mutating && covers_review_objects(&metadata.rules) {
                tracing::warn!(
                    policy = policy.id(),
                    "this mutating policy's rules cover SubjectAccessReviews and TokenReviews, \
                     which the API server refuses with any metadata: a patch to one breaks \
                     `kubectl auth can-i` and every policy's `can_i`; list the groups it mutates \
                     instead of `*`"
                );
            }
            let common = self.common(policy.id(), metadata, policy.timeout())?;
            match placement {
                Placement::Mutating => mutating.push(common.mutating()),
                _ => validating.push(common.validating()),
            }
        }
        // A group never mutates: its webhook validates, on every request any
        // member's rules cover.
        for group in environment.groups() {
            let metadata = group_metadata(group);
            if metadata.rules.is_empty() {
                tracing::warn!(
                    policy = group.id(),
                    "no member has admission rules: no webhook"
                );
                continue;
            }
            validating.push(
                self.common(group.id(), &metadata, group.timeout())?
                    .validating(),
            );
        }
        let metadata = ObjectMeta {
            name: Some(self.name.clone()),
            labels: Some(
                [
                    ("app.kubernetes.io/name", "portcullis"),
                    ("app.kubernetes.io/managed-by", "portcullis-webhook-config"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..ObjectMeta::default()
        };
        // Both lists are always present, even empty, so re-applying the output
        // after a policy is removed also removes its webhook.
        Ok((
            ValidatingWebhookConfiguration {
                metadata: metadata.clone(),
                webhooks: Some(validating),
            },
            MutatingWebhookConfiguration {
                metadata,
                webhooks: Some(mutating),
            },
        ))
    }

    fn common(
        &self,
        id: &str,
        metadata: &PolicyMetadata,
        timeout: Duration,
    ) -> anyhow::Result<Common> {
        if !is_dns_label(id) {
            bail!(
                "policy `{id}`: its id is part of the webhook's name, so it must be a DNS label \
                 (lower-case letters, digits and `-`, at most 63 characters)"
            );
        }
        Ok(Common {
            name: format!("{id}.{}.admission", self.name),
            client_config: self
                .endpoint
                .client_config(&self.namespace, id, &self.ca_bundle),
            rules: metadata.rules.iter().map(rule).collect(),
            namespace_selector: LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: NAMESPACE_NAME_LABEL.to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(vec![self.namespace.clone()]),
                }]),
                match_labels: None,
            },
            timeout_seconds: webhook_timeout_seconds(timeout),
        })
    }
}

impl Common {
    fn validating(self) -> ValidatingWebhook {
        ValidatingWebhook {
            name: self.name,
            client_config: self.client_config,
            rules: Some(self.rules),
            namespace_selector: Some(self.namespace_selector),
            timeout_seconds: Some(self.timeout_seconds),
            failure_policy: Some("Fail".to_owned()),
            side_effects: "None".to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            match_policy: Some("Equivalent".to_owned()),
            ..ValidatingWebhook::default()
        }
    }

    fn mutating(self) -> MutatingWebhook {
        MutatingWebhook {
            name: self.name,
            client_config: self.client_config,
            rules: Some(self.rules),
            namespace_selector: Some(self.namespace_selector),
            timeout_seconds: Some(self.timeout_seconds),
            failure_policy: Some("Fail".to_owned()),
            side_effects: "None".to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            match_policy: Some("Equivalent".to_owned()),
            reinvocation_policy: Some("Never".to_owned()),
            ..MutatingWebhook::default()
        }
    }
}

/// A group's rules: every member's, each once (members by name).
fn group_metadata(group: &Group) -> PolicyMetadata {
    PolicyMetadata {
        rules: group.rules(),
        mutating: false,
        description: String::new(),
    }
}

/// Which configuration a policy's webhook belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// None: the component declares no admission rules, so it only serves
    /// `/validate_raw` and the API server has nothing to send it.
    None,
    /// The ValidatingWebhookConfiguration.
    Validating,
    /// The MutatingWebhookConfiguration.
    Mutating,
}

/// Mutating webhooks run one after another before the validating ones, which
/// run in parallel: only a policy that may mutate (`allowedToMutate`) and
/// does (the component's `mutating`) belongs there. A component that may
/// mutate without permission stays validating, where the host rejects the
/// requests it would change.
fn placement(metadata: &PolicyMetadata, allowed_to_mutate: bool) -> Placement {
    if metadata.rules.is_empty() {
        Placement::None
    } else if allowed_to_mutate && metadata.mutating {
        Placement::Mutating
    } else {
        Placement::Validating
    }
}

/// A component's rule in Kubernetes's spelling.
fn rule(rule: &Rule) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(rule.api_groups.clone()),
        api_versions: Some(rule.api_versions.clone()),
        resources: Some(rule.resources.clone()),
        operations: Some(
            rule.operations
                .iter()
                .map(|op| {
                    match op {
                        Operation::Create => "CREATE",
                        Operation::Update => "UPDATE",
                        Operation::Delete => "DELETE",
                        Operation::Connect => "CONNECT",
                    }
                    .to_owned()
                })
                .collect(),
        ),
        scope: Some("*".to_owned()),
    }
}

/// Whether `rules` send the API server's review objects to a webhook on
/// create. They are created with empty metadata and refused with any other,
/// so a mutating webhook that annotates "everything" breaks them.
fn covers_review_objects(rules: &[Rule]) -> bool {
    let names = |list: &[String], wanted: &[&str]| {
        list.iter()
            .any(|value| value == "*" || value == "*/*" || wanted.contains(&value.as_str()))
    };
    rules.iter().any(|rule| {
        rule.operations.contains(&Operation::Create)
            && names(
                &rule.api_groups,
                &["authorization.k8s.io", "authentication.k8s.io"],
            )
            && names(
                &rule.resources,
                &[
                    "subjectaccessreviews",
                    "localsubjectaccessreviews",
                    "selfsubjectaccessreviews",
                    "selfsubjectrulesreviews",
                    "tokenreviews",
                ],
            )
    })
}

/// The policy's evaluation timeout plus headroom, in whole seconds, at most
/// what the API server accepts.
fn webhook_timeout_seconds(evaluation: Duration) -> i32 {
    let total = evaluation + TIMEOUT_HEADROOM;
    let seconds = total.as_secs() + u64::from(total.subsec_nanos() > 0);
    if seconds > MAX_WEBHOOK_TIMEOUT_SECONDS {
        tracing::warn!(
            seconds,
            "evaluation timeout too long for a webhook: the API server may give up first"
        );
    }
    seconds.min(MAX_WEBHOOK_TIMEOUT_SECONDS) as i32
}

/// RFC 1123 label: what a segment of a webhook's name may be.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_get_headroom_round_up_and_are_capped() {
        assert_eq!(webhook_timeout_seconds(Duration::from_secs(2)), 4);
        assert_eq!(webhook_timeout_seconds(Duration::from_millis(1500)), 4);
        assert_eq!(webhook_timeout_seconds(Duration::from_secs(28)), 30);
        assert_eq!(webhook_timeout_seconds(Duration::from_secs(60)), 30);
    }

    #[test]
    fn only_dns_labels_name_webhooks() {
        for good in ["privileged-pods", "a", "p2", &"x".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Caps",
            "under_score",
            "dot.ted",
            &"x".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn urls_must_be_https_without_query() {
        assert!(matches!(
            Endpoint::url("https://127.0.0.1:8443/").unwrap(),
            Endpoint::Url(u) if u == "https://127.0.0.1:8443"
        ));
        for bad in [
            "http://127.0.0.1",
            "https://",
            "https:///x",
            "https://h/?a=1",
            "https://h/#f",
        ] {
            assert!(Endpoint::url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_allowed_mutating_components_are_mutating_and_ruleless_ones_have_no_webhook() {
        let metadata = |rules: usize, mutating| PolicyMetadata {
            rules: vec![
                Rule {
                    api_groups: vec![String::new()],
                    api_versions: vec!["v1".into()],
                    resources: vec!["pods".into()],
                    operations: vec![Operation::Create],
                };
                rules
            ],
            mutating,
            description: String::new(),
        };
        assert_eq!(placement(&metadata(1, true), true), Placement::Mutating);
        assert_eq!(placement(&metadata(1, true), false), Placement::Validating);
        assert_eq!(placement(&metadata(1, false), true), Placement::Validating);
        assert_eq!(placement(&metadata(1, false), false), Placement::Validating);
        assert_eq!(placement(&metadata(0, true), true), Placement::None);
        assert_eq!(placement(&metadata(0, false), false), Placement::None);
    }

    #[test]
    fn catch_all_and_review_rules_cover_review_objects_and_others_do_not() {
        let rule = |groups: &[&str], resources: &[&str], operation| Rule {
            api_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            api_versions: vec!["*".into()],
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            operations: vec![operation],
        };
        let covers = |rule| covers_review_objects(&[rule]);
        assert!(covers(rule(&["*"], &["*"], Operation::Create)));
        assert!(covers(rule(&["*"], &["*/*"], Operation::Create)));
        assert!(covers(rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            Operation::Create
        )));
        assert!(covers(rule(
            &["authentication.k8s.io"],
            &["*"],
            Operation::Create
        )));
        assert!(!covers(rule(&["*"], &["*"], Operation::Update)));
        assert!(!covers(rule(&["", "apps"], &["*"], Operation::Create)));
        assert!(!covers(rule(&["*"], &["pods"], Operation::Create)));
    }

    #[test]
    fn rules_keep_groups_versions_resources_and_spell_operations_as_kubernetes() {
        let converted = rule(&Rule {
            api_groups: vec!["apps".into()],
            api_versions: vec!["v1".into()],
            resources: vec!["deployments".into(), "deployments/scale".into()],
            operations: vec![
                Operation::Create,
                Operation::Update,
                Operation::Delete,
                Operation::Connect,
            ],
        });
        assert_eq!(converted.api_groups.unwrap(), ["apps"]);
        assert_eq!(converted.api_versions.unwrap(), ["v1"]);
        assert_eq!(
            converted.resources.unwrap(),
            ["deployments", "deployments/scale"]
        );
        assert_eq!(
            converted.operations.unwrap(),
            ["CREATE", "UPDATE", "DELETE", "CONNECT"]
        );
    }
}
