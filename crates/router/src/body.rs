//! Bodies that stream through the router, frame by frame (nothing is
//! buffered whole).
//!
//! [`RequestBody`] can give the client's body back when the endpoint was
//! never reached, so the request can be retried on another endpoint.
//! [`ResponseBody`] holds the request's in-flight counts until the last
//! frame has gone out, so least-request balancing and the idle timeout see
//! streaming responses as busy.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::guard::ConnRequest;
use crate::health::InFlight;

/// Where a body not yet read waits for a retry.
pub type GiveBack = Arc<Mutex<Option<Incoming>>>;

#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    polled: bool,
    give_back: Option<GiveBack>,
}

impl RequestBody {
    /// `give_back`: where the body goes if it is dropped unread.
    pub fn new(inner: Option<Incoming>, give_back: Option<GiveBack>) -> Self {
        RequestBody {
            inner,
            polled: false,
            give_back,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        match &mut this.inner {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.polled {
            return;
        }
        if let (Some(slot), Some(body)) = (self.give_back.take(), self.inner.take()) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        }
    }
}

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    _conn: Option<ConnRequest>,
    _endpoint: Option<InFlight>,
}

impl ResponseBody {
    pub fn upstream(body: Incoming, conn: Option<ConnRequest>, endpoint: Option<InFlight>) -> Self {
        ResponseBody {
            inner: Inner::Upstream(body),
            _conn: conn,
            _endpoint: endpoint,
        }
    }

    pub fn full(bytes: impl Into<Bytes>, conn: Option<ConnRequest>) -> Self {
        let b: Bytes = bytes.into();
        ResponseBody {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
            _conn: conn,
            _endpoint: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
