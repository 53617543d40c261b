//! Panic isolation for connection tasks.
//!
//! monoio polls its tasks without catching panics: a panic in one connection's
//! task would unwind through the runtime and end the worker thread with every
//! other connection on it. Each connection's future is therefore wrapped in
//! [`CatchUnwind`], which turns a panic into an `Err` for that task alone; the
//! connection's socket is dropped and the rest of the thread keeps serving.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that completes with `Err(payload)` if polling the inner future panics.
pub struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        CatchUnwind {
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The inner future is dropped right after a panic, never polled again,
        // so whatever state the panic left it in is not observed.
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The message of a panic payload, for the log.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn panic_beside_a_survivor() {
        let survivor = monoio::spawn(async {
            monoio::time::sleep(Duration::from_millis(30)).await;
            42
        });
        let crashed = monoio::spawn(CatchUnwind::new(async {
            monoio::time::sleep(Duration::from_millis(5)).await;
            panic!("boom in one connection");
        }));
        let payload = crashed.await.expect_err("the panic is caught");
        assert_eq!(panic_message(payload.as_ref()), "boom in one connection");
        // The other task on the same thread runs on to its end.
        assert_eq!(survivor.await, 42);
    }

    #[test]
    fn a_panicking_task_leaves_the_thread_and_its_other_tasks_running_on_io_uring() {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime");
        rt.block_on(panic_beside_a_survivor());
    }

    #[test]
    fn a_panicking_task_leaves_the_thread_and_its_other_tasks_running_on_legacy() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("legacy runtime");
        rt.block_on(panic_beside_a_survivor());
    }
}
