//! Pool: run N numbered REST jobs with bounded concurrency, each worker keeping one kept-alive
//! HTTP client per target node.
//!
//! A job receives the worker's clients by value and hands them back with its result, which keeps
//! the borrow story simple for async closures. The first error stops the pool.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::http::HttpClient;
use crate::target::Target;

/// One HTTP client per target, owned by one worker.
pub type Clients = Vec<HttpClient>;

/// Run `job(i, clients)` for every `i` in `0..count` on `concurrency` workers; results are in
/// order of `i`.
pub async fn run<T, E, F, Fut>(targets: &[Target], count: usize, concurrency: usize, job: F) -> Result<Vec<T>, E>
where
    T: Send + 'static,
    E: Send + 'static,
    F: Fn(usize, Clients) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Clients, Result<T, E>)> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let job = Arc::clone(&job);
        let next = Arc::clone(&next);
        let failed = Arc::clone(&failed);
        let mut clients: Clients = targets.iter().cloned().map(HttpClient::new).collect();
        workers.push(tokio::spawn(async move {
            let mut done: Vec<(usize, T)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || failed.load(Ordering::Relaxed) {
                    return Ok(done);
                }
                let (back, result) = job(i, clients).await;
                clients = back;
                match result {
                    Ok(value) => done.push((i, value)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }));
    }
    let mut all: Vec<(usize, T)> = Vec::with_capacity(count);
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(done)) => all.extend(done),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            // A panicking job is a bug in the loader: surface it as a panic here.
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_in_order_and_errors_stop_the_pool() {
        let doubled: Result<Vec<usize>, String> =
            run(&[], 50, 4, |i, clients| async move { (clients, Ok(i * 2)) }).await;
        assert_eq!(doubled.expect("ok"), (0..50).map(|i| i * 2).collect::<Vec<_>>());
        let failing: Result<Vec<usize>, String> = run(&[], 50, 4, |i, clients| async move {
            let result = if i == 7 { Err(format!("job {i} failed")) } else { Ok(i) };
            (clients, result)
        })
        .await;
        assert_eq!(failing.expect_err("fails"), "job 7 failed");
    }
}
