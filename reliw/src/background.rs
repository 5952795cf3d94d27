//! Background threads with a small runtime of their own (the Redis
//! subscriber, the metrics listener): away from the request workers, so
//! neither can slow a worker down, and tasks may be `!Send`.

use std::future::Future;

/// Starts thread `name` running the future `make` builds, on a
/// current-thread tokio runtime with a `LocalSet`, until it returns.
pub fn spawn<F, M>(name: &str, make: M) -> std::io::Result<()>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(thread = thread_name, error = %e, "cannot start a runtime; this part is off");
                    return;
                }
            };
            tokio::task::LocalSet::new().block_on(&runtime, make());
        })
        .map(drop)
}
