//! Identifiers: request ids that make a retried write apply once.

/// A fresh random request id.
pub fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
