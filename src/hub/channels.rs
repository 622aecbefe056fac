//! The configured channels, by name and by small integer id, and a client's subscriptions as a
//! bit set (so the delivery path checks a subscription with one atomic load).

/// Index of a channel in the configured list.
pub type ChannelId = usize;

/// A set of channels, one bit per [`ChannelId`] (at most 64 channels, enforced by config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelMask(pub u64);

impl ChannelMask {
    pub fn of(ids: &[ChannelId]) -> Self {
        Self(ids.iter().fold(0, |m, id| m | 1 << id))
    }

    pub fn contains(self, id: ChannelId) -> bool {
        self.0 & (1 << id) != 0
    }
}

#[derive(Debug, Clone)]
pub struct Channels {
    names: Vec<String>,
    global: ChannelId,
}

/// What a client asked for, sorted into what the hub has and what it does not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub known: Vec<ChannelId>,
    pub unknown: Vec<String>,
}

impl Channels {
    /// `names` come validated from config: unique, at most 64, `global` among them.
    pub fn new(names: &[String]) -> Self {
        let global = names.iter().position(|n| n == "global").unwrap_or(0);
        Self {
            names: names.to_vec(),
            global,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn global(&self) -> ChannelId {
        self.global
    }

    pub fn id(&self, name: &str) -> Option<ChannelId> {
        self.names.iter().position(|n| n == name)
    }

    pub fn name(&self, id: ChannelId) -> &str {
        self.names.get(id).map(String::as_str).unwrap_or("")
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Sorts normalised names (see `protocol::split_event_types`) into known ids and unknown
    /// names, keeping the order they were asked in.
    pub fn resolve(&self, requested: &[String]) -> Resolved {
        let mut resolved = Resolved::default();
        for name in requested {
            match self.id(name) {
                Some(id) => resolved.known.push(id),
                None => resolved.unknown.push(name.clone()),
            }
        }
        resolved
    }

    /// The subscription list a new socket gets: the requested channels in order, then `global`.
    pub fn subscription_list(&self, requested: &[ChannelId]) -> Vec<ChannelId> {
        let mut list: Vec<ChannelId> = requested
            .iter()
            .copied()
            .filter(|id| *id != self.global)
            .collect();
        list.push(self.global);
        list
    }

    /// "global, pdfm, ..." for error messages that name the valid channels.
    pub fn describe(&self) -> String {
        self.names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Channels {
        Channels::new(&["global", "pdfm", "orchestrator", "health", "system"].map(String::from))
    }

    #[test]
    fn resolve_keeps_order_and_reports_unknown_names() {
        let c = channels();
        let r = c.resolve(&["health".into(), "bogus".into(), "pdfm".into()]);
        assert_eq!(r.known, [3, 1]);
        assert_eq!(r.unknown, ["bogus"]);
    }

    #[test]
    fn global_always_comes_last_once() {
        let c = channels();
        assert_eq!(c.subscription_list(&[0, 1, 3]), [1, 3, 0]);
        assert_eq!(c.subscription_list(&[]), [0]);
    }

    #[test]
    fn masks() {
        let m = ChannelMask::of(&[0, 3]);
        assert!(m.contains(0) && m.contains(3) && !m.contains(1));
    }
}
