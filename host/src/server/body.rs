//! Reading a request body whole, under a size limit, a deadline and the byte
//! budgets — and refusing before reading when it cannot fit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use http_body_util::BodyExt as _;

use super::AppState;
use super::budget::{Budget, Exhausted, Reservation};
use super::error::ApiError;
use super::listener::RequestContext;

/// Bytes reserved at a time for a body that does not declare its length.
const CHUNK: usize = 64 << 10;

/// How request bodies may be read.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body, in bytes; larger ones get 413 (at once when the
    /// `Content-Length` says so, before `100 Continue`).
    pub max_bytes: usize,
    /// Time from the request's head to the end of its body; slower bodies
    /// get 408.
    pub timeout: Duration,
    /// Bytes all bodies being read or waiting for an answer may hold.
    pub server_budget: usize,
    /// Bytes the bodies of one connection's requests may hold (HTTP/2 lets
    /// one connection carry many requests at once).
    pub connection_budget: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 20,
            timeout: Duration::from_secs(10),
            server_budget: 64 << 20,
            connection_budget: 16 << 20,
        }
    }
}

/// A request body read under [`BodyLimits`], with the budget it holds until
/// the request is answered.
#[derive(Debug)]
pub struct LimitedBody {
    /// The body.
    pub bytes: Bytes,
    /// Its share of the budgets; given back when dropped.
    pub reservation: Reservation,
    /// When the request's head arrived.
    pub arrived: Instant,
}

impl FromRequest<Arc<AppState>> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limits = &state.body_limits;
        let (arrived, connection_budget) = match request.extensions().get::<RequestContext>() {
            Some(context) => (context.arrived, context.connection.body_budget().clone()),
            // Served other than by a Listener (never in `serve`): a budget of
            // its own.
            None => (Instant::now(), Budget::new(limits.connection_budget)),
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if let Some(declared) = declared
            && declared > limits.max_bytes as u64
        {
            return Err(too_large(limits.max_bytes));
        }
        let mut reservation = Reservation::default();
        let reserve = |reservation: &mut Reservation, bytes| {
            reservation
                .grow(bytes, &state.body_budget, &connection_budget)
                .map_err(|exhausted| {
                    state.metrics.overloaded("body_budget");
                    over_budget(exhausted, state.body_budget.capacity(), &connection_budget)
                })
        };
        // Declared: reserved before a byte is read (or `100 Continue` sent).
        let declared = declared.map_or(0, |d| d as usize);
        reserve(&mut reservation, declared)?;

        let mut body = request.into_body();
        let read = async {
            // Copied out of the connection's read buffers as it arrives,
            // into one buffer of the declared size: freed whole once the
            // request is answered (many chunks would fragment the heap).
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
                if length > reservation.held() {
                    let more = (length - reservation.held())
                        .max(CHUNK)
                        .min(limits.max_bytes - reservation.held());
                    reserve(&mut reservation, more)?;
                }
                buffer.extend_from_slice(&data);
            }
            Ok(Bytes::from(buffer))
        };
        let deadline = arrived + limits.timeout;
        let bytes = match tokio::time::timeout_at(deadline.into(), read).await {
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
        };
        Ok(Self {
            bytes,
            reservation,
            arrived,
        })
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body too large (limit: {limit} bytes)"),
    )
}

fn over_budget(exhausted: Exhausted, server: usize, connection: &Budget) -> ApiError {
    let message = match exhausted {
        Exhausted::Server => format!(
            "server overloaded: request bodies being read or evaluated already hold \
             {server} bytes, the server's budget; retry later"
        ),
        Exhausted::Connection => format!(
            "server overloaded: this connection's requests already hold {} bytes of bodies, \
             its budget; retry later or on another connection",
            connection.capacity()
        ),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}
