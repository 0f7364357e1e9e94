use std::future::Future;
use std::time::Duration;

/// Multiply a deadline by `CORRAL_TEST_PATIENCE` (default 1): shared,
/// noisy machines need slack, never tighter bounds.
pub fn patience(d: Duration) -> Duration {
    let factor: f64 = std::env::var("CORRAL_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    d.mul_f64(factor.max(1.0))
}

/// Poll `check` until it returns `Ok(T)` or the (stretched) deadline
/// passes; then fail with the last reason it gave.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = patience(deadline);
    let start = tokio::time::Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(why) => why,
        };
        if start.elapsed() > deadline {
            panic!("{what}: not true after {deadline:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
