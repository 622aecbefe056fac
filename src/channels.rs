//! The configured channels, by name and by small integer id, and a client's subscriptions as a
//! bit set (so the delivery path checks a subscription with one atomic load).

/// A channel, by its position in the configured list (at most 64, enforced by config). Only
/// [`Channels`] makes one, so an id always names a configured channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(u8);

impl ChannelId {
    /// The position in the configured list, for indexing per-channel tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    fn bit(self) -> u64 {
        1 << self.0
    }
}

/// A set of channels, one bit per [`ChannelId`] (at most 64 channels, enforced by config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelMask(pub u64);

impl ChannelMask {
    pub fn of(ids: &[ChannelId]) -> Self {
        Self(ids.iter().fold(0, |m, id| m | id.bit()))
    }

    pub fn contains(self, id: ChannelId) -> bool {
        self.0 & id.bit() != 0
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
        let names = names.to_vec();
        let global = position(&names, "global").unwrap_or(ChannelId(0));
        Self { names, global }
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
        position(&self.names, name)
    }

    /// Every channel, in configured order.
    pub fn ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        (0..self.names.len()).filter_map(|i| u8::try_from(i).ok().map(ChannelId))
    }

    pub fn name(&self, id: ChannelId) -> &str {
        self.names.get(id.index()).map(String::as_str).unwrap_or("")
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

/// The id of `name` in `names`; none past the 256th (config allows 64).
fn position(names: &[String], name: &str) -> Option<ChannelId> {
    let i = names.iter().position(|n| n == name)?;
    u8::try_from(i).ok().map(ChannelId)
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
        assert_eq!(r.known, [ChannelId(3), ChannelId(1)]);
        assert_eq!(r.unknown, ["bogus"]);
    }

    #[test]
    fn global_always_comes_last_once() {
        let c = channels();
        let [global, pdfm, health] = [0, 1, 3].map(ChannelId);
        assert_eq!(
            c.subscription_list(&[global, pdfm, health]),
            [pdfm, health, global]
        );
        assert_eq!(c.subscription_list(&[]), [global]);
        assert_eq!(c.ids().collect::<Vec<_>>(), [0, 1, 2, 3, 4].map(ChannelId));
    }

    #[test]
    fn masks() {
        let [a, b, c] = [0, 1, 3].map(ChannelId);
        let m = ChannelMask::of(&[a, c]);
        assert!(m.contains(a) && m.contains(c) && !m.contains(b));
    }
}
