//! Two API instances and two quote workers under steady load on both APIs, then: SIGKILL one
//! worker while it holds fetched, unanswered requests; SIGKILL one API instance; restart the
//! killed worker; SIGTERM the other worker; restart both. The clients' ledger is then held
//! against the database and against the clock.

use std::time::{Duration, Instant};

use tests::ledger::{Call, Client, Ledger, Outcome};
use tests::load::{Load, summary, wait_until};
use tests::processes::Process;

use crate::{CLIENT_TIMEOUT, Cluster, PAUSE, SYMBOLS, assert_rows_match, hangs};

/// Clients per API instance.
const CLIENTS: usize = 3;
/// Requests for symbols nobody else asks for, sent through the surviving API just before a
/// worker is killed: each is one RPC message, so the feed's hits for it say who fetched it.
const PROBES: usize = 16;
/// Feed latency while the probes are out: long enough that the doomed worker still holds
/// them (fetched, unanswered, unacked) when it is killed, well inside the RPC timeout.
const PROBE_LATENCY: Duration = Duration::from_millis(800);
const LOAD_LATENCY: Duration = Duration::from_millis(50);
/// Longest stretch without a 200 from the instance that is never killed.
const MAX_GAP: Duration = Duration::from_secs(2);

fn base(api: &Process) -> String {
    format!("http://{}", api.addr)
}

async fn clients(cluster: &Cluster, api: &Process, prefix: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(cluster.client(api, &format!("{prefix}{i}")).await);
    }
    clients
}

/// One probe: its call, and the feed's hits for its symbol when the call ended and at the
/// end of the test.
struct Probe {
    call: Call,
    hits_at_answer: u64,
    hits_at_end: u64,
}

/// Sends every probe through `api` at once, waits until the feed has seen each of them (so
/// each is held by some worker), SIGKILLs `doomed`, and waits for the probes' answers.
async fn kill_worker_holding_probes(
    cluster: &Cluster,
    api: &Process,
    doomed: &mut Process,
) -> Vec<(Call, u64)> {
    let prober = cluster.client(api, "prober").await;
    let ledger = Ledger::with_client_timeout(CLIENT_TIMEOUT);
    let symbols: Vec<String> = (0..PROBES).map(|i| format!("probe{i}.us")).collect();
    cluster.stooq.set_latency(PROBE_LATENCY);
    let tasks: Vec<_> = symbols
        .iter()
        .map(|symbol| {
            let (ledger, http, base, prober) = (
                ledger.clone(),
                cluster.http.clone(),
                base(api),
                prober.clone(),
            );
            let (symbol, feed) = (symbol.clone(), cluster.stooq.state().clone());
            tokio::spawn(async move {
                let call = ledger.stock(&http, &base, &prober, &symbol).await;
                let hits = feed.symbol_hits(&symbol);
                (call, hits)
            })
        })
        .collect();
    let all_fetched = wait_until(Duration::from_secs(5), || async {
        symbols.iter().all(|s| cluster.stooq.symbol_hits(s) > 0)
    })
    .await;
    assert!(
        all_fetched.is_some(),
        "the workers never fetched every probe: {:?}",
        cluster.stooq.requests()
    );
    doomed.kill_9();
    cluster.stooq.set_latency(LOAD_LATENCY);
    let mut probes = Vec::new();
    for task in tasks {
        probes.push(task.await.expect("probe task"));
    }
    probes
}

