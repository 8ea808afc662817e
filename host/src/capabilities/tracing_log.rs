//! `tracing/log`: a policy's log line, re-emitted as its own (never gated).

use serde::Deserialize;

use super::{CallContext, CallFuture, Capability};

/// Kubewarden's logging capability.
pub(super) struct TracingLog;

/// What Kubewarden's SDKs send: a level, a message, and any other fields
/// (source location, structured key-values).
#[derive(Deserialize)]
struct Event {
    level: String,
    message: String,
    #[serde(flatten)]
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Capability for TracingLog {
    fn namespace(&self) -> &'static str {
        "tracing"
    }

    fn operations(&self) -> &'static [&'static str] {
        &["log"]
    }

    fn call<'a>(
        &'a self,
        context: &'a CallContext<'a>,
        _: &'a str,
        payload: &'a [u8],
    ) -> CallFuture<'a> {
        Box::pin(async move {
            // A line the host cannot read is dropped with a warning but does
            // not fail the policy (as in Kubewarden: logging never fails).
            match serde_json::from_slice::<Event>(payload) {
                Ok(event) => {
                    let level = match event.level.as_str() {
                        "trace" => tracing::Level::TRACE,
                        "debug" => tracing::Level::DEBUG,
                        "warn" | "warning" => tracing::Level::WARN,
                        "error" | "critical" => tracing::Level::ERROR,
                        _ => tracing::Level::INFO,
                    };
                    let mut line = event.message;
                    for (key, value) in &event.fields {
                        match value {
                            serde_json::Value::String(text) => {
                                line.push_str(&format!(" {key}={text}"))
                            }
                            other => line.push_str(&format!(" {key}={other}")),
                        }
                    }
                    context.output.push_event(level, line);
                }
                Err(error) => tracing::warn!(
                    policy = context.policy_id,
                    %error,
                    "cannot read a log event the policy sent"
                ),
            }
            Ok(Vec::new())
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
