//! Security suite: hostile input on every endpoint, password guessing (throttling and login
//! timing), authorization angles beyond the end-to-end spec, and what the database keeps
//! about passwords. Token attacks (alg none, HS/RS confusion, wrong key, expired,
//! not-yet-valid, wrong issuer/audience, tampered role, deleted user) are in
//! `tests/tests/e2e/tokens.rs`; secrets in logs and error bodies in `secrets_in_logs.rs`;
//! arbitrary input in `properties.rs`.

mod authorization;
mod bad_input;
mod brute_force;
mod passwords;
