//! Talking to the API server: the client, typed objects, and calls that
//! suspend their evaluation and give up at the deadline they are given.

use std::future::Future;
use std::path::Path;
use std::time::Instant;

use kube::api::DynamicObject;
use kube::core::TypeMeta;
use kube::discovery::ApiResource;

use super::ClusterError;
use crate::capabilities::kubernetes::KubeError;

/// `object` with the `apiVersion` and `kind` of `api` if it came without
/// them, as the items of a list do: policies read typed objects.
pub fn typed(mut object: DynamicObject, api: &ApiResource) -> DynamicObject {
    object.types.get_or_insert_with(|| TypeMeta {
        api_version: api.api_version.clone(),
        kind: api.kind.clone(),
    });
    object
}

/// The client: `kubeconfig` when given; else in-cluster when run in a pod;
/// else what `KUBECONFIG` or `~/.kube/config` says.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?
        }
        // In a pod, its service account; elsewhere what kubectl would use.
        // (kube's `Config::infer` tries a kubeconfig first: a file left in
        // an image must not win over the pod's own identity.)
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => kube::Config::from_kubeconfig(&Default::default())
                .await
                .map_err(|kubeconfig| {
                    ClusterError::Config(format!(
                        "not in a cluster ({in_cluster}) and no kubeconfig ({kubeconfig}): \
                         give --kubeconfig, or set KUBECONFIG"
                    ))
                })?,
        },
    };
    kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))
}

pub(super) fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The typed error of a failed API call.
pub(super) fn api_error(error: kube::Error) -> KubeError {
    match error {
        kube::Error::Api(status) => match status.code {
            404 => KubeError::NotFound(status.message),
            401 | 403 => KubeError::Forbidden(format!(
                "the API server refused Portcullis: {} (see the RBAC `portcullis webhook-config \
                 --rbac` prints)",
                status.message
            )),
            400 | 422 => KubeError::Invalid(status.message),
            code => KubeError::Unavailable(format!(
                "the API server answered {code}: {}",
                status.message
            )),
        },
        other => KubeError::Unavailable(format!("cannot reach the API server: {other}")),
    }
}

/// Runs `call` against the API server on the `io` runtime until `deadline`
/// (the evaluation, suspended meanwhile, holds no worker); a call given up
/// on (or whose evaluation was dropped) is aborted, not left running.
pub(super) async fn ask<T: Send + 'static>(
    io: &tokio::runtime::Handle,
    deadline: Instant,
    call: impl Future<Output = Result<T, kube::Error>> + Send + 'static,
) -> Result<T, KubeError> {
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut call = AbortOnDrop(io.spawn(call));
    let answer = tokio::time::timeout_at(deadline.into(), &mut call.0).await;
    match answer {
        Ok(Ok(answer)) => answer.map_err(api_error),
        Ok(Err(failed)) => Err(KubeError::Unavailable(format!(
            "the call to the API server failed: {failed}"
        ))),
        Err(_elapsed) => Err(KubeError::Unavailable(
            "the API server did not answer in time (the policy's evaluation deadline)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn api_errors_become_typed_errors() {
        let status = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..Default::default()
            }))
        };
        assert_eq!(api_error(status(404)), KubeError::NotFound("m".into()));
        assert!(matches!(api_error(status(403)), KubeError::Forbidden(m) if m.contains("--rbac")));
        assert_eq!(api_error(status(422)), KubeError::Invalid("m".into()));
        assert!(matches!(api_error(status(503)), KubeError::Unavailable(_)));
    }

    /// What `serve` does: the cluster is set up on the I/O runtime, and
    /// evaluations (which run on a runtime without I/O) read it. The API

    #[tokio::test]
    async fn a_call_past_its_deadline_is_unavailable_in_time() {
        let started = Instant::now();
        let answer: Result<(), KubeError> = ask(
            &tokio::runtime::Handle::current(),
            Instant::now() + Duration::from_millis(50),
            std::future::pending::<Result<(), kube::Error>>(),
        )
        .await;
        assert!(matches!(answer, Err(KubeError::Unavailable(m)) if m.contains("in time")));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
