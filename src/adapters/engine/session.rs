//! The BuildKit session's gRPC side: de-build serves two unary methods on the
//! upgraded `/session` connection, over HTTP/2 (hyper's server).
//!
//! Why not tonic: the session needs two unary calls answered on a connection
//! the engine opened, which is a few lines on top of hyper's HTTP/2 server;
//! tonic (with the generated BuildKit crates) brought a router, a client
//! transport, TLS and axum into every build of de-build for it.
//!
//! gRPC over HTTP/2, as far as it is used here: the request is a `POST` to
//! `/<package>.<Service>/<Method>` whose body is one length-prefixed message
//! (1 byte "compressed" flag, 4 bytes big-endian length, the protobuf bytes);
//! the answer is status 200, `content-type: application/grpc`, one
//! length-prefixed message, then trailers with `grpc-status` (0 = OK) and, on
//! an error, `grpc-message`.

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Request, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

/// The messages of the BuildKit protocol that de-build reads or writes. Field
/// numbers are those of BuildKit's `.proto` files; fields de-build does not
/// use are left out (protobuf skips unknown fields when decoding).
pub mod pb {
    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `moby.buildkit.v1.StatusResponse` (control.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, repeated, tag = "1")]
        pub vertexes: Vec<Vertex>,
        #[prost(message, repeated, tag = "3")]
        pub logs: Vec<VertexLog>,
    }

    /// `moby.buildkit.v1.Vertex`: one step of the build.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Vertex {
        #[prost(string, tag = "1")]
        pub digest: String,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(bool, tag = "4")]
        pub cached: bool,
        #[prost(message, optional, tag = "5")]
        pub started: Option<Timestamp>,
        #[prost(message, optional, tag = "6")]
        pub completed: Option<Timestamp>,
        #[prost(string, tag = "7")]
        pub error: String,
    }

    /// `moby.buildkit.v1.VertexLog`: output of a step.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VertexLog {
        #[prost(string, tag = "1")]
        pub vertex: String,
        #[prost(bytes = "vec", tag = "4")]
        pub msg: Vec<u8>,
    }

    /// `moby.buildkit.secrets.v1.GetSecretRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetSecretRequest {
        #[prost(string, tag = "1")]
        pub id: String,
    }

    /// `moby.buildkit.secrets.v1.GetSecretResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetSecretResponse {
        #[prost(bytes = "vec", tag = "1")]
        pub data: Vec<u8>,
    }

    /// `grpc.health.v1.HealthCheckResponse`; status 1 is SERVING.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckResponse {
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    pub const SERVING: i32 = 1;
}

pub const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// The methods announced to the engine when the session is opened.
pub const METHODS: [&str; 2] = [GET_SECRET, HEALTH_CHECK];

/// gRPC status codes used here.
const OK: u32 = 0;
const INVALID_ARGUMENT: u32 = 3;
const NOT_FOUND: u32 = 5;
const UNIMPLEMENTED: u32 = 12;

/// What one call answers: a message, or a status code and its message.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Message(Vec<u8>),
    Status(u32, String),
}

/// One unary call: method path and request payload (without the prefix).
pub fn answer(secrets: &HashMap<String, Vec<u8>>, method: &str, payload: &[u8]) -> Reply {
    use prost::Message as _;
    match method {
        GET_SECRET => match pb::GetSecretRequest::decode(payload) {
            Err(e) => Reply::Status(INVALID_ARGUMENT, format!("bad GetSecretRequest: {e}")),
            Ok(req) => match secrets.get(&req.id) {
                Some(v) => {
                    Reply::Message(pb::GetSecretResponse { data: v.clone() }.encode_to_vec())
                }
                None => Reply::Status(NOT_FOUND, format!("secret {} not provided", req.id)),
            },
        },
        HEALTH_CHECK => Reply::Message(
            pb::HealthCheckResponse {
                status: pb::SERVING,
            }
            .encode_to_vec(),
        ),
        other => Reply::Status(UNIMPLEMENTED, format!("{other} is not offered")),
    }
}

/// Split a request body into its one message; `None` if it is not exactly
/// one uncompressed length-prefixed message.
pub fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let msg = &rest[4..];
    (msg.len() == len).then_some(msg)
}

