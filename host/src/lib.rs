//! Portcullis: a Kubernetes admission policy engine that runs policies as
//! WebAssembly components — and Kubewarden's policies, unchanged.
//!
//! A request flows one way through the modules:
//! [`policy`] (what the operator declared) → [`source`] (each module from
//! its registry, URL or file, verified, into the download store) →
//! [`environment`] (one compiled, pre-linked policy per unique digest,
//! prepared by the [`engine`]: a component of the `portcullis:policy` world
//! or a Kubewarden module, each kind in its room under [`runtime`]) →
//! [`evaluation`] (a fresh store and
//! instance per call, under [`limits`], host calls gated by the policy's
//! grants of [`capabilities`] — logging, and Kubernetes reads answered from
//! watch-based caches by async host functions that do not hold a worker
//! while they wait) → [`admission`] (AdmissionReview in,
//! AdmissionResponse out), with [`enforcement`] applying the declared mode
//! and mutation permission, and [`server`] serving it all over HTTP(S)
//! behind a network edge that bounds what any client can hold. A
//! [`group`] combines several policies by an expression into one verdict;
//! a running server's configuration is swapped whole by a reload
//! ([`server::Reloader`]); the [`audit`] runs the same environment over the
//! objects already in a cluster and publishes PolicyReports.
//!
//! The layers, lowest first: [`store`], [`cache`], [`limits`], [`digest`]
//! and [`bindings`]; [`capabilities`]; [`runtime`] (a room per kind of
//! policy); [`engine`] (the composition root, which links every runtime and
//! capability); [`evaluation`]; [`environment`], [`group`] and
//! [`enforcement`]; [`server`] and [`audit`]. Each uses only those below it
//! (docs/architecture.md has the picture; `tests/layers.rs` checks it).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use portcullis::{Engine, Environment, Limits, PolicySpec};
//!
//! let engine = Engine::new(Limits::default())?;
//! let spec = PolicySpec::new("privileged", "pod_privileged.wasm");
//! let env = Environment::load(&engine, [spec], None).await?;
//! let request = portcullis::admission::parse_review_or_request(&std::fs::read("request.json")?)?;
//! let verdict = env.validate("privileged", &request).await?;
//! println!("allowed: {}", verdict.response.allowed);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod admission;
pub mod audit;
pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod config;
pub mod digest;
pub mod enforcement;
pub mod engine;
pub mod environment;
pub mod evaluation;
pub mod group;
pub mod limits;
pub mod logging;
pub mod policy;
pub mod runtime;
pub mod server;
pub mod source;
pub mod store;

pub use cache::CompiledCache;
pub use engine::Engine;
pub use environment::{Environment, EvaluateError, LoadError, LoadStats, Policy, Verdict};
pub use group::Group;
pub use limits::{LimitOverrides, Limits};
pub use policy::{Configuration, GroupSpec, MemberSpec, PolicyMode, PolicySpec};
