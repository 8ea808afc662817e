//! Everything a typical policy uses, in one import:
//! `use portcullis_sdk::prelude::*;`.

pub use crate::json::RawJson;
pub use crate::metadata::{Metadata, Rule};
pub use crate::policy::Policy;
pub use crate::request::{AdmissionRequest, Operation};
pub use crate::settings::{NoSettings, Settings};
pub use crate::verdict::{Verdict, accept, mutate, reject, reject_with_code};
