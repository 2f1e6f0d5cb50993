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

use crate::secret::Secret;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Request, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

/// The messages of the BuildKit protocol that de-build reads or writes, with
/// their protobuf encoding. Field numbers are those of BuildKit's `.proto`
/// files (`control.proto`, `secrets.proto`, gRPC's `health.proto`); fields
/// de-build does not use are skipped when decoding, as protobuf allows. Nine
/// small messages do not need a code generator or a derive macro.
pub mod pb {
    /// Protobuf's wire format, the part these messages use.
    mod wire {
        pub enum Value<'a> {
            Varint(u64),
            Bytes(&'a [u8]),
            Fixed,
        }

        pub struct Reader<'a>(pub &'a [u8]);

        impl<'a> Reader<'a> {
            fn varint(&mut self) -> Result<u64, String> {
                let mut v: u64 = 0;
                for i in 0..10 {
                    let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
                    self.0 = rest;
                    v |= u64::from(b & 0x7f) << (7 * i);
                    if b & 0x80 == 0 {
                        return Ok(v);
                    }
                }
                Err("varint longer than 10 bytes".into())
            }

            fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
                if self.0.len() < n {
                    return Err("truncated field".into());
                }
                let (head, rest) = self.0.split_at(n);
                self.0 = rest;
                Ok(head)
            }

