//! `[console]`: the web console at `/console` (static pages embedded in the binary).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Off: no `/console` routes at all (they answer 404 like any unknown path). The console
    /// holds no secret and grants nothing (it calls the same routes with the credential the
    /// user pastes), so it is on by default; an operator who wants no HTML on the hub turns it
    /// off.
    pub enabled: bool,
}
