//! Pure rules of the identity service. No I/O; the clock is passed in.

pub mod account;
pub mod email;
pub mod links;
pub mod lockout;
pub mod password;
pub mod user_id;