            /// The next field: its number and value; `None` at the end.
            pub fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
                if self.0.is_empty() {
                    return Ok(None);
                }
                let key = self.varint()?;
                let value = match key & 7 {
                    0 => Value::Varint(self.varint()?),
                    1 => self.take(8).map(|_| Value::Fixed)?,
                    2 => {
                        let n = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
                        Value::Bytes(self.take(n)?)
                    }
                    5 => self.take(4).map(|_| Value::Fixed)?,
                    t => return Err(format!("unsupported wire type {t}")),
                };
                Ok(Some((key >> 3, value)))
            }
        }

        pub fn string(b: &[u8]) -> Result<String, String> {
            String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".into())
        }

        pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }

        pub fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
            put_varint(out, field << 3 | 2);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }

    use wire::{string, Reader, Value};

    /// `google.protobuf.Timestamp`.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    pub struct Timestamp {
        pub seconds: i64,
        pub nanos: i32,
    }

    impl Timestamp {
        fn decode(b: &[u8]) -> Result<Timestamp, String> {
            let mut t = Timestamp::default();
            let mut r = Reader(b);
            while let Some((n, v)) = r.field()? {
                match (n, v) {
                    (1, Value::Varint(x)) => t.seconds = x as i64,
                    (2, Value::Varint(x)) => t.nanos = x as i32,
                    _ => {}
                }
            }
            Ok(t)
        }
    }

    /// `moby.buildkit.v1.StatusResponse`: steps (1) and their logs (3).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct StatusResponse {
        pub vertexes: Vec<Vertex>,
        pub logs: Vec<VertexLog>,
    }

    impl StatusResponse {
        pub fn decode(b: &[u8]) -> Result<StatusResponse, String> {
            let mut s = StatusResponse::default();
            let mut r = Reader(b);
            while let Some((n, v)) = r.field()? {
                match (n, v) {
                    (1, Value::Bytes(m)) => s.vertexes.push(Vertex::decode(m)?),
                    (3, Value::Bytes(m)) => s.logs.push(VertexLog::decode(m)?),
                    _ => {}
                }
            }
            Ok(s)
        }
    }

    /// `moby.buildkit.v1.Vertex`: one step of the build.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Vertex {
        pub digest: String,
        pub name: String,
        pub cached: bool,
        pub started: Option<Timestamp>,
        pub completed: Option<Timestamp>,
        pub error: String,
    }

    impl Vertex {
        fn decode(b: &[u8]) -> Result<Vertex, String> {
            let mut v = Vertex::default();
            let mut r = Reader(b);
            while let Some((n, x)) = r.field()? {
                match (n, x) {
                    (1, Value::Bytes(s)) => v.digest = string(s)?,
                    (3, Value::Bytes(s)) => v.name = string(s)?,
                    (4, Value::Varint(c)) => v.cached = c != 0,
                    (5, Value::Bytes(t)) => v.started = Some(Timestamp::decode(t)?),
                    (6, Value::Bytes(t)) => v.completed = Some(Timestamp::decode(t)?),
                    (7, Value::Bytes(s)) => v.error = string(s)?,
                    _ => {}
                }
            }
            Ok(v)
        }
    }

    /// `moby.buildkit.v1.VertexLog`: output of a step.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct VertexLog {
        pub vertex: String,
        pub msg: Vec<u8>,
    }

    impl VertexLog {
        fn decode(b: &[u8]) -> Result<VertexLog, String> {
            let mut l = VertexLog::default();
            let mut r = Reader(b);
            while let Some((n, v)) = r.field()? {
                match (n, v) {
                    (1, Value::Bytes(s)) => l.vertex = string(s)?,
                    (4, Value::Bytes(m)) => l.msg = m.to_vec(),
                    _ => {}
                }
            }
            Ok(l)
        }
    }

    /// `moby.buildkit.secrets.v1.GetSecretRequest`: the secret's id (1).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct GetSecretRequest {
        pub id: String,
    }

    impl GetSecretRequest {
        pub fn decode(b: &[u8]) -> Result<GetSecretRequest, String> {
            let mut q = GetSecretRequest::default();
            let mut r = Reader(b);
            while let Some((n, v)) = r.field()? {
                if let (1, Value::Bytes(s)) = (n, v) {
                    q.id = string(s)?;
                }
            }
            Ok(q)
        }

        pub fn encode(&self) -> Vec<u8> {
            let mut out = Vec::new();
            if !self.id.is_empty() {
                wire::put_bytes(&mut out, 1, self.id.as_bytes());
            }
            out
        }
    }

    /// `moby.buildkit.secrets.v1.GetSecretResponse`: the value (1).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct GetSecretResponse {
        pub data: Vec<u8>,
    }

    impl GetSecretResponse {
        pub fn encode(&self) -> Vec<u8> {
            let mut out = Vec::with_capacity(self.data.len() + 6);
            if !self.data.is_empty() {
                wire::put_bytes(&mut out, 1, &self.data);
            }
            out
        }

        pub fn decode(b: &[u8]) -> Result<GetSecretResponse, String> {
            let mut s = GetSecretResponse::default();
            let mut r = Reader(b);
            while let Some((n, v)) = r.field()? {
                if let (1, Value::Bytes(d)) = (n, v) {
                    s.data = d.to_vec();
                }
            }
            Ok(s)
        }
    }

    /// `grpc.health.v1.HealthCheckResponse`: the serving status (1).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct HealthCheckResponse {
        pub status: i32,
    }

    impl HealthCheckResponse {
        pub fn encode(&self) -> Vec<u8> {
            let mut out = Vec::new();
            if self.status != 0 {
                wire::put_varint(&mut out, 1 << 3);
                wire::put_varint(&mut out, self.status as u64);
            }
            out
        }

        pub fn decode(b: &[u8]) -> Result<HealthCheckResponse, String> {
            let mut h = HealthCheckResponse::default();
            let mut r = Reader(b);
            while let Some((n, v)) = r.field()? {
                if let (1, Value::Varint(x)) = (n, v) {
                    h.status = x as i32;
                }
            }
            Ok(h)
        }
    }

    /// gRPC health: SERVING.
    pub const SERVING: i32 = 1;
}

