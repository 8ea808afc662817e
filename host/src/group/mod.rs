//! Policy groups: several policies combined by a boolean expression into
//! one verdict (Kubewarden's `policies.yml` groups).

pub mod expression;

pub use expression::{Expression, ExpressionError, is_member_name};