/// The longest stretch of `[from, to]` in which no call ended with a 200.
fn longest_gap_between_200s(calls: &[Call], from: Instant, to: Instant) -> Duration {
    let mut ends: Vec<Instant> = calls
        .iter()
        .filter(|c| c.status() == Some(200))
        .map(Call::ended)
        .collect();
    ends.push(from);
    ends.push(to);
    ends.sort();
    ends.windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_two_workers_keep_every_answer_through_kills_and_restarts() {
    // Arrange: 2 workers, 2 APIs, steady load on both APIs.
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    cluster.stooq.set_latency(LOAD_LATENCY);
    let mut worker_1 = cluster.worker("worker-1").await;
    let mut worker_2 = cluster.worker("worker-2").await;
    let mut api_a = cluster.api("api-a").await;
    let mut api_b = cluster.api("api-b").await;
    api_a.wait_ready(&cluster.http).await;
    api_b.wait_ready(&cluster.http).await;
    let on_a = clients(&cluster, &api_a, "a").await;
    let on_b = clients(&cluster, &api_b, "b").await;
    let load = |api: &Process, clients: &[Client]| {
        let ledger = Ledger::with_client_timeout(CLIENT_TIMEOUT);
        Load::start_at(&cluster.http, &base(api), clients, &SYMBOLS, PAUSE, ledger)
    };
    let load_a = load(&api_a, &on_a);
    let load_b = load(&api_b, &on_b);
    let load_started = load_b.started;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Act 1: SIGKILL worker 1 while it holds probes.
    let probes = kill_worker_holding_probes(&cluster, &api_b, &mut worker_1).await;
    drop(worker_1);

    // Act 2: SIGKILL API A mid-load; its clients' calls in flight are cut off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_killed = Instant::now();
    api_a.kill_9();
    let calls_a_before = load_a.stop().await;

    // Act 3: worker 1 back, then SIGTERM worker 2 (worker 1 takes over its queue share).
    let _worker_1 = cluster.worker("worker-1-restarted").await;
    worker_2.sigterm();
    let worker_2_exit = worker_2.wait_exit(Duration::from_secs(8)).await;

    // Act 4: API A and worker 2 back; A's clients carry on with the same tokens.
    let mut api_a = cluster.api("api-a-restarted").await;
    api_a.wait_ready(&cluster.http).await;
    let load_a = load(&api_a, &on_a);
    let _worker_2 = cluster.worker("worker-2-restarted").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls_a_after = load_a.stop().await;
    let calls_b = load_b.stop().await;
    let load_ended = Instant::now();
    let probes: Vec<Probe> = probes
        .into_iter()
        .map(|(call, hits_at_answer)| {
            let hits_at_end = cluster.stooq.symbol_hits(&call.symbol);
            Probe {
                call,
                hits_at_answer,
                hits_at_end,
            }
        })
        .collect();

    // Assert.
    let status = worker_2_exit.expect("worker 2 still running 8 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "worker 2 after SIGTERM: {status}");

    let all: Vec<Call> = [&calls_a_before, &calls_a_after, &calls_b]
        .into_iter()
        .flatten()
        .chain(probes.iter().map(|p| &p.call))
        .cloned()
        .collect();
    let hung = hangs(&all);
    assert!(
        hung.is_empty(),
        "{} call(s) hung: {:?}",
        hung.len(),
        &hung[..hung.len().min(3)]
    );

    // The surviving instance answered everything, and kept serving 200s.
    let b_refs: Vec<&Call> = calls_b.iter().collect();
    eprintln!("api B: {}", summary(&b_refs));
    assert!(
        calls_b
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Answer { .. })),
        "api B left calls unanswered: {}",
        summary(&b_refs)
    );
    assert!(
        calls_b
            .iter()
            .all(|c| matches!(c.status(), Some(200 | 504))),
        "api B answered something other than 200 or a timeout: {}",
        summary(&b_refs)
    );
    let gap = longest_gap_between_200s(&calls_b, load_started, load_ended);
    eprintln!("api B: longest stretch without a 200: {gap:?}");
    assert!(gap <= MAX_GAP, "api B served no 200 for {gap:?}");

    // API A: every call made before its kill was answered; what was cut off ended after it.
    let a_before: Vec<&Call> = calls_a_before.iter().collect();
    let a_after: Vec<&Call> = calls_a_after.iter().collect();
    eprintln!(
        "api A before its kill: {}, after its restart: {}",
        summary(&a_before),
        summary(&a_after)
    );
    let cut_off: Vec<&Call> = calls_a_before
        .iter()
        .filter(|c| !matches!(c.outcome, Outcome::Answer { .. }))
        .collect();
    assert!(
        cut_off.iter().all(|c| c.ended() >= a_killed),
        "api A failed calls before it was killed: {}",
        summary(&a_before)
    );
    assert!(
        calls_a_after
            .iter()
            .all(|c| matches!(c.status(), Some(200 | 504))),
        "the restarted api A: {}",
        summary(&a_after)
    );
    assert!(
        calls_a_after.iter().any(|c| c.status() == Some(200)),
        "the restarted api A served nothing"
    );

    // The killed worker's requests were answered by the other worker, or expired unfetched.
    let redelivered = probes.iter().filter(|p| p.hits_at_answer >= 2).count();
    for probe in &probes {
        match probe.call.status() {
            Some(200) => {}
            Some(504) => assert_eq!(
                probe.hits_at_end, probe.hits_at_answer,
                "{}: fetched after its caller had its 504",
                probe.call.symbol
            ),
            _ => panic!("probe {} got {:?}", probe.call.symbol, probe.call.outcome),
        }
        assert!(
            probe.hits_at_answer <= 2,
            "{} fetched {} times",
            probe.call.symbol,
            probe.hits_at_answer
        );
    }
    let answered = probes
        .iter()
        .filter(|p| p.call.status() == Some(200))
        .count();
    eprintln!(
        "probes: {answered}/{PROBES} answered, {redelivered} of them held by the killed worker \
         and fetched again by the other"
    );
    assert!(
        redelivered > 0,
        "the killed worker held no probe: its unacked messages were not exercised"
    );

    // Every 200 has exactly its row (calls cut off by API A's kill may have one), and the
    // counters equal the rows.
    assert_rows_match(cluster.store.as_ref(), &all, &cut_off).await;
}
