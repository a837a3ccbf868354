//! Creating and deleting users, shared by the admin endpoint, the CLI and tests.
//!
//! Policy (username charset, password length) is enforced here for every ordinary path;
//! only the explicitly demo-only [`seed_demo`] bypasses it, to create the well-known demo
//! accounts `admin/admin` and `johndoe/john`.

use secrecy::{ExposeSecret, SecretString};

use crate::auth::UserCache;
use crate::auth::password::{self, Hasher, PasswordError};
use crate::store::{NewUser, Role, Store, StoreError, User};

pub const USERNAME_MAX_CHARS: usize = 64;
/// What a username may contain besides ASCII letters and digits.
pub const USERNAME_PUNCTUATION: &[char] = &['.', '_', '-', '@'];
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;

/// The demo accounts of `users seed-demo`: (username, password, role).
pub const DEMO_USERS: &[(&str, &str, Role)] = &[
    ("admin", "admin", Role::Admin),
    ("johndoe", "john", Role::User),
];

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("{0}")]
    Invalid(String),
    #[error("username {0:?} is already taken")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl From<CreateUserError> for crate::error::ApiError {
    fn from(err: CreateUserError) -> Self {
        use crate::error::ApiError;
        match err {
            CreateUserError::Invalid(msg) => ApiError::Validation(msg),
            CreateUserError::Conflict(_) => ApiError::Conflict(err.to_string()),
            CreateUserError::Store(err) => err.into(),
            CreateUserError::Password(err) => err.into(),
        }
    }
}

/// 1..=64 characters from `A-Z a-z 0-9 . _ - @`: safe in logs, URLs and shells.
pub fn validate_username(username: &str) -> Result<(), String> {
    let count = username.chars().count();
    if count == 0 || count > USERNAME_MAX_CHARS {
        return Err(format!(
            "username must be 1 to {USERNAME_MAX_CHARS} characters long"
        ));
    }
    if let Some(bad) = username
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || USERNAME_PUNCTUATION.contains(c)))
    {
        return Err(format!(
            "username contains {bad:?}; use letters, digits and . _ - @"
        ));
    }
    Ok(())
}

/// [`validate_username`] as a regular expression (the OpenAPI `pattern` of a new username).
pub fn username_pattern() -> String {
    let class = shared::pattern::ascii_alphanumeric_class(USERNAME_PUNCTUATION);
    format!("^{class}{{1,{USERNAME_MAX_CHARS}}}$")
}

/// 8..=128 characters. The upper bound keeps argon2's input (and the body) small.
pub fn validate_password(password: &str) -> Result<(), String> {
    let count = password.chars().count();
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&count) {
        return Err(format!(
            "password must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters long"
        ));
    }
    Ok(())
}

fn validate(username: &str, password: &SecretString) -> Result<(), CreateUserError> {
    validate_username(username).map_err(CreateUserError::Invalid)?;
    validate_password(password.expose_secret()).map_err(CreateUserError::Invalid)
}

async fn insert(
    store: &dyn Store,
    username: &str,
    password_hash: String,
    role: Role,
) -> Result<User, CreateUserError> {
    store
        .create_user(NewUser {
            username: username.to_owned(),
            password_hash,
            role,
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict => CreateUserError::Conflict(username.to_owned()),
            other => CreateUserError::Store(other),
        })
}

/// Validates, hashes (on the blocking pool) and stores a new user. For the CLI and tests;
/// request handlers use [`create_user_with`] to share the server's hashing limit.
pub async fn create_user(
    store: &dyn Store,
    username: &str,
    password: &SecretString,
    role: Role,
) -> Result<User, CreateUserError> {
    validate(username, password)?;
    let password = password.clone();
    let hash = tokio::task::spawn_blocking(move || {
        password::hash_password_blocking(password.expose_secret())
    })
    .await
    .map_err(PasswordError::from)??;
    insert(store, username, hash, role).await
}

