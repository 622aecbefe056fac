//! `[metrics]`: the Prometheus endpoint.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Off: no `/metrics`, and nothing on the delivery path counts.
    pub enabled: bool,
    /// A listener of its own for `/metrics` (then the main listener does not serve it), so
    /// the figures can stay on an internal interface.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}