pub const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
pub const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// The methods announced to the engine when the session is opened, as the
/// docker CLI announces its services' methods. Watch (a stream) is answered
/// UNIMPLEMENTED: the engine polls Check.
pub const METHODS: [&str; 3] = [GET_SECRET, HEALTH_CHECK, HEALTH_WATCH];

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
pub fn answer(secrets: &HashMap<String, Secret>, method: &str, payload: &[u8]) -> Reply {
    match method {
        GET_SECRET => match pb::GetSecretRequest::decode(payload) {
            Err(e) => Reply::Status(INVALID_ARGUMENT, format!("bad GetSecretRequest: {e}")),
            Ok(req) => match secrets.get(&req.id) {
                // The value leaves its type here, into the one frame BuildKit reads.
                Some(v) => Reply::Message(
                    pb::GetSecretResponse {
                        data: v.expose().as_bytes().to_vec(),
                    }
                    .encode(),
                ),
                None => Reply::Status(NOT_FOUND, format!("secret {} not provided", req.id)),
            },
        },
        HEALTH_CHECK => Reply::Message(
            pb::HealthCheckResponse {
                status: pb::SERVING,
            }
            .encode(),
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
pub async fn serve(conn: hyper::upgrade::Upgraded, secrets: HashMap<String, Secret>) {
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
        let secrets = HashMap::from([("apps_json".to_string(), Secret::derived("[1]"))]);
        let req = pb::GetSecretRequest {
            id: "apps_json".into(),
        }
        .encode();
        let Reply::Message(m) = answer(&secrets, GET_SECRET, &req) else {
            panic!("no message")
        };
        assert_eq!(pb::GetSecretResponse::decode(&m[..]).unwrap().data, b"[1]");
        let other = pb::GetSecretRequest { id: "x".into() }.encode();
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
            answer(&secrets, HEALTH_WATCH, &[]),
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

    /// Timestamps inside a vertex, multi-byte varints, and fields of every
    /// wire type that de-build does not read (skipped, not misread).
    #[test]
    fn timestamps_and_unknown_fields() {
        fn varint(mut v: u64) -> Vec<u8> {
            let mut out = Vec::new();
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
            out
        }
        fn ts(seconds: u64, nanos: u64) -> Vec<u8> {
            let mut t = vec![0x08];
            t.extend(varint(seconds));
            t.push(0x10);
            t.extend(varint(nanos));
            t
        }
        let started = ts(1_763_900_000, 250_000_000);
        let completed = ts(1_763_900_002, 750_000_000);
        let mut vertex = vec![0x0a, 2, b'v', b'1'];
        // inputs(2), repeated string: skipped
        vertex.extend([0x12, 3, b'a', b'b', b'c']);
        vertex.push(0x2a);
        vertex.extend(varint(started.len() as u64));
        vertex.extend(&started);
        vertex.push(0x32);
        vertex.extend(varint(completed.len() as u64));
        vertex.extend(&completed);
        // an unknown fixed64 (field 9) and fixed32 (field 10)
        vertex.extend([0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x55, 1, 2, 3, 4]);
        let mut status = vec![0x0a];
        status.extend(varint(vertex.len() as u64));
        status.extend(&vertex);
        // statuses(2) and warnings(4): skipped
        status.extend([0x12, 2, 0x0a, 0, 0x22, 0]);
        let s = pb::StatusResponse::decode(&status).unwrap();
        let v = &s.vertexes[0];
        assert_eq!(v.digest, "v1");
        assert!(!v.cached && s.logs.is_empty());
        assert_eq!(
            v.started,
            Some(pb::Timestamp {
                seconds: 1_763_900_000,
                nanos: 250_000_000
            })
        );
        assert_eq!(v.completed.unwrap().seconds, 1_763_900_002);

        // Broken input is an error, never a panic.
        assert!(pb::StatusResponse::decode(&status[..status.len() - 3]).is_err());
        assert!(pb::StatusResponse::decode(&[0x0a, 5, 1]).is_err());
        assert!(
            pb::StatusResponse::decode(&[0x0b]).is_err(),
            "group wire type"
        );
        assert!(
            pb::StatusResponse::decode(&[0x08, 0xff]).is_err(),
            "truncated varint"
        );
        assert!(
            pb::GetSecretRequest::decode(&[0x0a, 1, 0xff]).is_err(),
            "not UTF-8"
        );

        // What de-build encodes reads back.
        let big = vec![7u8; 300];
        let enc = pb::GetSecretResponse { data: big.clone() }.encode();
        assert_eq!(&enc[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(pb::GetSecretResponse::decode(&enc).unwrap().data, big);
        assert_eq!(
            pb::HealthCheckResponse {
                status: pb::SERVING
            }
            .encode(),
            vec![0x08, 1]
        );
    }
}
