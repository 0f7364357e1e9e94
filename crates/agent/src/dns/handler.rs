//! The request handler hickory's server calls: names under `corral.` are
//! answered from the current table, every other name goes to the node's
//! resolvers (hickory's forwarder), or is refused at once when the node
//! has none.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::Record;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};

use super::table::{self, Answer, Table};

pub struct DnsHandler {
    table: Arc<ArcSwap<Table>>,
    forward: Option<Catalog>,
}

impl DnsHandler {
    pub fn new(table: Arc<ArcSwap<Table>>, forward: Option<Catalog>) -> DnsHandler {
        DnsHandler { table, forward }
    }
}

/// The records of a reply, cut to what fits a UDP answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA, for negative answers.
    pub soa: Vec<Record>,
    /// Answers were left out: the client should ask again over TCP.
    pub truncated: bool,
}

impl Reply {
    pub fn from_answer(answer: Answer) -> Reply {
        match answer {
            Answer::Records {
                answers,
                additionals,
            } => Reply {
                code: ResponseCode::NoError,
                soa: if answers.is_empty() {
                    vec![table::soa()]
                } else {
                    vec![]
                },
                answers,
                additionals,
                truncated: false,
            },
            Answer::NoSuchName => Reply {
                code: ResponseCode::NXDomain,
                soa: vec![table::soa()],
                ..Reply::default()
            },
            Answer::NotReady => Reply {
                code: ResponseCode::ServFail,
                ..Reply::default()
            },
        }
    }

    /// Leaves out additionals, then answers (and says so), until the
    /// encoded message fits `max` bytes. hickory's encoder answers
    /// SERVFAIL to a message too big for UDP instead of truncating it.
    pub fn fit(mut self, request: &Message, max: usize) -> Reply {
        while self.encoded_len(request) > max {
            if self.additionals.pop().is_some() {
                continue;
            }
            if self.answers.pop().is_some() {
                self.truncated = true;
                continue;
            }
            break;
        }
        self
    }

    fn encoded_len(&self, request: &Message) -> usize {
        let mut m = Message::response(request.metadata.id, request.metadata.op_code);
        m.add_queries(request.queries.iter().cloned());
        m.add_answers(self.answers.iter().cloned());
        m.add_authorities(self.soa.iter().cloned());
        m.add_additionals(self.additionals.iter().cloned());
        if let Some(e) = &request.edns {
            m.set_edns(e.clone());
        }
        m.to_vec().map(|v| v.len()).unwrap_or(usize::MAX)
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let meta = &request.metadata;
        if meta.message_type != MessageType::Query || meta.op_code != OpCode::Query {
            let code = if meta.message_type == MessageType::Query {
                ResponseCode::NotImp
            } else {
                ResponseCode::FormErr
            };
            return send(
                &mut response_handle,
                MessageResponseBuilder::from_message_request(request).error_msg(meta, code),
                meta,
            )
            .await;
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            return send(
                &mut response_handle,
                MessageResponseBuilder::from_message_request(request)
                    .error_msg(meta, ResponseCode::FormErr),
                meta,
            )
            .await;
        };
        let name = info.query.name();
        if !table::in_zone(name) {
            return match &self.forward {
                Some(catalog) => {
                    catalog
                        .handle_request::<R, T>(request, response_handle)
                        .await
                }
                None => {
                    send(
                        &mut response_handle,
                        MessageResponseBuilder::from_message_request(request)
                            .error_msg(meta, ResponseCode::Refused),
                        meta,
                    )
                    .await
                }
            };
        }
        let table = self.table.load();
        let mut reply = Reply::from_answer(table::answer(&table, name, info.query.query_type()));
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e
        });
        if request.protocol() == Protocol::Udp {
            let mut probe = Message::query();
            probe.metadata.id = meta.id;
            probe.add_queries(
                request
                    .queries
                    .queries()
                    .iter()
                    .map(|q| q.original().clone()),
            );
            probe.edns = edns.clone();
            let max = edns.as_ref().map_or(512, |e| usize::from(e.max_payload()));
            reply = reply.fit(&probe, max);
        }
        let mut metadata = Metadata::response_from_request(meta);
        metadata.authoritative = true;
        metadata.recursion_available = self.forward.is_some();
        metadata.response_code = reply.code;
        metadata.truncation = reply.truncated;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            std::iter::empty(),
            reply.soa.iter(),
            reply.additionals.iter(),
        );
        send(&mut response_handle, response, meta).await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS answer");
            let mut metadata = Metadata::response_from_request(request);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}
