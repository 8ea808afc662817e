//! What every runtime shares: the call made into a policy ([`Call`]), what
//! it returns ([`Returned`]), who makes it ([`PolicyContext`]), and how a
//! call fails before the evaluation classifies the failure (`Failure`,
//! `GuestFault`).
//!
//! They live here, with the runtimes, so that the evaluation depends on the
//! runtimes and never the other way round.

use std::sync::Arc;

use crate::bindings::{AdmissionRequest, PolicyMetadata, ValidationResponse};
use crate::capabilities::{Capabilities, Grants};

/// Who is calling a policy, and what it may ask of the host.
pub struct PolicyContext<'a> {
    /// The policy's id, for logs.
    pub id: &'a str,
    /// What it has been granted.
    pub grants: Arc<Grants>,
    /// The host capabilities of the engine.
    pub capabilities: Arc<Capabilities>,
}

/// A call into a policy.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// `metadata()`.
    Metadata,
    /// `validate-settings(settings)`.
    ValidateSettings {
        /// Settings as JSON text.
        settings: &'a str,
    },
    /// `validate(request, settings)`.
    Validate {
        /// The admission request.
        request: &'a AdmissionRequest,
        /// Settings as JSON text.
        settings: &'a str,
    },
    /// `validate-raw(document, settings)`.
    ValidateRaw {
        /// The raw JSON document.
        document: &'a str,
        /// Settings as JSON text.
        settings: &'a str,
    },
}

/// What a [`Call`] returned.
#[derive(Debug, Clone)]
pub enum Returned {
    /// From [`Call::Metadata`].
    Metadata(PolicyMetadata),
    /// From [`Call::ValidateSettings`].
    Settings(Result<(), String>),
    /// From [`Call::Validate`] and [`Call::ValidateRaw`].
    Verdict(ValidationResponse),
}

impl Returned {
    /// Bytes of text the policy returned: what the response limit bounds.
    pub fn size(&self) -> usize {
        match self {
            Returned::Metadata(metadata) => {
                metadata.description.len()
                    + metadata
                        .rules
                        .iter()
                        .flat_map(|r| {
                            r.api_groups
                                .iter()
                                .chain(&r.api_versions)
                                .chain(&r.resources)
                        })
                        .map(String::len)
                        .sum::<usize>()
            }
            Returned::Settings(result) => result.as_ref().err().map_or(0, String::len),
            Returned::Verdict(verdict) => {
                verdict.message.as_ref().map_or(0, String::len)
                    + verdict.mutated_object.as_ref().map_or(0, String::len)
                    + verdict.warnings.iter().map(String::len).sum::<usize>()
                    + verdict
                        .audit_annotations
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            }
        }
    }
}

/// Why a call produced no result, before the evaluation classifies it (into
/// a timeout, out of memory, a trap, ...).
pub(crate) enum Failure {
    /// Creating the instance failed.
    Instantiate(wasmtime::Error),
    /// The call trapped (or a host function ended it with a [`GuestFault`]).
    Call(wasmtime::Error),
    /// The policy reported an error of its own.
    Policy(String),
    /// The policy's answer breaks the protocol.
    Protocol(String),
    /// The policy broke a rule of the host.
    Fault(GuestFault),
}

/// A policy breaking the host's rules inside a host function: ends the
/// evaluation (as a trap would) with a precise error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuestFault {
    /// It sent more than the response limit allows.
    #[error("policy output too large: {size} bytes (limit: {limit} bytes)")]
    TooLarge {
        /// Bytes sent.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// It broke the protocol (a pointer outside its memory, a second
    /// response, text that is not UTF-8).
    #[error("{0}")]
    Protocol(String),
}

impl GuestFault {
    /// A protocol violation, as the error a host function returns.
    pub(crate) fn protocol(message: impl Into<String>) -> wasmtime::Error {
        GuestFault::Protocol(message.into()).into()
    }
}