/// A message with its gRPC length prefix.
pub fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

type Body =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn response(reply: Reply) -> Response<Body> {
    let mut frames = Vec::new();
    let mut trailers = HeaderMap::new();
    match reply {
        Reply::Message(m) => {
            frames.push(Ok(Frame::data(frame(&m))));
            trailers.insert("grpc-status", OK.into());
        }
        Reply::Status(code, message) => {
            trailers.insert("grpc-status", code.into());
            // grpc-message is percent-encoded; keep it to plain ASCII.
            let text: String = message
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '%' || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            if let Ok(v) = text.parse() {
                trailers.insert("grpc-message", v);
            }
        }
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// Serve the session on the upgraded connection until the engine closes it.
pub async fn serve(conn: hyper::upgrade::Upgraded, secrets: HashMap<String, Vec<u8>>) {
    let secrets = Arc::new(secrets);
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let secrets = secrets.clone();
        async move {
            let method = req.uri().path().to_string();
            let reply = match req.into_body().collect().await {
                Err(e) => Reply::Status(INVALID_ARGUMENT, format!("read the request: {e}")),
                Ok(body) => {
                    let body = body.to_bytes();
                    match unframe(&body) {
                        Some(msg) => answer(&secrets, &method, msg),
                        None => Reply::Status(
                            INVALID_ARGUMENT,
                            "expected one uncompressed message".into(),
                        ),
                    }
                }
            };
            Ok::<_, Infallible>(response(reply))
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(conn, service)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn frames_round_trip() {
        let f = frame(b"abc");
        assert_eq!(&f[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(unframe(&f), Some(&b"abc"[..]));
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(unframe(&[0, 0, 0, 0, 4, 1]), None, "short");
        assert_eq!(unframe(&[]), None);
    }

    #[test]
    fn serves_known_secrets_only() {
        let secrets = HashMap::from([("apps_json".to_string(), b"[1]".to_vec())]);
        let req = pb::GetSecretRequest {
            id: "apps_json".into(),
        }
        .encode_to_vec();
        let Reply::Message(m) = answer(&secrets, GET_SECRET, &req) else {
            panic!("no message")
        };
        assert_eq!(pb::GetSecretResponse::decode(&m[..]).unwrap().data, b"[1]");
        let other = pb::GetSecretRequest { id: "x".into() }.encode_to_vec();
        assert_eq!(
            answer(&secrets, GET_SECRET, &other),
            Reply::Status(NOT_FOUND, "secret x not provided".into())
        );
        let Reply::Message(h) = answer(&secrets, HEALTH_CHECK, &[]) else {
            panic!("no health answer")
        };
        assert_eq!(
            pb::HealthCheckResponse::decode(&h[..]).unwrap().status,
            pb::SERVING
        );
        assert!(matches!(
            answer(&secrets, "/grpc.health.v1.Health/Watch", &[]),
            Reply::Status(UNIMPLEMENTED, _)
        ));
    }

    /// Field numbers as BuildKit sends them: a vertex and a log line encoded
    /// by hand (tag bytes) decode into the fields de-build reads.
    #[test]
    fn status_fields_decode() {
        // Vertex: digest(1)="d", name(3)="n", cached(4)=true, error(7)="e"
        let vertex = [0x0a, 1, b'd', 0x1a, 1, b'n', 0x20, 1, 0x3a, 1, b'e'];
        // VertexLog: vertex(1)="d", stream(3)=1, msg(4)="hi"
        let log = [0x0a, 1, b'd', 0x18, 1, 0x22, 2, b'h', b'i'];
        let mut status = vec![0x0a, vertex.len() as u8];
        status.extend_from_slice(&vertex);
        status.extend_from_slice(&[0x1a, log.len() as u8]);
        status.extend_from_slice(&log);
        let s = pb::StatusResponse::decode(&status[..]).unwrap();
        assert_eq!(s.vertexes.len(), 1);
        let v = &s.vertexes[0];
        assert_eq!(
            (
                v.digest.as_str(),
                v.name.as_str(),
                v.cached,
                v.error.as_str()
            ),
            ("d", "n", true, "e")
        );
        assert_eq!(s.logs[0].vertex, "d");
        assert_eq!(s.logs[0].msg, b"hi");
    }
}
