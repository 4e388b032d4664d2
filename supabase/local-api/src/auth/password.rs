//! Password policy and bcrypt hashing.
//!
//! bcrypt because the seed creates users with pgcrypto's `crypt(pw, gen_salt('bf'))` (`$2a$`)
//! and GoTrue itself stores bcrypt; both must verify here. Hashing is CPU-bound for tens of
//! milliseconds, so it runs on the blocking pool rather than stalling the async workers.

use std::sync::OnceLock;

use super::error::AuthError;

/// GoTrue's default minimum password length.
pub const MIN_PASSWORD_LEN: usize = 6;
/// bcrypt only reads the first 72 bytes.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Refuse passwords GoTrue would refuse.
pub fn check_policy(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::weak_password(MIN_PASSWORD_LEN));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::password_too_long());
    }
    Ok(())
}

/// Hash for storage in `auth.users.encrypted_password`.
pub async fn hash(password: String, cost: u32) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| AuthError::unexpected(format!("hashing task failed: {e}")))?
        .map_err(|e| AuthError::unexpected(format!("hashing failed: {e}")))
}

/// Check `password` against `stored`; a missing or unparsable hash never matches.
///
/// With no stored hash (unknown email) a dummy hash is checked anyway, so response time does
/// not tell whether an account exists.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let stored = stored.unwrap_or_else(|| dummy_hash().to_string());
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &stored).unwrap_or(false))
        .await
        .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        bcrypt::hash("not-a-real-password", bcrypt::DEFAULT_COST)
            // Hashing a constant cannot fail in practice; an empty hash still never matches.
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn our_hashes_and_pgcrypto_hashes_verify() {
        let ours = hash("correct horse".into(), 4).await.unwrap();
        assert!(verify("correct horse".into(), Some(ours.clone())).await);
        assert!(!verify("wrong horse".into(), Some(ours)).await);
        // Produced by `select crypt('haven-demo-password', gen_salt('bf'))` (pgcrypto, $2a$),
        // which is how the seed creates the demo user.
        let pgcrypto = "$2a$06$womEI/0T8C0IflIIQuEo3uSBqi.NZUqwEHLeJx597z8nk62fZte3q".to_string();
        assert!(verify("haven-demo-password".into(), Some(pgcrypto.clone())).await);
        assert!(!verify("haven-demo-passwort".into(), Some(pgcrypto)).await);
    }

    #[tokio::test]
    async fn unknown_users_and_garbage_hashes_never_match() {
        assert!(!verify("anything".into(), None).await);
        assert!(!verify("anything".into(), Some("not-bcrypt".into())).await);
    }

    #[test]
    fn policy_matches_gotrue() {
        assert_eq!(
            check_policy("12345").unwrap_err().error_code,
            "weak_password"
        );
        assert!(check_policy("123456").is_ok());
        assert!(check_policy(&"x".repeat(73)).is_err());
    }
}
