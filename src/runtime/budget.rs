//! A budget of bytes shared by the tasks of one thread: what a connection, or
//! a whole shard, holds of requests read and not yet answered.

use std::cell::Cell;

use event_listener::Event;

pub struct ByteBudget {
    held: Cell<usize>,
    freed: Event,
    max: usize,
}

impl ByteBudget {
    pub fn new(max: usize) -> ByteBudget {
        ByteBudget {
            held: Cell::new(0),
            freed: Event::new(),
            max,
        }
    }

    /// Waits until `bytes` more fit, then takes them; returns what is held
    /// now. Bytes larger than the whole budget are taken when nothing else is
    /// held, so any legal request makes progress. `give_up` ends the wait early
    /// (the bytes are taken anyway, for the caller to give back).
    pub async fn take(&self, bytes: usize, give_up: impl Fn() -> bool) -> usize {
        loop {
            let held = self.held.get();
            if held == 0 || held + bytes <= self.max || give_up() {
                break;
            }
            let listener = self.freed.listen();
            if self.held.get() != held {
                continue;
            }
            listener.await;
        }
        let held = self.held.get() + bytes;
        self.held.set(held);
        held
    }

    /// Gives back `bytes` taken earlier; returns what is still held.
    pub fn give_back(&self, bytes: usize) -> usize {
        let held = self.held.get() - bytes;
        self.held.set(held);
        self.freed.notify(usize::MAX);
        held
    }

    /// Wakes every waiter so it can look at its `give_up` condition again.
    pub fn wake_all(&self) {
        self.freed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_wait_for_room_and_an_oversized_take_needs_an_empty_budget() {
        let runtime = compio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let budget = std::rc::Rc::new(ByteBudget::new(100));
            assert_eq!(
                budget.take(150, || false).await,
                150,
                "alone, over the budget"
            );
            let waiting = {
                let budget = budget.clone();
                compio::runtime::spawn(async move { budget.take(10, || false).await })
            };
            compio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert_eq!(budget.give_back(150), 0);
            assert_eq!(waiting.await.unwrap(), 10);
            assert_eq!(budget.take(90, || false).await, 100, "exactly full");
            assert_eq!(budget.take(1, || true).await, 101, "given up: taken anyway");
        });
    }
}
