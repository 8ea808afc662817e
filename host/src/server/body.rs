//! Reading a request body whole, under a size limit, a deadline and the byte
//! budgets — refusing before reading when it cannot fit, and giving up when
//! it stalls while other requests need the room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use http_body_util::BodyExt as _;

use super::AppState;
use super::budget::Exhausted;
use super::connection::Connection;
use super::error::ApiError;
use super::gate::LARGE;
use super::listener::RequestContext;

/// Bytes reserved at a time for a body that does not declare its length.
const CHUNK: usize = 64 << 10;

/// Bytes reserved at a time for a small declared body, as it arrives.
const SMALL_CHUNK: usize = 16 << 10;

/// How request bodies may be read.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body, in bytes; larger ones get 413 (at once when the
    /// `Content-Length` says so, before `100 Continue`).
    pub max_bytes: usize,
    /// Time from the request's head to the end of its body; slower bodies
    /// get 408.
    pub timeout: Duration,
    /// Bytes all requests in flight may hold: bodies being read, the
    /// requests parsed from them, answers not yet written.
    pub server_budget: usize,
    /// The part of `server_budget` that only requests of at most 256 KiB
    /// may use: large ones cannot take it all.
    pub small_reserve: usize,
    /// Bytes the requests of one connection may hold (HTTP/2 lets one
    /// connection carry many requests at once).
    pub connection_budget: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 20,
            timeout: Duration::from_secs(10),
            server_budget: 64 << 20,
            small_reserve: 16 << 20,
            connection_budget: 16 << 20,
        }
    }
}

/// A request body read under [`BodyLimits`]. The bytes it holds from the
/// budgets stay with its request (the [`Exchange`](super::exchange::Exchange))
/// until the answer is written: the parsed request and then the answer take
/// their place.
#[derive(Debug)]
pub struct LimitedBody {
    /// The body.
    pub bytes: Bytes,
    /// When the request's head arrived.
    pub arrived: Instant,
}

impl FromRequest<Arc<AppState>> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limits = &state.body_limits;
        let Some(context) = request.extensions().get::<RequestContext>().cloned() else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request did not come through a listener",
            ));
        };
        let RequestContext {
            arrived,
            exchange,
            listener,
        } = context;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if let Some(declared) = declared
            && declared > limits.max_bytes as u64
        {
            return Err(too_large(limits.max_bytes));
        }
        exchange.receiving();
        let reserve = async |bytes| {
            let (grown, shed) = listener.grow(&exchange, bytes).await;
            state.metrics.shed(shed);
            grown.map_err(|exhausted| {
                state.metrics.overloaded("body_budget");
                over_budget(exhausted, exchange.connection())
            })
        };
        // A large declared body is reserved whole before a byte of it is read
        // (or `100 Continue` sent): refused, it costs nothing. A small one
        // is reserved as it arrives, so that connections declaring small
        // bodies and sending none hold (almost) nothing of the reserve kept
        // for them.
        let declared = declared.map_or(0, |d| d as usize);
        let (upfront, step) = match declared {
            0 => (0, CHUNK),
            small if small <= LARGE => (0, SMALL_CHUNK),
            large => (large, CHUNK),
        };
        reserve(upfront).await?;

        let mut body = request.into_body();
        let read = async {
            // Copied out of the connection's read buffers as it arrives,
            // into one buffer of the declared size: freed whole once the
            // request is parsed (many chunks would fragment the heap).
            let mut buffer = Vec::with_capacity(declared);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {e}"),
                    )
                })?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                let length = buffer.len() + data.len();
                if length > limits.max_bytes {
                    return Err(too_large(limits.max_bytes));
                }
                let held = exchange.held();
                if length > held {
                    // A step ahead of what arrived, but never past what was
                    // declared or the limit.
                    let mut want = (held + step).max(length);
                    if declared > 0 {
                        want = want.min(declared.max(length));
                    }
                    reserve(want.min(limits.max_bytes) - held).await?;
                }
                buffer.extend_from_slice(&data);
                exchange.moved(data.len(), declared > 0 && length >= declared);
            }
            Ok(Bytes::from(buffer))
        };
        let deadline = arrived + limits.timeout;
        let read = tokio::time::timeout_at(deadline.into(), read);
        let bytes = tokio::select! {
            read = read => match read {
                Ok(result) => result?,
                Err(_elapsed) => {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request body did not arrive within {}s",
                            limits.timeout.as_secs_f64()
                        ),
                    ));
                }
            },
            // A body that stalled while the server needed its bytes.
            () = exchange.shed_signalled() => {
                exchange.shrink_to(0);
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stalled while the server needed room for other requests",
                ));
            }
        };
        exchange.serving();
        Ok(Self { bytes, arrived })
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body too large (limit: {limit} bytes)"),
    )
}

fn over_budget(exhausted: Exhausted, connection: &Connection) -> ApiError {
    let message = match exhausted {
        Exhausted::Server => {
            let server = connection.server_budget();
            format!(
                "server overloaded: requests being read, evaluated or answered already hold \
                 {} bytes of the server's budget of {} ({} of it kept for bodies up to {LARGE} \
                 bytes); retry later",
                server.in_use(),
                server.capacity(),
                server.reserve()
            )
        }
        Exhausted::Connection => format!(
            "server overloaded: this connection's requests already hold {} bytes, its budget; \
             retry later or on another connection",
            connection.body_budget().capacity()
        ),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}
