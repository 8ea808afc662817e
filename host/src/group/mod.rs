//! Policy groups: several policies combined by a boolean expression into
//! one verdict (Kubewarden's `policies.yml` groups).
//!
//! The [`expression`] decides which members run; a loaded [`Group`]
//! runs them ([`evaluation`]); `enforcement::decide_group` turns the
//! result into one response, with the group's message and a cause per
//! rejecting member.

pub mod evaluation;
pub mod expression;

pub use evaluation::{Group, GroupVerdict, Input, MUTATION_NOT_ALLOWED, MemberRun};
pub use expression::{Expression, ExpressionError, Step, is_member_name};
