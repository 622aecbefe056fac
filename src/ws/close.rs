//! Close codes the hub uses: RFC 6455's from axum's `close_code`, and the hub's own 4xxx.

use axum::extract::ws::close_code;

pub const GOING_AWAY: u16 = close_code::AWAY;
pub const PROTOCOL_ERROR: u16 = close_code::PROTOCOL;
pub const INVALID_DATA: u16 = close_code::INVALID;
pub const POLICY: u16 = close_code::POLICY;
pub const TOO_BIG: u16 = close_code::SIZE;
/// No frame from the client within `idle_timeout_secs`.
pub const HEARTBEAT_TIMEOUT: u16 = 4000;
/// An administrator disconnected the socket (`DELETE /v1/admin/clients/{id}`); a client may
/// reconnect and resume.
pub const ADMIN_DISCONNECT: u16 = 4001;
/// The client fell `send_queue` frames behind, or its socket took nothing for
/// `write_timeout_secs`.
pub const SLOW_CONSUMER: u16 = 4008;
/// The channel's numbering restarted under the socket (a cluster whose Redis lost its data
/// starts a new epoch): its seqs mean nothing now. Resuming with the old epoch is answered
/// `recovered: false` with the reason, as after a single node's restart.
pub const HISTORY_RESET: u16 = 4009;
