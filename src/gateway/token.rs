//! The gateway's own inbound token, compared in constant time (by the inbound auth check and
//! when stripping it from what is forwarded).

/// Constant-time comparison of the inbound token with the configured one.
///
/// `subtle`'s `ConstantTimeEq` (a well-reviewed crate, RustCrypto's dependency) rather than a
/// hand-written fold: it guards the comparison with optimisation barriers so the compiler cannot
/// turn it back into an early-exit loop. Only the length is revealed by timing (it returns at
/// once on a length mismatch), which tells an attacker nothing useful about a random token.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
    }
}
