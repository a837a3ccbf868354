//! What the database holds about passwords: argon2id PHC strings with the OWASP parameters
//! and a fresh salt each, and nothing from which a password could be read back: the whole
//! database (every table as text on PostgreSQL; the raw file and its WAL on SQLite) is
//! searched for each password, plain, base64 and hex.

use api_service::auth::password::verify_password_blocking;
use api_service::store::Role;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use sqlx::Connection;
use tests::{Backend, JWT_SECRET, TestApp, stack};

tests::on_both_backends!(
    passwords_are_stored_only_as_argon2id_phc_strings,
    a_login_upgrades_a_hash_stored_at_an_older_cheaper_cost,
);

/// `$argon2id$v=19$m=19456,t=2,p=1$<22 chars of salt>$<43 chars of hash>` (unpadded base64).
fn assert_phc(hash: &str, who: &str) {
    let parts: Vec<&str> = hash.split('$').collect();
    let b64 = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    };
    assert!(
        parts.len() == 6
            && parts[0].is_empty()
            && parts[1] == "argon2id"
            && parts[2] == "v=19"
            && parts[3] == "m=19456,t=2,p=1"
            && parts[4].len() == 22
            && b64(parts[4])
            && parts[5].len() == 43
            && b64(parts[5]),
        "{who}: not an argon2id PHC string with the OWASP parameters: {hash}"
    );
}

/// Everything the database holds, as text (PostgreSQL) or raw bytes (SQLite file and WAL).
async fn database_dump(app: &TestApp) -> Vec<u8> {
    match app.backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(app.database_url())
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert!(tables.iter().any(|t| t == "users"), "{tables:?}");
            let mut dump = Vec::new();
            for table in tables {
                // Names come from the catalog, quoted: safe to format in.
                let query = format!(
                    r#"SELECT COALESCE(string_agg(row_to_json(t)::text, E'\n'), '') FROM "{table}" t"#
                );
                let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                dump.extend_from_slice(rows.as_bytes());
            }
            dump
        }
        Backend::Sqlite => {
            let path = app
                .database_url()
                .strip_prefix("sqlite://")
                .expect("sqlite URL")
                .to_owned();
            let mut dump = std::fs::read(&path).unwrap();
            for suffix in ["-wal", "-journal"] {
                if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
                    dump.extend(bytes);
                }
            }
            dump
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn passwords_are_stored_only_as_argon2id_phc_strings(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let admin = app.token_for("root", Role::Admin).await;
    let passwords = [
        ("carol", "carol's secret passphrase"),
        ("dave", "same password for two"),
        ("erin", "same password for two"),
    ];
    for (username, password) in passwords {
        let response = app
            .client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({"username": username, "password": password, "role": "user"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        // Logging in exercises every path that reads the hash.
        assert_eq!(app.login(username, password).await.status(), 200);
    }

    let mut salts = Vec::new();
    for (username, password) in passwords.iter().chain([&("root", tests::PASSWORD)]) {
        let user = app.store.user_by_username(username).await.unwrap().unwrap();
        assert_phc(&user.password_hash, username);
        assert!(verify_password_blocking(password, &user.password_hash));
        salts.push(user.password_hash.split('$').nth(4).unwrap().to_owned());
    }
    salts.sort();
    salts.dedup();
    assert_eq!(
        salts.len(),
        4,
        "every hash has its own salt, even for equal passwords"
    );

    let dump = database_dump(&app).await;
    assert!(
        contains(&dump, b"$argon2id$"),
        "the dump reads the users table"
    );
    for (_, password) in passwords.iter().chain([&("root", tests::PASSWORD)]) {
        for form in [
            password.to_string(),
            STANDARD.encode(password),
            URL_SAFE_NO_PAD.encode(password),
            password.bytes().map(|b| format!("{b:02x}")).collect(),
        ] {
            assert!(
                !contains(&dump, form.as_bytes()),
                "the database holds {form:?}"
            );
        }
    }
    assert!(
        !contains(&dump, JWT_SECRET.as_bytes()),
        "the signing key is not stored"
    );
}

/// A user whose hash was written at a lower cost (as by an earlier version) still logs in,
/// and that login stores a fresh hash at the current cost; the password keeps working and
/// nothing else does.
async fn a_login_upgrades_a_hash_stored_at_an_older_cheaper_cost(backend: Backend) {
    use argon2::password_hash::PasswordHasher as _;
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let password = "legacy-pa55word";
    let cheap = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(8192, 1, 1, None).unwrap(),
    )
    .hash_password(password.as_bytes())
    .unwrap()
    .to_string();
    app.store
        .create_user(api_service::store::NewUser {
            username: "legacy".into(),
            password_hash: cheap.clone(),
            role: Role::User,
        })
        .await
        .unwrap();

    assert_eq!(app.login("legacy", password).await.status(), 200);

    // The upgrade runs after the answer: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let upgraded = loop {
        let stored = app.store.user_by_username("legacy").await.unwrap().unwrap();
        if stored.password_hash != cheap {
            break stored.password_hash;
        }
        assert!(std::time::Instant::now() < deadline, "never rehashed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_phc(&upgraded, "the upgraded hash");
    assert!(verify_password_blocking(password, &upgraded));
    assert_eq!(app.login("legacy", password).await.status(), 200);
    assert_eq!(app.login("legacy", "wrong-password").await.status(), 401);
}

/// Every start, not just the one after seeding: the warning must not scroll away once.
#[tokio::test]
async fn every_start_warns_while_demo_accounts_keep_their_demo_passwords() {
    use api_service::settings::{Settings, TestTransport};
    use tracing_subscriber::prelude::*;
    let db = api_service::store::provision::fresh_sqlite();
    let store = api_service::store::connect(db.url(), 1).await.unwrap();
    store.migrate().await.unwrap();
    api_service::users::seed_demo(store.as_ref()).await.unwrap();
    // Logs of this (current-thread) test only, whatever other tests of the binary do.
    let start_and_read_logs = async || {
        let logs = tests::log_capture::Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(logs.clone())
                .with_ansi(false),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let settings = Settings::for_tests(
            db.url(),
            TestTransport::Http {
                base_url: "http://127.0.0.1:9".into(),
            },
        );
        drop(
            api_service::startup::Application::build(settings)
                .await
                .unwrap(),
        );
        logs.text()
    };
    const WARNING: &str = "demo accounts exist with their public demo passwords";

    let both = start_and_read_logs().await;
    assert!(
        both.contains(WARNING) && both.contains("\"admin\"") && both.contains("\"johndoe\""),
        "{both}"
    );

    api_service::users::delete_user(store.as_ref(), None, "johndoe")
        .await
        .unwrap();
    let admin_only = start_and_read_logs().await;
    assert!(
        admin_only.contains(WARNING) && !admin_only.contains("johndoe"),
        "{admin_only}"
    );

    let admin = store.user_by_username("admin").await.unwrap().unwrap();
    let fresh = api_service::auth::password::hash_password_blocking("a-real-password-1").unwrap();
    assert!(
        store
            .replace_password_hash(admin.id, &admin.password_hash, &fresh)
            .await
            .unwrap()
    );
    let none = start_and_read_logs().await;
    assert!(!none.contains(WARNING), "{none}");
}
