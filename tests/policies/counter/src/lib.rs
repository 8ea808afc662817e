//! A test-only policy that counts its `validate` calls in a `static`.
//!
//! Every call increments the counter and accepts with the audit annotation
//! `("counter", "<value after the increment>")`, a warning saying the same,
//! and a line on stderr. The host creates a fresh
//! component instance for every request, so it must always report `1`; the
//! host's isolation test checks exactly that.

use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_sdk::prelude::*;

static VALIDATIONS: AtomicU64 = AtomicU64::new(0);

/// Accepts everything, reporting how many times this instance validated.
pub struct Counter;

impl Policy for Counter {
    type Settings = NoSettings;

    fn metadata() -> Metadata {
        Metadata::new(
            "Test policy: accepts every request, annotated with the number of validations \
             this instance has performed.",
        )
        .rule(
            Rule::new()
                .api_groups(["*"])
                .api_versions(["*"])
                .resources(["*"])
                .operations([
                    Operation::Create,
                    Operation::Update,
                    Operation::Delete,
                    Operation::Connect,
                ]),
        )
    }

    fn validate(_request: &AdmissionRequest, _settings: &NoSettings) -> Verdict {
        let count = VALIDATIONS.fetch_add(1, Ordering::SeqCst) + 1;
        // Guest logging is plain stderr; the host re-emits it under the policy id.
        eprintln!("counter: validation number {count}");
        accept()
            .with_audit_annotation("counter", count.to_string())
            .with_warning(format!("this instance has validated {count} request(s)"))
    }
}

portcullis_sdk::export_policy!(Counter);