/// Like [`create_user`], hashing through the server's concurrency-limited [`Hasher`].
pub async fn create_user_with(
    store: &dyn Store,
    hasher: &Hasher,
    username: &str,
    password: SecretString,
    role: Role,
) -> Result<User, CreateUserError> {
    validate(username, &password)?;
    let hash = hasher.hash(password).await?;
    insert(store, username, hash, role).await
}

/// Creates the demo accounts that do not exist yet (idempotent); returns the usernames
/// created. FOR DEMOS ONLY: the passwords are public and too weak for the normal policy.
pub async fn seed_demo(store: &dyn Store) -> Result<Vec<String>, CreateUserError> {
    let mut created = Vec::new();
    for (username, password, role) in DEMO_USERS {
        if store
            .user_by_username(username)
            .await
            .map_err(CreateUserError::Store)?
            .is_some()
        {
            continue;
        }
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash_password_blocking(&password))
            .await
            .map_err(PasswordError::from)??;
        match insert(store, username, hash, *role).await {
            Ok(_) => created.push(username.to_string()),
            // Created concurrently by someone else: still idempotent.
            Err(CreateUserError::Conflict(_)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(created)
}

/// The demo accounts that still exist with their published demo passwords: anyone who has
/// read the README can sign in as them (the admin included). Checked at every start so the
/// warning cannot scroll away once and be forgotten.
pub async fn open_demo_accounts(store: &dyn Store) -> Result<Vec<&'static str>, StoreError> {
    let mut open = Vec::new();
    for (username, password, _) in DEMO_USERS {
        let Some(user) = store.user_by_username(username).await? else {
            continue;
        };
        let (password, hash) = (password.to_string(), user.password_hash);
        let matches = tokio::task::spawn_blocking(move || {
            password::verify_password_blocking(&password, &hash)
        })
        .await
        .unwrap_or(false);
        if matches {
            open.push(*username);
        }
    }
    Ok(open)
}

/// Deletes a user (and their history). With this instance's cache, their tokens stop
/// working immediately; other instances notice within their cache TTL.
pub async fn delete_user(
    store: &dyn Store,
    cache: Option<&UserCache>,
    username: &str,
) -> Result<bool, StoreError> {
    let id = store.user_by_username(username).await?.map(|u| u.id);
    let existed = store.delete_user(username).await?;
    if let (Some(cache), Some(id)) = (cache, id) {
        cache.invalidate(id);
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in [
            "a",
            "johndoe",
            "john.doe_2-x",
            "me@example.com",
            &"x".repeat(64),
        ] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "john doe",
            "jo\nhn",
            "żółw",
            "a/b",
            "<script>",
            &"x".repeat(65),
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn username_pattern_agrees_with_the_validator() {
        let pattern = regex::Regex::new(&username_pattern()).unwrap();
        let longest = "x".repeat(USERNAME_MAX_CHARS);
        let too_long = "x".repeat(USERNAME_MAX_CHARS + 1);
        for name in [
            "a",
            "john.doe_2-x",
            "me@example.com",
            &longest,
            &too_long,
            "",
            " bob",
            "bob\n",
            "a b",
            "żółw",
            "a/b",
            "a\0",
            "a^b",
        ] {
            assert_eq!(
                pattern.is_match(name),
                validate_username(name).is_ok(),
                "{name:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn username_pattern_accepts_exactly_what_the_validator_accepts(
            name in "[aZ9._@\\-^ ż/\n\0]{0,70}"
        ) {
            let pattern = regex::Regex::new(&username_pattern()).unwrap();
            proptest::prop_assert_eq!(pattern.is_match(&name), validate_username(&name).is_ok());
        }
    }

    #[test]
    fn passwords() {
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"p".repeat(128)).is_ok());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password(&"p".repeat(129)).is_err());
        // Characters, not bytes.
        assert!(validate_password("ąąąąąąąą").is_ok());
    }
}
