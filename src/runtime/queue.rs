//! The cross-shard queue: how one shard asks another to run a closure and
//! gets the result back.
//!
//! A job is a boxed `Send` closure that, on the receiving thread, turns the
//! receiver's context (`Rc<C>`, never shared) into a local future. The queue is
//! bounded, so a full queue makes senders wait: that is the back-pressure
//! between shards. Results come back on a oneshot channel.
//!
//! Generic over the context so that the benchmark of a round trip runs exactly
//! this code with a context of its own (`benches/hot_paths.rs`).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use futures_channel::oneshot;

/// Work sent to another thread: run there with that thread's context.
pub type Job<C> = Box<dyn FnOnce(Rc<C>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The sending end of a queue.
pub type Sender<C> = async_channel::Sender<Job<C>>;
/// The receiving end of a queue.
pub type Receiver<C> = async_channel::Receiver<Job<C>>;

/// A bounded queue of `depth` jobs.
pub fn bounded<C>(depth: usize) -> (Sender<C>, Receiver<C>) {
    async_channel::bounded(depth)
}

/// Why a call did not return a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The receiving side is gone (its thread stopped).
    Closed,
    /// The receiving side dropped the job without running it to the end.
    Dropped,
}

/// Sends `f` to the queue's owner and waits for its result. The job runs as a
/// task of its own over there, so dropping this future (a client that
/// disconnects) does not cancel the work halfway.
pub async fn call<C, R, F, Fut>(sender: &Sender<C>, f: F) -> Result<R, CallError>
where
    C: 'static,
    R: Send + 'static,
    F: FnOnce(Rc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job<C> = Box::new(move |context| {
        Box::pin(async move {
            let _ = tx.send(f(context).await);
        })
    });
    sender.send(job).await.map_err(|_| CallError::Closed)?;
    rx.await.map_err(|_| CallError::Dropped)
}

/// Runs the jobs sent to this queue, each as its own task on the current
/// runtime, until every sender is gone.
pub async fn serve<C: 'static>(context: Rc<C>, receiver: Receiver<C>) {
    while let Ok(job) = receiver.recv().await {
        compio::runtime::spawn(job(context.clone())).detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_runs_on_the_other_thread_and_returns_its_result() {
        let (sender, receiver) = bounded::<String>(4);
        let server = std::thread::spawn(move || {
            compio::runtime::Runtime::new().unwrap().block_on(serve(
                Rc::new(format!("{:?}", std::thread::current().id())),
                receiver,
            ))
        });
        let here = format!("{:?}", std::thread::current().id());
        let runtime = compio::runtime::Runtime::new().unwrap();
        let there = runtime
            .block_on(call(&sender, |context: Rc<String>| async move {
                context.to_string()
            }))
            .unwrap();
        assert_ne!(there, here);
        let sum = runtime
            .block_on(call(&sender, |_| async { (1..=10).sum::<i32>() }))
            .unwrap();
        assert_eq!(sum, 55);
        drop(sender);
        server.join().unwrap();
    }

    #[test]
    fn a_call_to_a_stopped_queue_fails() {
        let (sender, receiver) = bounded::<()>(1);
        drop(receiver);
        let runtime = compio::runtime::Runtime::new().unwrap();
        let result = runtime.block_on(call(&sender, |_| async { 1 }));
        assert_eq!(result, Err(CallError::Closed));
    }
}
