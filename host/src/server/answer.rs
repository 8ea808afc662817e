//! An answer on its way to the client: counted against the budgets until
//! the socket has taken it, and handed to the HTTP layer a chunk at a time.
//!
//! The HTTP layer asks for the next chunk only when it can send it (HTTP/2:
//! when the client's flow-control window has room; HTTP/1: when its write
//! buffer has room), so what waits for a client that does not read stays
//! here, counted, rather than in buffers nobody counts. Chunks of a large
//! answer are copies: a slice would keep the whole answer's allocation
//! alive until its last byte is written.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use axum::http::Response;
use axum::response::IntoResponse as _;
use bytes::Buf as _;
use hyper::body::{Body as _, Frame, SizeHint};

use super::budget::Exhausted;
use super::connections::{Connections, Shed};
use super::error::ApiError;
use super::exchange::{ExchangeGuard, QUANTUM};

/// Largest chunk handed to the HTTP layer at a time: one HTTP/2 frame.
const CHUNK: usize = QUANTUM;

/// Resizes what the request holds to its answer (asking stalled requests to
/// make room if the answer is larger), then starts sending it. An answer
/// that cannot be held is replaced by a 503.
pub async fn answer(
    guard: ExchangeGuard,
    response: Response<Body>,
    connections: &Connections,
) -> (Response<AnswerBody>, Shed) {
    let exchange = guard.exchange();
    let mut shed = Shed::default();
    let mut response = response;
    let held = exchange.held();
    // Requests that hold nothing (probes, errors before a body was read)
    // answer a few bytes: not worth counting.
    if held > 0
        && let Some(size) = response.body().size_hint().exact()
    {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size <= held {
            exchange.shrink_to(size);
        } else {
            let (grown, made_room) = connections.grow(exchange, size - held).await;
            shed = made_room;
            if let Err(exhausted) = grown {
                exchange.shrink_to(0);
                response = unsendable(exhausted, size).into_response();
            }
        }
    }
    exchange.sending();
    let response = response.map(|body| AnswerBody {
        inner: body,
        rest: None,
        guard,
    });
    (response, shed)
}

fn unsendable(exhausted: Exhausted, size: usize) -> ApiError {
    let whose = match exhausted {
        Exhausted::Server => "the server's",
        Exhausted::Connection => "this connection's",
    };
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "server overloaded: the answer ({size} bytes) does not fit {whose} budget for \
             requests and answers in flight; retry later"
        ),
    )
}

/// A response body that counts what it has handed on and holds its request
/// in flight until dropped.
pub struct AnswerBody {
    inner: Body,
    /// The part of a large chunk not handed on yet.
    rest: Option<Bytes>,
    guard: ExchangeGuard,
}

impl AnswerBody {
    fn hand_on(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let exchange = self.guard.exchange();
        exchange.moved(chunk.len(), self.is_done());
        exchange.hand_off(chunk.len());
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_done(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }
}

impl hyper::body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(rest) = &mut this.rest {
            let size = rest.len().min(CHUNK);
            let chunk = Bytes::copy_from_slice(&rest[..size]);
            rest.advance(size);
            if rest.is_empty() {
                // The large allocation goes now, before its last copy is sent.
                this.rest = None;
            }
            return this.hand_on(chunk);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.len() > CHUNK => {
                    this.rest = Some(data);
                    Pin::new(this).poll_frame(cx)
                }
                Ok(data) => this.hand_on(data),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.as_ref().map_or(0, |rest| rest.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::server::budget::Budget;
    use crate::server::connections::{Admission, Connections};

    #[tokio::test]
    async fn a_large_answer_is_handed_on_in_copied_chunks_and_counted_until_written() {
        let budget = Budget::new(1 << 20);
        let connections = Connections::new(4, 1 << 20, budget.clone(), Duration::from_secs(1));
        let Admission::Admitted(registered) = connections.admit() else {
            panic!("room")
        };
        let connection = std::sync::Arc::clone(registered.connection());
        let guard = connection.exchange();
        // The request held 50,000 bytes; its answer is 40,000.
        guard.exchange().grow(50_000).unwrap();
        let answer_bytes = Bytes::from(vec![b'x'; 40_000]);
        let response = Response::new(Body::from(answer_bytes.clone()));
        let (response, shed) = answer(guard, response, &connections).await;
        assert_eq!(shed, Shed::default());
        assert_eq!(budget.in_use(), 40_000);
        let mut body = response.into_body();
        assert_eq!(body.size_hint().exact(), Some(40_000));
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            // Copies: not slices of the answer's allocation.
            assert_ne!(chunk.as_ptr(), answer_bytes.as_ptr());
            sizes.push(chunk.len());
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 40_000 - 2 * CHUNK]);
        // Handed to the HTTP layer: still counted, by the connection, until
        // the socket takes it.
        drop(body);
        assert_eq!(connection.unsent(), 40_000);
        assert_eq!(budget.in_use(), 40_000);
        connection.wrote(30_000);
        assert_eq!(budget.in_use(), 10_000);
        connection.wrote(30_000);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(connection.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_answer_that_does_not_fit_is_a_503() {
        let budget = Budget::new(1000);
        let connections = Connections::new(4, 1 << 20, budget.clone(), Duration::from_secs(1));
        let Admission::Admitted(registered) = connections.admit() else {
            panic!("room")
        };
        let guard = registered.connection().exchange();
        guard.exchange().grow(100).unwrap();
        let response = Response::new(Body::from(vec![b'x'; 5000]));
        let (response, _) = answer(guard, response, &connections).await;
        assert_eq!(
            response.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        drop(response);
        assert_eq!(budget.in_use(), 0);
    }
}
