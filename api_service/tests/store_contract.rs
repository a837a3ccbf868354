//! The store contract: every test here runs against SQLite AND PostgreSQL (via the
//! `contract_tests!` macro), so handlers can rely on identical behaviour from both.
//!
//! Each test gets a fresh database from `api_service::store::provision`. PostgreSQL tests skip
//! with a printed reason when no server answers, except under CI where they fail.

use std::collections::HashSet;
use std::sync::Arc;

use api_service::store::{
    self, ChangeOutcome, MAX_REVOKED_PER_USER, NewHistoryEntry, NewUser, RevokedToken, Role,
    StockCount, Store, StoreError, UserChange, provision,
};
use chrono::{DateTime, TimeZone, Utc};

async fn open(db: &provision::TestDatabase) -> Arc<dyn Store> {
    let store = store::connect(db.url(), 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn user(name: &str) -> NewUser {
    NewUser {
        username: name.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$fake${name}"),
        role: Role::User,
    }
}

/// A quote whose fields are all distinct per `i`, with a sub-microsecond part that the store
/// must truncate (both backends keep microseconds).
fn quote(symbol: &str, i: i64) -> NewHistoryEntry {
    NewHistoryEntry {
        requested_at: Utc.timestamp_opt(1_700_000_000 + i, 123_456_789).unwrap(),
        symbol: symbol.to_owned(),
        name: format!("{symbol} name {i}"),
        open: 100.0 + i as f64 + 0.125,
        high: 110.0 + i as f64 + 0.1,
        low: 90.0 + i as f64 + 0.3,
        close: 105.0 + i as f64 + 1.0 / 3.0,
    }
}

fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap()
}

/// Two new users, `gone` and `kept`, with `n` quotes each (of `DEL.US` and `KEEP.US`): the
/// set-up of the tests that delete the first and look for what is left of both.
async fn gone_and_kept(
    store: &Arc<dyn Store>,
    gone: &str,
    kept: &str,
    n: i64,
) -> (store::User, store::User) {
    let gone = store.create_user(user(gone)).await.unwrap();
    let kept = store.create_user(user(kept)).await.unwrap();
    for i in 0..n {
        store
            .record_quote(gone.id, quote("DEL.US", i))
            .await
            .unwrap();
        store
            .record_quote(kept.id, quote("KEEP.US", i))
            .await
            .unwrap();
    }
    (gone, kept)
}

async fn all_history(store: &Arc<dyn Store>, user_id: i64) -> Vec<store::HistoryEntry> {
    store
        .history_page(user_id, None, None, u32::MAX)
        .await
        .unwrap()
}

fn counts(list: &[(&str, i64)]) -> Vec<StockCount> {
    list.iter()
        .map(|(stock, times)| StockCount {
            stock: (*stock).to_owned(),
            times_requested: *times,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The contract.
// ---------------------------------------------------------------------------------------

async fn users_create_find_delete(store: Arc<dyn Store>) {
    let before = Utc::now();
    let alice = store
        .create_user(NewUser {
            role: Role::Admin,
            ..user("alice")
        })
        .await
        .unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.role, Role::Admin);
    assert!(alice.created_at >= micros(before) && alice.created_at <= Utc::now());

    let by_name = store.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(by_name, alice, "read back exactly what create returned");
    let by_id = store.user_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(by_id, alice);

    let bob = store.create_user(user("bob")).await.unwrap();
    assert_ne!(bob.id, alice.id);
    assert_eq!(bob.role, Role::User);

    assert!(store.user_by_username("carol").await.unwrap().is_none());
    assert!(store.user_by_username("ALICE").await.unwrap().is_none());
    assert!(store.user_by_id(-1).await.unwrap().is_none());

    assert!(store.delete_user("alice").await.unwrap());
    assert!(!store.delete_user("alice").await.unwrap(), "second delete");
    assert!(store.user_by_username("alice").await.unwrap().is_none());
    assert!(store.user_by_id(alice.id).await.unwrap().is_none());
    assert!(store.user_by_id(bob.id).await.unwrap().is_some());
}

async fn users_are_listed_in_byte_order_of_the_username_page_by_page(store: Arc<dyn Store>) {
    // Byte order puts `.` < digits < `@` < upper case < `_` < lower case, which a
    // locale-aware collation (PostgreSQL's default) would not.
    let names = [
        "bob", "Bob", "_x", ".dot", "9lives", "a@b", "alice", "ALICE", "a_b",
    ];
    for name in names {
        store.create_user(user(name)).await.unwrap();
    }
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort_unstable();

    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users(after.as_deref(), 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some(last.username.clone());
        listed.extend(page.into_iter().map(|u| u.username));
    }

    assert_eq!(listed, expected);
    let whole = store.list_users(None, 100).await.unwrap();
    let bob = whole.iter().find(|u| u.username == "bob").unwrap();
    assert_eq!(
        *bob,
        store.user_by_username("bob").await.unwrap().unwrap(),
        "every field as stored"
    );
    assert!(store.list_users(Some("zzz"), 10).await.unwrap().is_empty());
    assert_eq!(store.list_users(None, 1).await.unwrap().len(), 1);
}

async fn duplicate_username_conflicts(store: Arc<dyn Store>) {
    store.create_user(user("dup")).await.unwrap();
    let err = store.create_user(user("dup")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "got {err:?}");
    // The name is free again once deleted.
    assert!(store.delete_user("dup").await.unwrap());
    store.create_user(user("dup")).await.unwrap();
}

async fn a_password_hash_is_replaced_only_while_it_is_still_the_old_one(store: Arc<dyn Store>) {
    let u = store.create_user(user("rehash")).await.unwrap();
    let old = u.password_hash.clone();

    let first = store.replace_password_hash(u.id, &old, "$new-1").await;
    assert!(first.unwrap());
    assert_eq!(read_hash(&store, u.id).await, "$new-1");
    // A second upgrade from the stale value must not undo the first.
    let second = store.replace_password_hash(u.id, &old, "$new-2").await;
    assert!(!second.unwrap());
    assert_eq!(read_hash(&store, u.id).await, "$new-1");
    let missing = store.replace_password_hash(-1, &old, "$new-3").await;
    assert!(!missing.unwrap(), "no such user");
}

async fn read_hash(store: &Arc<dyn Store>, id: i64) -> String {
    store.user_by_id(id).await.unwrap().unwrap().password_hash
}

fn admin(name: &str) -> NewUser {
    NewUser {
        role: Role::Admin,
        ..user(name)
    }
}

fn demote() -> UserChange {
    UserChange::Update {
        role: Some(Role::User),
        password_hash: None,
    }
}

async fn a_changed_password_or_role_bumps_the_token_version(store: Arc<dyn Store>) {
    let u = store.create_user(user("changer")).await.unwrap();
    assert_eq!(u.token_version, 0);
    let change = UserChange::Update {
        role: None,
        password_hash: Some("$changed".into()),
    };
    let ChangeOutcome::Updated(changed) = store.change_user("changer", change).await.unwrap()
    else {
        panic!("expected an update");
    };
    assert_eq!(changed.password_hash, "$changed");
    assert_eq!(changed.role, Role::User, "role untouched");
    assert_eq!(changed.token_version, 1);
    let promote = UserChange::Update {
        role: Some(Role::Admin),
        password_hash: None,
    };
    store.change_user("changer", promote).await.unwrap();
    let read = store.user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(
        (read.role, read.password_hash.as_str(), read.token_version),
        (Role::Admin, "$changed", 2)
    );
}

async fn changing_or_deleting_a_missing_user_is_not_found(store: Arc<dyn Store>) {
    for change in [UserChange::Delete, demote()] {
        assert_eq!(
            store.change_user("nobody", change).await.unwrap(),
            ChangeOutcome::NotFound
        );
    }
}

async fn the_last_admin_can_be_neither_deleted_nor_demoted(store: Arc<dyn Store>) {
    store.create_user(admin("only-admin")).await.unwrap();
    for change in [UserChange::Delete, demote()] {
        assert_eq!(
            store.change_user("only-admin", change).await.unwrap(),
            ChangeOutcome::LastAdmin
        );
    }
    store.create_user(admin("second-admin")).await.unwrap();
    assert!(matches!(
        store.change_user("only-admin", demote()).await.unwrap(),
        ChangeOutcome::Updated(_)
    ));
    assert_eq!(
        store
            .change_user("second-admin", UserChange::Delete)
            .await
            .unwrap(),
        ChangeOutcome::LastAdmin,
        "second-admin is the last one now"
    );
}

async fn concurrent_removals_of_two_admins_leave_one(store: Arc<dyn Store>) {
    for round in 0..10 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        store.create_user(admin(&a)).await.unwrap();
        store.create_user(admin(&b)).await.unwrap();
        let (first, second) = tokio::join!(
            store.change_user(&a, UserChange::Delete),
            store.change_user(&b, demote())
        );
        let outcomes = [first.unwrap(), second.unwrap()];
        let refused = outcomes
            .iter()
            .filter(|o| **o == ChangeOutcome::LastAdmin)
            .count();
        assert_eq!(refused, 1, "round {round}: {outcomes:?}");
        // Next round starts with no admins again (the unguarded delete of the CLI).
        for name in [&a, &b] {
            store.delete_user(name).await.unwrap();
        }
    }
}

/// Revokes token `jti` of `user_id`, valid until `expires_at`, as a logout at time `now`.
async fn revoke(store: &Arc<dyn Store>, user_id: i64, jti: &str, expires_at: i64, now: i64) {
    let token = RevokedToken {
        user_id,
        jti: jti.to_owned(),
        expires_at,
    };
    store.revoke_token(token, now).await.unwrap();
}

async fn revoked_tokens_are_listed_until_they_expire(store: Arc<dyn Store>) {
    let u = store.create_user(user("leaver")).await.unwrap();
    let other = store.create_user(user("stayer")).await.unwrap();
    revoke(&store, u.id, "t1", 1_000, 500).await;
    revoke(&store, u.id, "t2", 2_000, 500).await;
    revoke(&store, u.id, "t2", 2_000, 500).await;
    let mut live = store.revoked_tokens(u.id, 500).await.unwrap();
    live.sort();
    assert_eq!(live, ["t1", "t2"], "a repeated logout is one row");
    assert!(
        store
            .revoked_tokens(other.id, 500)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.revoked_tokens(u.id, 1_000).await.unwrap(), ["t2"]);
}

async fn expired_revocations_are_purged(store: Arc<dyn Store>) {
    let u = store.create_user(user("purged")).await.unwrap();
    for i in 0..MAX_REVOKED_PER_USER {
        revoke(&store, u.id, &format!("old{i}"), 100, 50).await;
    }
    // Once they expired, they neither count against the cap nor stay in the table.
    revoke(&store, u.id, "new", 500, 200).await;
    assert_eq!(store.revoked_tokens(u.id, 0).await.unwrap(), ["new"]);
    let read = store.user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(read.token_version, 0, "the cap was not reached");
}

async fn logouts_past_the_cap_revoke_every_token_instead(store: Arc<dyn Store>) {
    let u = store.create_user(user("looper")).await.unwrap();
    for i in 0..MAX_REVOKED_PER_USER {
        revoke(&store, u.id, &format!("t{i}"), 1_000, 0).await;
    }
    assert_eq!(read_version(&store, u.id).await, 0);
    revoke(&store, u.id, "one-more", 1_000, 0).await;
    assert_eq!(read_version(&store, u.id).await, 1);
    assert!(store.revoked_tokens(u.id, 0).await.unwrap().is_empty());
}

async fn read_version(store: &Arc<dyn Store>, id: i64) -> i64 {
    store.user_by_id(id).await.unwrap().unwrap().token_version
}

async fn revoking_a_deleted_users_token_is_a_no_op(store: Arc<dyn Store>) {
    let u = store.create_user(user("gone")).await.unwrap();
    store.delete_user("gone").await.unwrap();
    revoke(&store, u.id, "t", 1_000, 0).await;
    assert!(store.revoked_tokens(u.id, 0).await.unwrap().is_empty());
}

async fn history_is_newest_first_and_round_trips(store: Arc<dyn Store>) {
    let u = store.create_user(user("hist")).await.unwrap();
    assert!(all_history(&store, u.id).await.is_empty());
    let sent: Vec<_> = (0..5).map(|i| quote("AAPL.US", i)).collect();
    for q in &sent {
        store.record_quote(u.id, q.clone()).await.unwrap();
    }
    let got = all_history(&store, u.id).await;
    assert_eq!(got.len(), 5);
    for (entry, q) in got.iter().zip(sent.iter().rev()) {
        assert_eq!(entry.requested_at, micros(q.requested_at));
        assert_eq!(entry.symbol, q.symbol, "symbol kept as given");
        assert_eq!(entry.name, q.name);
        assert_eq!(
            (entry.open, entry.high, entry.low, entry.close),
            (q.open, q.high, q.low, q.close),
            "prices round-trip exactly"
        );
    }
    assert!(got.windows(2).all(|w| w[0].id > w[1].id), "ids descending");
    assert_eq!(
        store.history_page(u.id, None, None, 2).await.unwrap().len(),
        2
    );
    assert!(
        store
            .history_page(u.id, None, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn pagination_cursor_is_stable_while_rows_arrive(store: Arc<dyn Store>) {
    let u = store.create_user(user("pager")).await.unwrap();
    for i in 0..10 {
        store.record_quote(u.id, quote("MSFT.US", i)).await.unwrap();
    }
    let everything: Vec<i64> = all_history(&store, u.id)
        .await
        .iter()
        .map(|e| e.id)
        .collect();

    let first = store.history_page(u.id, None, None, 4).await.unwrap();
    let first_ids: Vec<i64> = first.iter().map(|e| e.id).collect();
    assert_eq!(first_ids, everything[..4]);

    // New rows land between pages; they must not shift or duplicate what follows.
    for i in 10..13 {
        store.record_quote(u.id, quote("MSFT.US", i)).await.unwrap();
    }
    let cursor = first.last().unwrap().id;
    let second: Vec<i64> = store
        .history_page(u.id, None, Some(cursor), 4)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(second, everything[4..8]);
    let third: Vec<i64> = store
        .history_page(u.id, None, Some(*second.last().unwrap()), 4)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(third, everything[8..10], "short last page");
    let past_end = store
        .history_page(u.id, None, Some(*third.last().unwrap()), 4)
        .await
        .unwrap();
    assert!(past_end.is_empty());

    // The new rows are on a fresh first page, above every old id.
    let fresh = store.history_page(u.id, None, None, 3).await.unwrap();
    assert!(fresh.iter().all(|e| e.id > everything[0]));
    assert_eq!(fresh[0].name, "MSFT.US name 12");
}

async fn history_filtered_by_symbol_pages_case_insensitively(store: Arc<dyn Store>) {
    let u = store.create_user(user("filter")).await.unwrap();
    let other = store.create_user(user("other")).await.unwrap();
    let symbols = [
        "AAPL.US", "MSFT.US", "aapl.us", "^SPX", "AAPL.US", "AAPL.USX",
    ];
    let entries: Vec<NewHistoryEntry> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| quote(s, i as i64))
        .collect();
    store.seed_history(u.id, &entries).await.unwrap();
    store
        .seed_history(other.id, &[quote("AAPL.US", 99)])
        .await
        .unwrap();

    let first = store
        .history_page(u.id, Some("aapl.US"), None, 2)
        .await
        .unwrap();
    let rest = store
        .history_page(u.id, Some("aapl.US"), Some(first[1].id), 2)
        .await
        .unwrap();

    let names = |rows: &[store::HistoryEntry]| -> Vec<String> {
        rows.iter().map(|r| r.name.clone()).collect()
    };
    assert_eq!(names(&first), ["AAPL.US name 4", "aapl.us name 2"]);
    assert_eq!(names(&rest), ["AAPL.US name 0"]);
    let caret = store.history_page(u.id, Some("^spx"), None, 10).await;
    assert_eq!(names(&caret.unwrap()), ["^SPX name 3"]);
    let none = store.history_page(u.id, Some("ibm.us"), None, 10).await;
    assert!(none.unwrap().is_empty());
}

async fn users_see_only_their_history(store: Arc<dyn Store>) {
    let a = store.create_user(user("iso_a")).await.unwrap();
    let b = store.create_user(user("iso_b")).await.unwrap();
    for i in 0..3 {
        store.record_quote(a.id, quote("AAA.US", i)).await.unwrap();
        store.record_quote(b.id, quote("BBB.US", i)).await.unwrap();
    }
    let ha = all_history(&store, a.id).await;
    let hb = all_history(&store, b.id).await;
    assert_eq!(ha.len(), 3);
    assert_eq!(hb.len(), 3);
    assert!(ha.iter().all(|e| e.symbol == "AAA.US"));
    assert!(hb.iter().all(|e| e.symbol == "BBB.US"));
    // A cursor taken from another user's page does not leak rows either.
    let foreign_cursor = hb[0].id + 1;
    let page = store
        .history_page(a.id, None, Some(foreign_cursor), 10)
        .await
        .unwrap();
    assert!(page.iter().all(|e| e.symbol == "AAA.US"));
    assert!(all_history(&store, 987_654_321).await.is_empty());
}

async fn delete_user_cascades_history(store: Arc<dyn Store>) {
    let (gone, kept) = gone_and_kept(&store, "gone", "kept", 4).await;
    assert!(store.delete_user("gone").await.unwrap());
    assert!(all_history(&store, gone.id).await.is_empty());
    assert_eq!(all_history(&store, kept.id).await.len(), 4);

    // A new account with the same name starts empty (new id, no inherited rows).
    let again = store.create_user(user("gone")).await.unwrap();
    assert_ne!(again.id, gone.id);
    assert!(all_history(&store, again.id).await.is_empty());

    // Counters record requests ever served: deleting the user does not undo them.
    let top = store.top_stocks(10).await.unwrap();
    assert!(top.contains(&StockCount {
        stock: "del.us".into(),
        times_requested: 4
    }));
}

async fn top_stocks_orders_by_count_then_symbol(store: Arc<dyn Store>) {
    assert!(store.top_stocks(5).await.unwrap().is_empty());
    let u = store.create_user(user("stats")).await.unwrap();
    let plan = [
        ("CCC.US", 3),
        ("AAA.US", 1),
        ("BBB.US", 3),
        ("EEE.US", 2),
        ("DDD.US", 2),
        ("FFF.US", 5),
        ("GGG.US", 1),
    ];
    let mut i = 0;
    for (symbol, times) in plan {
        for _ in 0..times {
            store.record_quote(u.id, quote(symbol, i)).await.unwrap();
            i += 1;
        }
    }
    assert_eq!(
        store.top_stocks(5).await.unwrap(),
        counts(&[
            ("fff.us", 5),
            ("bbb.us", 3),
            ("ccc.us", 3),
            ("ddd.us", 2),
            ("eee.us", 2),
        ])
    );
    assert_eq!(store.top_stocks(1).await.unwrap(), counts(&[("fff.us", 5)]));
    assert_eq!(store.top_stocks(100).await.unwrap().len(), 7);
    assert!(store.top_stocks(0).await.unwrap().is_empty());
}

async fn counters_count_each_record_once_case_insensitively(store: Arc<dyn Store>) {
    let u = store.create_user(user("counter")).await.unwrap();
    store.record_quote(u.id, quote("AAPL.US", 0)).await.unwrap();
    assert_eq!(
        store.top_stocks(5).await.unwrap(),
        counts(&[("aapl.us", 1)])
    );
    store.record_quote(u.id, quote("aapl.us", 1)).await.unwrap();
    store.record_quote(u.id, quote("Aapl.Us", 2)).await.unwrap();
    store.record_quote(u.id, quote("TSLA.US", 3)).await.unwrap();
    assert_eq!(
        store.top_stocks(5).await.unwrap(),
        counts(&[("aapl.us", 3), ("tsla.us", 1)])
    );
    // History keeps the symbol as it was given.
    let symbols: Vec<String> = all_history(&store, u.id)
        .await
        .into_iter()
        .map(|e| e.symbol)
        .collect();
    assert_eq!(symbols, ["TSLA.US", "Aapl.Us", "aapl.us", "AAPL.US"]);
}

async fn concurrent_record_quote_loses_nothing(store: Arc<dyn Store>) {
    const CALLS: i64 = 200;
    let users = [
        store.create_user(user("conc_a")).await.unwrap(),
        store.create_user(user("conc_b")).await.unwrap(),
    ];
    let symbols = ["HOT.US", "WARM.US", "COLD.US"];
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let store = Arc::clone(&store);
            let user_id = users[(i % 2) as usize].id;
            let symbol = symbols[(i % 3) as usize];
            tokio::spawn(async move { store.record_quote(user_id, quote(symbol, i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut names = HashSet::new();
    for u in &users {
        // Positions are per user (PostgreSQL numbers each user's history on its own).
        let mut ids = HashSet::new();
        let rows = all_history(&store, u.id).await;
        assert_eq!(
            rows.len(),
            (CALLS / 2) as usize,
            "every committed row is visible"
        );
        for row in rows {
            assert!(ids.insert(row.id), "positions unique within a user");
            assert!(names.insert(row.name), "no duplicate writes");
        }
    }
    assert_eq!(names.len(), CALLS as usize);
    let top = store.top_stocks(5).await.unwrap();
    assert_eq!(
        top,
        counts(&[("hot.us", 67), ("warm.us", 67), ("cold.us", 66)])
    );
}

async fn a_bad_row_fails_alone(store: Arc<dyn Store>) {
    // A row for a user that does not exist breaks a constraint (SQLite: the foreign key;
    // PostgreSQL: the row gets no position, `seq NOT NULL`). With group commit it may
    // share a batch with good rows: those must still commit, and only the bad one fail.
    let u = store.create_user(user("good")).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            let user_id = if i == 25 { u.id + 1_000_000 } else { u.id };
            tokio::spawn(async move { store.record_quote(user_id, quote("FK.US", i)).await })
        })
        .collect();
    let mut failures = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(()) => assert_ne!(i, 25),
            Err(err) => {
                assert_eq!(i, 25, "only the bad row fails: {err:?}");
                assert!(!err.is_unavailable(), "a constraint error is not an outage");
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 1);
    assert_eq!(all_history(&store, u.id).await.len(), 49);
    assert_eq!(store.top_stocks(1).await.unwrap(), counts(&[("fk.us", 49)]));
}

async fn record_quotes_commits_every_row_in_order_and_counts_each(store: Arc<dyn Store>) {
    let u = store.create_user(user("batcher")).await.unwrap();
    let rows = vec![quote("AAA.US", 0), quote("BBB.US", 1), quote("CCC.US", 2)];

    store.record_quotes(u.id, rows.clone()).await.unwrap();

    let history = all_history(&store, u.id).await;
    let symbols: Vec<&str> = history.iter().map(|h| h.symbol.as_str()).collect();
    assert_eq!(
        symbols,
        ["CCC.US", "BBB.US", "AAA.US"],
        "the last row is the newest"
    );
    assert_eq!(history[2].close, rows[0].close);
    assert_eq!(
        store.top_stocks(5).await.unwrap(),
        counts(&[("aaa.us", 1), ("bbb.us", 1), ("ccc.us", 1)])
    );
}

async fn record_quotes_of_nothing_is_a_no_op(store: Arc<dyn Store>) {
    let u = store.create_user(user("idle")).await.unwrap();

    store.record_quotes(u.id, Vec::new()).await.unwrap();

    assert!(all_history(&store, u.id).await.is_empty());
    assert!(store.top_stocks(5).await.unwrap().is_empty());
}

async fn a_failing_batch_of_rows_fails_whole_and_alone(store: Arc<dyn Store>) {
    // One caller's rows are one transaction: a row that breaks a constraint takes its own
    // batch's other rows with it, and nobody else's, even when group commit put them together.
    let u = store.create_user(user("neighbour")).await.unwrap();
    let bad_user = u.id + 1_000_000;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let (user_id, symbol) = if i == 10 {
                (bad_user, "BAD.US")
            } else {
                (u.id, "OK.US")
            };
            let rows = (0..5).map(|j| quote(symbol, i * 5 + j)).collect();
            tokio::spawn(async move { store.record_quotes(user_id, rows).await })
        })
        .collect();

    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        assert_eq!(result.is_err(), i == 10, "call {i}: {result:?}");
    }
    assert_eq!(all_history(&store, u.id).await.len(), 19 * 5);
    assert_eq!(store.top_stocks(5).await.unwrap(), counts(&[("ok.us", 95)]));
}

async fn seed_history_matches_record_quote(store: Arc<dyn Store>) {
    let u = store.create_user(user("seeded")).await.unwrap();
    // Crosses the per-statement chunk sizes of both backends.
    let entries: Vec<_> = (0..12_345)
        .map(|i| quote(["S1.US", "S2.US", "s1.us"][(i % 3) as usize], i))
        .collect();
    store.seed_history(u.id, &entries).await.unwrap();
    store.seed_history(u.id, &[]).await.unwrap();
    let rows = all_history(&store, u.id).await;
    assert_eq!(rows.len(), entries.len());
    assert!(rows.windows(2).all(|w| w[0].id > w[1].id));
    // Ids follow slice order: newest first means the last entry comes first.
    for (row, entry) in rows.iter().zip(entries.iter().rev()) {
        assert_eq!(row.name, entry.name);
        assert_eq!(row.requested_at, micros(entry.requested_at));
    }
    assert_eq!(
        store.top_stocks(5).await.unwrap(),
        counts(&[("s1.us", 8230), ("s2.us", 4115)])
    );
    // Deep pagination walks the whole set exactly once.
    let (mut cursor, mut seen) = (None, 0);
    loop {
        let page = store.history_page(u.id, None, cursor, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        seen += page.len();
        cursor = Some(page.last().unwrap().id);
    }
    assert_eq!(seen, entries.len());
}

async fn migrate_is_idempotent(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.create_user(user("after_migrate")).await.unwrap();
}

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

/// What `/metrics` publishes: the configured ceiling, the connections open, and all of them
/// idle again once nothing is in flight (a released connection returns asynchronously).
async fn pool_stats_report_the_pool(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let stats = store.pool_stats();
    assert_eq!(stats.max, 8, "{stats:?}");
    assert!(stats.size >= 1 && stats.size <= stats.max, "{stats:?}");
    assert!(stats.idle <= stats.size as usize, "{stats:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let stats = store.pool_stats();
        if stats.idle == stats.size as usize {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connections never returned to idle: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn close_commits_queued_rows_then_refuses(store: Arc<dyn Store>) {
    let u = store.create_user(user("closer")).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.record_quote(u.id, quote("CLOSE.US", i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    store.close().await;
    let err = store
        .record_quote(u.id, quote("CLOSE.US", 99))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "got {err:?}");
    assert!(store.ping().await.unwrap_err().is_unavailable());
}

// ---------------------------------------------------------------------------------------
// Wiring: one test per (backend, contract item).
// ---------------------------------------------------------------------------------------

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = api_service::store::provision::fresh_sqlite();
                    let store = super::open(&db).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = api_service::store::provision::fresh_postgres_or_skip().await
                    else {
                        return;
                    };
                    let store = super::open(&db).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
    };
}

contract_tests!(
    users_create_find_delete,
    users_are_listed_in_byte_order_of_the_username_page_by_page,
    duplicate_username_conflicts,
    a_password_hash_is_replaced_only_while_it_is_still_the_old_one,
    a_changed_password_or_role_bumps_the_token_version,
    changing_or_deleting_a_missing_user_is_not_found,
    the_last_admin_can_be_neither_deleted_nor_demoted,
    concurrent_removals_of_two_admins_leave_one,
    revoked_tokens_are_listed_until_they_expire,
    expired_revocations_are_purged,
    logouts_past_the_cap_revoke_every_token_instead,
    revoking_a_deleted_users_token_is_a_no_op,
    history_is_newest_first_and_round_trips,
    pagination_cursor_is_stable_while_rows_arrive,
    history_filtered_by_symbol_pages_case_insensitively,
    users_see_only_their_history,
    delete_user_cascades_history,
    top_stocks_orders_by_count_then_symbol,
    counters_count_each_record_once_case_insensitively,
    concurrent_record_quote_loses_nothing,
    a_bad_row_fails_alone,
    record_quotes_commits_every_row_in_order_and_counts_each,
    record_quotes_of_nothing_is_a_no_op,
    a_failing_batch_of_rows_fails_whole_and_alone,
    seed_history_matches_record_quote,
    migrate_is_idempotent,
    ping_answers,
    pool_stats_report_the_pool,
    close_commits_queued_rows_then_refuses,
);

// ---------------------------------------------------------------------------------------
// Backend selection, migrations entry point and outage classification.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_scheme_is_a_configuration_error() {
    for url in ["mysql://x/y", "", "just-a-path.db"] {
        let err = store::connect(url, 1).await.err().expect(url);
        assert!(matches!(err, StoreError::Other(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("just-a-path"), "URL not echoed");
    }
    assert_eq!(
        store::Backend::from_url("postgresql://h/db").unwrap(),
        store::Backend::Postgres
    );
    assert_eq!(
        store::Backend::from_url("SQLITE:x.db").unwrap(),
        store::Backend::Sqlite
    );
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_fast() {
    let started = std::time::Instant::now();
    // Port 1 on loopback: connection refused.
    let err = store::connect("postgres://postgres@127.0.0.1:1/none", 4)
        .await
        .err()
        .expect("no server there");
    assert!(err.is_unavailable(), "got {err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn sqlite_in_an_unwritable_place_is_unavailable() {
    // A regular file where the database's directory should be (root ignores permissions).
    let blocker = std::env::temp_dir().join(format!(
        "api_service_test_blocker_{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&blocker, b"not a directory").unwrap();
    let url = format!("sqlite://{}/x.db", blocker.display());
    let result = store::connect(&url, 1).await;
    std::fs::remove_file(&blocker).unwrap();
    let err = result.err().expect("cannot create");
    assert!(err.is_unavailable(), "got {err:?}");
}

#[tokio::test]
async fn sqlite_creates_missing_directories() {
    let dir = std::env::temp_dir().join(format!(
        "api_service_test_dir_{}",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}/nested/api.db", dir.display());
    let store = store::connect(&url, 1).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
    assert!(dir.join("nested/api.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn run_migrations_then_connect_sqlite() {
    let db = provision::fresh_sqlite();
    store::run_migrations(db.url()).await.unwrap();
    store::run_migrations(db.url()).await.unwrap();
    let store = store::connect(db.url(), 2).await.unwrap();
    let u = store.create_user(user("m")).await.unwrap();
    store.record_quote(u.id, quote("M.US", 0)).await.unwrap();
    store.close().await;
    // Data survives reopening the file.
    let store = store::connect(db.url(), 2).await.unwrap();
    assert_eq!(all_history(&store, u.id).await.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn run_migrations_then_connect_postgres() {
    let Some(db) = provision::fresh_postgres_or_skip().await else {
        return;
    };
    store::run_migrations(db.url()).await.unwrap();
    store::run_migrations(db.url()).await.unwrap();
    let store = store::connect(db.url(), 2).await.unwrap();
    store.create_user(user("m")).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = store::connect("sqlite::memory:", 4).await.unwrap();
    store.migrate().await.unwrap();
    let u = store.create_user(user("mem")).await.unwrap();
    store.record_quote(u.id, quote("MEM.US", 0)).await.unwrap();
    assert_eq!(all_history(&store, u.id).await.len(), 1);
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// Performance probes (ignored by default; run with
// `cargo test -p api_service --release --test store_contract -- --ignored --nocapture`).
// They print figures and assert the budgets the service is designed for, with a safety
// margin for a busy debug build on a shared 2-core machine.
// ---------------------------------------------------------------------------------------

fn percentile(samples: &mut [std::time::Duration], pct: f64) -> std::time::Duration {
    samples.sort();
    let index = ((samples.len() as f64 * pct).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index]
}

async fn perf_deep_history_page(store: Arc<dyn Store>) {
    const ROWS: i64 = 1_000_000;
    let u = store.create_user(user("deep")).await.unwrap();
    let seeding = std::time::Instant::now();
    for chunk_start in (0..ROWS).step_by(100_000) {
        let entries: Vec<_> = (chunk_start..chunk_start + 100_000)
            .map(|i| quote(["A.US", "B.US", "C.US", "D.US"][(i % 4) as usize], i))
            .collect();
        store.seed_history(u.id, &entries).await.unwrap();
    }
    eprintln!("seeded {ROWS} rows in {:?}", seeding.elapsed());
    let newest = store.history_page(u.id, None, None, 1).await.unwrap()[0].id;
    let oldest = newest - ROWS + 1;
    let mut samples = Vec::new();
    for i in 0..2000_i64 {
        // Cursors spread over the whole range, mostly deep.
        let cursor = oldest + 1000 + (i * 7919) % (ROWS - 1000);
        let started = std::time::Instant::now();
        let page = store
            .history_page(u.id, None, Some(cursor), 50)
            .await
            .unwrap();
        samples.push(started.elapsed());
        assert_eq!(page.len(), 50);
    }
    let p50 = percentile(&mut samples, 0.50);
    let p99 = percentile(&mut samples, 0.99);
    eprintln!("history_page(limit 50) over {ROWS} rows: p50 {p50:?} p99 {p99:?}");
    assert!(p99 <= std::time::Duration::from_millis(10), "p99 {p99:?}");
}

async fn perf_top_stocks(store: Arc<dyn Store>) {
    let u = store.create_user(user("stats_perf")).await.unwrap();
    let entries: Vec<_> = (0..50_000_i64)
        // Every symbol appears; a few get extra requests so counts differ.
        .map(|i| {
            let symbol = if i % 3 == 0 { (i / 3) % 97 } else { i % 5000 };
            quote(&format!("S{symbol:04}.US"), i)
        })
        .collect();
    store.seed_history(u.id, &entries).await.unwrap();
    assert_eq!(store.top_stocks(10_000).await.unwrap().len(), 5000);
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let started = std::time::Instant::now();
        let top = store.top_stocks(5).await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(top.len(), 5);
    }
    let p50 = percentile(&mut samples, 0.50);
    let p99 = percentile(&mut samples, 0.99);
    eprintln!("top_stocks(5) over 5000 symbols: p50 {p50:?} p99 {p99:?}");
    assert!(p99 <= std::time::Duration::from_millis(5), "p99 {p99:?}");
}

async fn perf_record_quote_throughput(store: Arc<dyn Store>) {
    const CLIENTS: usize = 64;
    const RUN: std::time::Duration = std::time::Duration::from_secs(5);
    let u = store.create_user(user("hot")).await.unwrap();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0_i64;
                while started.elapsed() < RUN {
                    let symbol = ["HOT1.US", "HOT2.US", "HOT3.US"][(i % 3) as usize];
                    let t = std::time::Instant::now();
                    store
                        .record_quote(u.id, quote(symbol, client as i64 * 1_000_000 + i))
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let total = latencies.len();
    let rate = total as f64 / elapsed.as_secs_f64();
    let p50 = percentile(&mut latencies, 0.50);
    let p99 = percentile(&mut latencies, 0.99);
    eprintln!(
        "record_quote with {CLIENTS} clients on 3 hot symbols: {total} in {elapsed:?} = {rate:.0}/s, p50 {p50:?} p99 {p99:?}"
    );
    let counted: i64 = store
        .top_stocks(3)
        .await
        .unwrap()
        .iter()
        .map(|c| c.times_requested)
        .sum();
    assert_eq!(counted, total as i64, "every acknowledged call counted");
    assert!(rate >= 1000.0, "{rate:.0}/s");
}

macro_rules! perf_tests {
    ($($name:ident),* $(,)?) => {
        mod perf_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "performance probe; run explicitly"]
                async fn $name() {
                    let db = api_service::store::provision::fresh_sqlite();
                    let store = super::open(&db).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
        mod perf_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "performance probe; run explicitly"]
                async fn $name() {
                    let Some(db) = api_service::store::provision::fresh_postgres_or_skip().await
                    else {
                        return;
                    };
                    let store = super::open(&db).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
    };
}

perf_tests!(
    perf_deep_history_page,
    perf_top_stocks,
    perf_record_quote_throughput
);

// ---------------------------------------------------------------------------------------
// A PostgreSQL outage (simulated by a TCP proxy we cut) is reported as Unavailable, fast,
// and the same store works again once the server is reachable.
// ---------------------------------------------------------------------------------------

struct Proxy {
    listener: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection on `listen` to `target` until dropped/stopped.
    async fn start(listen: std::net::SocketAddr, target: String) -> (Proxy, u16) {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            // Dropping the JoinSet (when this task is aborted) aborts every forwarded
            // connection: the client sees its sockets reset, as in a real outage.
        });
        (Proxy { listener: task }, port)
    }

    async fn stop(self) {
        self.listener.abort();
        let _ = self.listener.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_and_recovers() {
    use std::str::FromStr;
    use std::time::{Duration, Instant};

    let Some(db) = provision::fresh_postgres_or_skip().await else {
        return;
    };
    let options = sqlx::postgres::PgConnectOptions::from_str(db.url()).unwrap();
    let server = format!("{}:{}", options.get_host(), options.get_port());
    assert!(db.url().contains(&server), "URL names host:port explicitly");
    let (proxy, port) = Proxy::start("127.0.0.1:0".parse().unwrap(), server.clone()).await;
    let proxied_url = db.url().replacen(&server, &format!("127.0.0.1:{port}"), 1);

    let store = store::connect(&proxied_url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let u = store.create_user(user("outage")).await.unwrap();
    store.record_quote(u.id, quote("OUT.US", 0)).await.unwrap();

    proxy.stop().await;
    let started = Instant::now();
    let ping = store.ping().await.unwrap_err();
    assert!(ping.is_unavailable(), "ping: {ping:?}");
    let write = store
        .record_quote(u.id, quote("OUT.US", 1))
        .await
        .unwrap_err();
    assert!(write.is_unavailable(), "record_quote: {write:?}");
    let read = store.history_page(u.id, None, None, 10).await.unwrap_err();
    assert!(read.is_unavailable(), "history_page: {read:?}");
    // Each outage names the server that was tried (never the URL, which holds a password).
    let tried = format!("127.0.0.1:{port}");
    for err in [&write, &read] {
        assert!(err.to_string().contains(&tried), "no {tried} in {err}");
    }
    let elapsed = started.elapsed();
    eprintln!("three calls during the outage failed in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "fails fast: {elapsed:?}");

    // The server is back on the same address: the same store recovers by itself.
    let (proxy, _) = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap(), server).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.record_quote(u.id, quote("OUT.US", 2)).await.unwrap();
    let names: Vec<String> = all_history(&store, u.id)
        .await
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["OUT.US name 2", "OUT.US name 0"],
        "failed write left no row"
    );
    store.close().await;
    proxy.stop().await;
}

/// A fresh PostgreSQL database (`None`: skipped, see `fresh_postgres_or_skip`), the store
/// under test on it, and a raw pool for the SQL the store does not offer.
async fn postgres_with_raw() -> Option<(
    provision::TestDatabase,
    Arc<dyn Store>,
    store::PostgresStore,
)> {
    let db = provision::fresh_postgres_or_skip().await?;
    let store = open(&db).await;
    let raw = store::PostgresStore::connect(db.url(), 1).await.unwrap();
    Some((db, store, raw))
}

/// Holds every batch that writes a SLOW.US row open for `seconds` after its insert, before its
/// commit (with the user's row lock held).
async fn stall_slow_writes(raw: &store::PostgresStore, seconds: f64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.symbol = 'SLOW.US' THEN PERFORM pg_sleep({seconds}); END IF; RETURN NEW; END $$; \
         CREATE TRIGGER stall AFTER INSERT ON history FOR EACH ROW EXECUTE FUNCTION stall();"
    )))
    .execute(raw.pool())
    .await
    .unwrap();
}

/// Two instances' writers on one PostgreSQL database, one of them slow to commit: a client
/// that paged past the slow row's position must still find it. Forced with a trigger that
/// holds the slow row's transaction open (after its insert, before its commit) while the other
/// instance writes and the client reads its first page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_paging_is_exact_while_a_writer_commits_late() {
    use std::time::Duration;

    let Some(db) = provision::fresh_postgres_or_skip().await else {
        return;
    };
    // Arrange: two instances, one user with one row, and a trigger that stalls SLOW.US.
    let (first, second) = (open(&db).await, open(&db).await);
    let raw = store::PostgresStore::connect(db.url(), 1).await.unwrap();
    stall_slow_writes(&raw, 1.5).await;
    let u = first.create_user(user("pager")).await.unwrap();
    first.record_quote(u.id, quote("OLD.US", 0)).await.unwrap();

    // Act: the slow write starts, the fast one follows on the other instance, and a client
    // reads its first page while the slow one has not committed.
    let slow = tokio::spawn({
        let first = first.clone();
        async move { first.record_quote(u.id, quote("SLOW.US", 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast = tokio::spawn({
        let second = second.clone();
        async move { second.record_quote(u.id, quote("FAST.US", 2)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page1 = first.history_page(u.id, None, None, 2).await.unwrap();
    slow.await.unwrap().unwrap();
    fast.await.unwrap().unwrap();
    let cursor = page1.last().map(|e| e.id);
    let page2 = first.history_page(u.id, None, cursor, 100).await.unwrap();

    // Assert: every row ranked at or below the first page's newest was served by the pages.
    let all = all_history(&first, u.id).await;
    let top = page1
        .first()
        .expect("the first page has OLD.US at least")
        .id;
    let expected: Vec<&str> = all
        .iter()
        .filter(|e| e.id <= top)
        .map(|e| e.symbol.as_str())
        .collect();
    let served: Vec<&str> = page1
        .iter()
        .chain(&page2)
        .map(|e| e.symbol.as_str())
        .collect();
    assert_eq!(served, expected, "all rows: {all:?}");
    let order: Vec<&str> = all.iter().map(|e| e.symbol.as_str()).collect();
    assert_eq!(order, ["FAST.US", "SLOW.US", "OLD.US"], "commit order");
    raw.pool().close().await;
}

/// During a rolling upgrade an instance of the previous version still inserts history rows
/// without a position: they get the next one, as if the current version had written them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_from_an_older_writer_get_the_next_position() {
    let Some((_db, store, raw)) = postgres_with_raw().await else {
        return;
    };
    let u = store.create_user(user("rolling")).await.unwrap();
    store.record_quote(u.id, quote("NEW.US", 0)).await.unwrap();

    // The previous version's INSERT: no `seq` column.
    sqlx::query(
        "INSERT INTO history (user_id, requested_at, symbol, name, open, high, low, close) \
         VALUES ($1, now(), 'OLD.US', 'old writer', 1, 1, 1, 1)",
    )
    .bind(u.id)
    .execute(raw.pool())
    .await
    .unwrap();
    store
        .record_quote(u.id, quote("NEWER.US", 1))
        .await
        .unwrap();

    let rows = all_history(&store, u.id).await;
    let seen: Vec<(i64, &str)> = rows.iter().map(|e| (e.id, e.symbol.as_str())).collect();
    assert_eq!(seen, [(3, "NEWER.US"), (2, "OLD.US"), (1, "NEW.US")]);
    raw.pool().close().await;
}

/// The backends of this test's database whose last statement was a history batch.
async fn backends_that_wrote_history(raw: &store::PostgresStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND query LIKE 'WITH input AS%'",
    )
    .fetch_one(raw.pool())
    .await
    .unwrap()
}

/// Batches one after another commit on one connection: handing it back to the pool after
/// each would cost a ping round trip per batch (sqlx pings whatever returns to its pool) and
/// move the next batch to another connection meanwhile. (Within half a second: a connection
/// goes back to the pool a second after it left it, on purpose.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batches_in_a_row_commit_on_one_connection() {
    use std::time::{Duration, Instant};

    let Some((_db, store, raw)) = postgres_with_raw().await else {
        return;
    };
    let u = store.create_user(user("steady")).await.unwrap();

    let started = Instant::now();
    let mut written = 0;
    while written < 20 && (written < 3 || started.elapsed() < Duration::from_millis(500)) {
        store
            .record_quote(u.id, quote("ROW.US", written))
            .await
            .unwrap();
        written += 1;
    }

    assert_eq!(backends_that_wrote_history(&raw).await, 1);
    assert_eq!(all_history(&store, u.id).await.len(), written as usize);
    raw.pool().close().await;
}

/// A connection whose operation ran to the end is kept out of the pool for the next
/// operation (no ping on its way back), and a quiet store gives it back: the pool's own
/// upkeep and anything asking the pool directly get it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_quiet_store_gives_its_connections_back_to_the_pool() {
    use std::time::{Duration, Instant};

    let Some(db) = provision::fresh_postgres_or_skip().await else {
        return;
    };
    let store = open(&db).await;
    let pool = store.postgres_pool().expect("a PostgreSQL store");
    let u = store.create_user(user("quiet")).await.unwrap();
    store
        .record_quote(u.id, quote("QUIET.US", 0))
        .await
        .unwrap();
    assert_eq!(all_history(&store, u.id).await.len(), 1);
    let stats = store.pool_stats();
    assert!(
        pool.num_idle() < pool.size() as usize,
        "kept out of the pool right after the operations: {} of {} idle in it",
        pool.num_idle(),
        pool.size()
    );
    assert_eq!(stats.idle, stats.size as usize, "yet idle: {stats:?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.num_idle() < pool.size() as usize {
        assert!(
            Instant::now() < deadline,
            "never given back: {} of {} idle in the pool",
            pool.num_idle(),
            pool.size()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store
        .record_quote(u.id, quote("QUIET.US", 1))
        .await
        .unwrap();
    assert_eq!(all_history(&store, u.id).await.len(), 2);
}

/// Many callers on a pool of two, reading and writing at once, while something else asks the
/// pool itself (as the login throttle does): nobody waits out the acquire timeout for a
/// connection that sits kept and unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kept_connections_reach_every_waiting_caller() {
    use std::time::Duration;

    let Some(db) = provision::fresh_postgres_or_skip().await else {
        return;
    };
    let store = open(&db).await;
    let small: Arc<dyn Store> = Arc::new(store::PostgresStore::connect(db.url(), 2).await.unwrap());
    let pool = small.postgres_pool().expect("a PostgreSQL store");
    let u = store.create_user(user("crowd")).await.unwrap();

    let callers = (0..64).map(|caller| {
        let small = small.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                if caller % 4 == 0 {
                    small.record_quote(u.id, quote("CROWD.US", i)).await?;
                } else {
                    small.history_page(u.id, None, None, 10).await?;
                }
            }
            Ok::<_, StoreError>(())
        })
    });
    let direct = tokio::spawn(async move {
        for _ in 0..20 {
            sqlx::query("SELECT 1").execute(&pool).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, sqlx::Error>(())
    });

    for caller in callers.collect::<Vec<_>>() {
        caller
            .await
            .unwrap()
            .expect("every caller got a connection");
    }
    direct
        .await
        .unwrap()
        .expect("the pool's direct user got one too");
    assert_eq!(all_history(&store, u.id).await.len(), 16 * 10);
}

/// A read cancelled while its query runs (a client that went away) does not hand its
/// connection on as ready for the next operation: it goes back to the pool, whose ping waits
/// out the query's answer, and the next read on it gets its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_cancelled_read_gives_its_connection_back_to_the_pool() {
    use sqlx::Connection;
    use std::time::{Duration, Instant};

    let Some((db, store, single)) = postgres_with_raw().await else {
        return;
    };
    let a = store.create_user(user("first")).await.unwrap();
    let b = store.create_user(user("second")).await.unwrap();
    store.record_quote(a.id, quote("A.US", 0)).await.unwrap();
    store.record_quote(b.id, quote("B.US", 1)).await.unwrap();
    // Holds every read of `history` until committed.
    let mut locker = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE history IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        single.history_page(a.id, None, None, 10),
    )
    .await;
    assert!(cancelled.is_err(), "the read waited for the lock");
    lock.commit().await.unwrap();

    // Well before a kept connection would go back (a second after it left the pool).
    let deadline = Instant::now() + Duration::from_millis(500);
    while single.pool().num_idle() < 1 {
        assert!(
            Instant::now() < deadline,
            "the cancelled read's connection was kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let page = single.history_page(b.id, None, None, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].symbol, "B.US");
    single.pool().close().await;
}

/// With a pool of one connection, a read right after a write gets the connection at once:
/// the writer hands it to the waiting read instead of keeping it until it goes quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_pool_of_one_is_never_kept_from_its_readers() {
    use std::time::Duration;

    let Some((_db, store, single)) = postgres_with_raw().await else {
        return;
    };
    let u = store.create_user(user("single")).await.unwrap();

    single.record_quote(u.id, quote("ONE.US", 0)).await.unwrap();
    let page = tokio::time::timeout(
        Duration::from_millis(500),
        single.history_page(u.id, None, None, 10),
    )
    .await
    .expect("the read did not wait for the writer's connection")
    .unwrap();

    assert_eq!(page.len(), 1);
    single.record_quote(u.id, quote("ONE.US", 1)).await.unwrap();
    single.pool().close().await;
}

/// History rows of a deleted user, counted straight from the table (the store's own reads
/// ask for one user's rows and cannot show what is left behind).
async fn rows_left_for(raw: &store::PostgresStore, user_id: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM history WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(raw.pool())
        .await
        .unwrap()
}

/// A user deleted while a batch holding the user's row lock commits: the deletion waits for
/// the lock, then removes that batch's rows too, so nothing is left without an owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deleting_a_user_removes_rows_committed_while_it_waited() {
    use std::time::Duration;

    let Some((_db, store, raw)) = postgres_with_raw().await else {
        return;
    };
    // Arrange: a trigger that holds SLOW.US's batch open after its insert, before its commit.
    stall_slow_writes(&raw, 1.0).await;
    let u = store.create_user(user("leaving")).await.unwrap();
    store.record_quote(u.id, quote("OLD.US", 0)).await.unwrap();

    // Act: the slow write takes the user's lock; the deletion starts while it holds it.
    let slow = tokio::spawn({
        let store = store.clone();
        async move { store.record_quote(u.id, quote("SLOW.US", 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = store.delete_user("leaving").await.unwrap();

    // Assert: the write had committed first (it answered 200), then went with its user.
    slow.await.unwrap().unwrap();
    assert!(deleted);
    assert_eq!(rows_left_for(&raw, u.id).await, 0);
    raw.pool().close().await;
}

/// During a rolling upgrade an instance of an older version deletes users with a plain
/// DELETE, relying on the database to remove their history: it still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_user_deleted_by_plain_sql_takes_their_history() {
    let Some((_db, store, raw)) = postgres_with_raw().await else {
        return;
    };
    let (gone, kept) = gone_and_kept(&store, "plain_gone", "plain_kept", 3).await;

    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(gone.id)
        .execute(raw.pool())
        .await
        .unwrap();

    assert_eq!(rows_left_for(&raw, gone.id).await, 0);
    assert_eq!(rows_left_for(&raw, kept.id).await, 3);
    raw.pool().close().await;
}
