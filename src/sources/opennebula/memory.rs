//! The last state the bridge saw for each VM or host, so an event can carry `previous_state`.
//!
//! Bounded: a cloud creates and destroys VMs forever, so the memory holds at most `capacity`
//! objects and forgets the one whose state changed least recently when it is full. VMs are
//! also forgotten when they reach DONE (see `mapping`).

use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct StateMemory {
    capacity: usize,
    /// id → (state, when it was last set).
    states: HashMap<u64, (String, u64)>,
    /// when → id: the oldest entry is the first.
    order: BTreeMap<u64, u64>,
    clock: u64,
}

impl StateMemory {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            states: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Remembers `state` for `id` and returns the state remembered before, if any.
    pub fn replace(&mut self, id: u64, state: &str) -> Option<String> {
        self.clock += 1;
        let previous = self.forget(id);
        if self.states.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.states.remove(&oldest);
        }
        self.states.insert(id, (state.to_owned(), self.clock));
        self.order.insert(self.clock, id);
        previous
    }

    /// Forgets `id`; returns its last state.
    pub fn forget(&mut self, id: u64) -> Option<String> {
        let (state, at) = self.states.remove(&id)?;
        self.order.remove(&at);
        Some(state)
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_previous_state_per_id() {
        let mut m = StateMemory::new(10);
        assert_eq!(m.replace(1, "pending"), None);
        assert_eq!(m.replace(2, "pending"), None);
        assert_eq!(m.replace(1, "running").as_deref(), Some("pending"));
        assert_eq!(m.replace(1, "poweroff").as_deref(), Some("running"));
        assert_eq!(m.forget(1).as_deref(), Some("poweroff"));
        assert_eq!(m.replace(1, "pending"), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn forgets_the_least_recently_changed_when_full() {
        let mut m = StateMemory::new(3);
        m.replace(1, "a");
        m.replace(2, "a");
        m.replace(3, "a");
        m.replace(1, "b"); // 1 is now the most recent; 2 the oldest
        m.replace(4, "a");
        assert_eq!(m.len(), 3);
        assert_eq!(m.forget(2), None);
        assert_eq!(m.forget(1).as_deref(), Some("b"));
        assert_eq!(m.forget(3).as_deref(), Some("a"));
        assert_eq!(m.forget(4).as_deref(), Some("a"));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn never_grows_past_its_capacity() {
        let mut m = StateMemory::new(100);
        for id in 0..10_000 {
            m.replace(id % 1000, "x");
            assert!(m.len() <= 100);
        }
        assert_eq!(m.order.len(), m.states.len());
    }
}
