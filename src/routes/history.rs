//! `GET /v1/events`: kept events for clients that poll.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::app::state::AppState;
use crate::auth;
use crate::broker::HistoryPage;
use crate::channels::ChannelId;
use crate::error::ApiError;
use crate::filter::Filter;
use crate::hub::Hub;

use super::extract::{Claimed, Read};

/// Most events one `GET /v1/events` returns.
const MAX_HISTORY_PAGE: usize = 1000;

/// `GET /v1/events?event_type=pdfm&since=<seq>&limit=N`: kept events after `since`, for
/// clients that poll instead of holding a socket.
pub(crate) async fn history(
    State(app): State<AppState>,
    _: Claimed<Read>,
    query: HistoryQuery,
) -> Result<Response, ApiError> {
    // A cluster node without its Redis cannot read the stream: say so rather than answer empty.
    app.hub.available().map_err(ApiError::Unavailable)?;
    let channels = app.hub.channels();
    let HistoryQuery {
        channel,
        since,
        limit,
        epoch,
        since_time,
        filter,
    } = query;
    // A time is turned into this epoch's cursor; `epoch` then has nothing to say.
    let (since, epoch) = match since_time {
        Some(at) => (app.hub.seq_at(channel, at).await, None),
        None => (since, epoch),
    };
    let hub = &app.hub;
    let other_epoch = epoch.filter(|&e| e != hub.epoch());
    // A cursor from another epoch means nothing here: start from the oldest kept event.
    let after = if other_epoch.is_some() { 0 } else { since };
    let page = match &filter {
        Some(filter) => filtered_page(hub, channel, after, limit, filter).await,
        None => hub.history(channel, after, limit).await,
    };
    let reason = match (other_epoch, &page.gap) {
        (Some(epoch), _) => Some(hub.other_epoch(epoch)),
        (None, Some(gap)) => Some(gap.describe(channels.name(channel), after)),
        (None, None) => None,
    };
    let reply = HistoryReply {
        event_type: channels.name(channel),
        epoch: hub.epoch(),
        oldest_seq: page.oldest_seq,
        last_seq: page.last_seq,
        recovered: reason.is_none(),
        reason,
        next_since: page.next_since,
        more: page.next_since < page.last_seq,
        // Kept frames are the hub's own JSON: embedded as they are, not re-encoded.
        events: page
            .frames
            .iter()
            .filter_map(|f| serde_json::from_str(f.as_str()).ok())
            .collect(),
    };
    Ok(Json(reply).into_response())
}

/// Up to `limit` kept events after `after` that pass `filter`, read through the history page by
/// page. `next_since` is the last event looked at, so the next request goes on from there; the
/// gap, if any, is the one at `after`.
async fn filtered_page(
    hub: &Hub,
    channel: ChannelId,
    after: u64,
    limit: usize,
    filter: &Filter,
) -> HistoryPage {
    let mut page = hub.history(channel, after, MAX_HISTORY_PAGE).await;
    let mut frames = Vec::new();
    loop {
        let first = page.next_since + 1 - page.frames.len() as u64;
        for (seq, frame) in (first..).zip(std::mem::take(&mut page.frames)) {
            if filter.matches_frame(&frame) {
                frames.push(frame);
                if frames.len() == limit {
                    page.next_since = seq;
                    page.frames = frames;
                    return page;
                }
            }
        }
        let next = hub
            .history(channel, page.next_since, MAX_HISTORY_PAGE)
            .await;
        if next.frames.is_empty() || next.gap.is_some() {
            page.frames = frames;
            return page;
        }
        page = HistoryPage {
            gap: page.gap,
            ..next
        };
    }
}

/// The `GET /v1/events` answer.
#[derive(serde::Serialize)]
pub(crate) struct HistoryReply<'a> {
    event_type: &'a str,
    epoch: u64,
    oldest_seq: Option<u64>,
    last_seq: u64,
    /// True when `events` continue right after `since`, with nothing missing in between.
    recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Pass as `since` to read on.
    next_since: u64,
    more: bool,
    events: Vec<&'a serde_json::value::RawValue>,
}

/// The query of `GET /v1/events`, checked: a known `event_type`, whole numbers, a `limit` of
/// 1 to [`MAX_HISTORY_PAGE`].
pub(crate) struct HistoryQuery {
    channel: ChannelId,
    since: u64,
    limit: usize,
    epoch: Option<u64>,
    since_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events that pass it (`filter=<filter>`, or `<event_type>:<filter>` as on subscribe).
    filter: Option<Filter>,
}

impl FromRequestParts<AppState> for HistoryQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let channels = app.hub.channels();
        let mut channel = None;
        let mut since = 0u64;
        let mut limit = 100usize;
        let mut epoch = None;
        let mut since_time = None;
        let mut has_since = false;
        let mut filter_text = None;
        for (key, value) in auth::form_pairs(parts.uri.query().unwrap_or("")) {
            let number = |what: &str| {
                value.trim().parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!("{what} {value:?} is not a whole number >= 0"))
                })
            };
            match key.as_str() {
                "event_type" => {
                    let name = value.trim().to_ascii_lowercase();
                    channel = Some(channels.id(&name).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "unknown event_type {value:?}; valid event types: {}",
                            channels.describe()
                        ))
                    })?);
                }
                "since" => {
                    has_since = true;
                    since = number("since")?;
                }
                "since_time" => {
                    since_time = Some(
                        crate::protocol::parse_since_time(&value).map_err(ApiError::BadRequest)?,
                    );
                }
                "epoch" => epoch = Some(number("epoch")?),
                "filter" if filter_text.is_some() => {
                    return Err(ApiError::BadRequest(
                        "filter is given twice; join the conditions with `and` in one filter"
                            .into(),
                    ));
                }
                "filter" => filter_text = Some(value),
                "limit" => {
                    limit = usize::try_from(number("limit")?).unwrap_or(usize::MAX);
                    if limit == 0 || limit > MAX_HISTORY_PAGE {
                        return Err(ApiError::BadRequest(format!(
                            "limit must be 1 to {MAX_HISTORY_PAGE}"
                        )));
                    }
                }
                _ => {}
            }
        }
        let channel = channel.ok_or_else(|| {
            ApiError::BadRequest(format!(
                "missing event_type: GET /v1/events?event_type=pdfm&since=<seq>&limit=100; valid event types: {}",
                channels.describe()
            ))
        })?;
        if has_since && since_time.is_some() {
            return Err(ApiError::BadRequest(
                "since_time with since: send one of them".into(),
            ));
        }
        let filter = filter_text
            .map(|text| {
                let prefix = format!("{}:", channels.name(channel));
                Filter::parse(text.trim_start().strip_prefix(&prefix).unwrap_or(&text))
            })
            .transpose()?;
        Ok(Self {
            channel,
            since,
            limit,
            epoch,
            since_time,
            filter,
        })
    }
}
