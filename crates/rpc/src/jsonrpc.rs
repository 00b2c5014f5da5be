//! JSON-RPC as XAPI speaks it at `/jsonrpc`.
//!
//! XAPI (`ocaml/xapi/api_server.ml`, `jsoncallback`, over ocaml-rpc's `jsonrpc.ml`) takes
//! both versions and answers in the version it was asked in:
//!
//! - A request is an object with `method` (a string), `params` and `id`. With
//!   `"jsonrpc": "2.0"` it is 2.0: `params` may be missing or null (no parameters), an array,
//!   or an object (one struct parameter). Without `jsonrpc` it is 1.0: `params` must be an
//!   array. Any other `jsonrpc` is refused. `id` must be a number or a string: XAPI refuses
//!   notifications (a null or missing id), and so do we.
//! - 1.0 answers `{"result": v, "error": null, "id": id}` or
//!   `{"result": null, "error": [code, params...], "id": id}`.
//! - 2.0 answers `{"jsonrpc": "2.0", "result": v, "id": id}` or
//!   `{"jsonrpc": "2.0", "error": {"code": 1, "message": code, "data": [params...]}, "id": id}`.
//!   The numeric code is always 1 ([`ERROR_CODE`]): XAPI keeps it only because 2.0 requires
//!   one, and some clients take 0 for success.
//! - The result is the bare value: no `Status` struct as in XML-RPC.
//!
//! Values: `Int` is a JSON number, `DateTime` a string (so it reads back as a `String`;
//! XAPI's reader does the same), a non-finite `Float` is written `null` since JSON has no
//! NaN or infinity (XAPI's writer would emit `NaN`, which JavaScript's `JSON.parse`
//! refuses). On input a JSON `null` reads as [`Value::void`], an integer literal beyond
//! `i64` is refused unless it is so large that serde_json reads it as a float (over
//! `u64::MAX`), and an object naming one key twice is refused.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::{excerpt, Call, Error, Failure, Value, MAX_CALL_LEN, MAX_DEPTH, MAX_RESPONSE_LEN};

/// The `code` of every XenAPI error in a 2.0 answer, as XAPI's `error_code_lit`.
pub const ERROR_CODE: i64 = 1;

/// The protocol version of a request, which its answer repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A request's `id`, echoed in its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Int(i64),
    String(String),
}

/// A parsed request: the call, and what its answer must repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub version: Version,
    pub id: Id,
    pub call: Call,
}

/// A parsed answer. `id` is `None` when the server sent `null` or none.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: Option<Id>,
    pub result: Result<Value, Failure>,
}

/// Reads a request (a server's side), at most [`MAX_CALL_LEN`] bytes.
pub fn parse_call(body: &[u8]) -> Result<Request, Error> {
    let text = Error::check_body(body, MAX_CALL_LEN)?;
    // Two more levels for the request object and its params array.
    let Json::Object(mut top) = parse_json(text, MAX_DEPTH + 2)? else {
        return Err(Error::structure("request is not a JSON object"));
    };
    let version = match top.remove("jsonrpc") {
        None => Version::V1,
        Some(Json::String(v)) if v == "2.0" => Version::V2,
        Some(_) => return Err(Error::structure("\"jsonrpc\" is not \"2.0\"")),
    };
    let method = match top.remove("method") {
        Some(Json::String(m)) if !m.is_empty() => m,
        _ => return Err(Error::structure("no \"method\" string")),
    };
    let params = match (version, top.remove("params")) {
        (_, Some(Json::Array(params))) => params,
        (Version::V2, None | Some(Json::Null)) => Vec::new(),
        (Version::V2, Some(object @ Json::Object(_))) => vec![object],
        (Version::V1, None) => return Err(Error::structure("no \"params\" array")),
        _ => return Err(Error::structure("\"params\" is not an array")),
    };
    let id = match top.remove("id") {
        Some(Json::Int(i)) => Id::Int(i),
        Some(Json::String(s)) => Id::String(s),
        None | Some(Json::Null) => {
            return Err(Error::structure(
                "no \"id\": notifications are not answered",
            ))
        }
        Some(_) => return Err(Error::structure("\"id\" is not a number or a string")),
    };
    let params = params.into_iter().map(Json::into_value).collect();
    Ok(Request {
        version,
        id,
        call: Call { method, params },
    })
}

/// Writes the answer to a request of `version` and `id`.
pub fn encode_response(version: Version, id: &Id, result: &Result<Value, Failure>) -> String {
    let mut out = String::with_capacity(128);
    out.push('{');
    if version == Version::V2 {
        out.push_str("\"jsonrpc\":\"2.0\",");
    }
    match (version, result) {
        (Version::V1, Ok(value)) => {
            out.push_str("\"result\":");
            write_value(&mut out, value);
            out.push_str(",\"error\":null");
        }
        (Version::V1, Err(failure)) => {
            out.push_str("\"result\":null,\"error\":[");
            write_strings(
                &mut out,
                std::iter::once(&failure.code).chain(&failure.params),
            );
            out.push(']');
        }
        (Version::V2, Ok(value)) => {
            out.push_str("\"result\":");
            write_value(&mut out, value);
        }
        (Version::V2, Err(failure)) => {
            out.push_str(&format!("\"error\":{{\"code\":{ERROR_CODE},\"message\":"));
            write_string(&mut out, &failure.code);
            out.push_str(",\"data\":[");
            write_strings(&mut out, &failure.params);
            out.push_str("]}");
        }
    }
    out.push_str(",\"id\":");
    write_id(&mut out, id);
    out.push('}');
    out
}

/// Writes a request (a client's side). Parameters always go as an array.
pub fn encode_call(version: Version, id: &Id, method: &str, params: &[Value]) -> String {
    let mut out = String::with_capacity(128);
    out.push('{');
    if version == Version::V2 {
        out.push_str("\"jsonrpc\":\"2.0\",");
    }
    out.push_str("\"method\":");
    write_string(&mut out, method);
    out.push_str(",\"params\":[");
    for (i, param) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_value(&mut out, param);
    }
    out.push_str("],\"id\":");
    write_id(&mut out, id);
    out.push('}');
    out
}

/// Reads an answer (a client's side), at most [`MAX_RESPONSE_LEN`] bytes, of either version.
///
/// Besides XAPI's two error shapes this takes a 2.0 error whose `data` is missing (any
/// JSON-RPC server's own errors, with `message` as the code) and an `error` that is a bare
/// `[code, params...]` array in a 2.0 answer (XAPI's answer when the call cannot be read).
pub fn parse_response(body: &[u8]) -> Result<Response, Error> {
    let text = Error::check_body(body, MAX_RESPONSE_LEN)?;
    // One more level for the response object; an error's data sits two below it.
    let Json::Object(mut top) = parse_json(text, MAX_DEPTH + 2)? else {
        return Err(Error::structure("response is not a JSON object"));
    };
    let id = match top.remove("id") {
        None | Some(Json::Null) => None,
        Some(Json::Int(i)) => Some(Id::Int(i)),
        Some(Json::String(s)) => Some(Id::String(s)),
        Some(_) => return Err(Error::structure("\"id\" is not a number or a string")),
    };
    match top.remove("jsonrpc") {
        None => {}
        Some(Json::String(v)) if v == "2.0" => {}
        Some(_) => return Err(Error::structure("\"jsonrpc\" is not \"2.0\"")),
    }
    // 1.0 sends both members with one null; 2.0 sends one. A null error is no error.
    let error = top.remove("error").filter(|e| *e != Json::Null);
    let result = match (top.remove("result"), error) {
        (None, None) => return Err(Error::structure("neither \"result\" nor \"error\"")),
        (Some(Json::Null) | None, Some(error)) => Err(failure(error)?),
        (Some(_), Some(_)) => return Err(Error::structure("both \"result\" and \"error\"")),
        (Some(result), None) => Ok(result.into_value()),
    };
    Ok(Response { id, result })
}

fn failure(error: Json) -> Result<Failure, Error> {
    match error {
        Json::Array(items) => {
            Failure::from_description(items.into_iter().map(Json::into_value).collect())
        }
        Json::Object(mut members) => {
            let code = match members.remove("message") {
                Some(Json::String(code)) => code,
                _ => return Err(Error::structure("error object has no \"message\" string")),
            };
            let params = match members.remove("data") {
                None | Some(Json::Null) => Vec::new(),
                Some(Json::Array(items)) => {
                    let mut items: Vec<Value> = items.into_iter().map(Json::into_value).collect();
                    // Reuse the ErrorDescription rules (strings, or ints as text) for data.
                    items.insert(0, Value::String(String::new()));
                    Failure::from_description(items)?.params
                }
                Some(_) => return Err(Error::structure("error \"data\" is not an array")),
            };
            Ok(Failure { code, params })
        }
        _ => Err(Error::structure(
            "\"error\" is neither an array nor an object",
        )),
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::String(s) | Value::DateTime(s) => write_string(out, s),
        Value::Int(i) => out.push_str(&i.to_string()),
        // Debug is the shortest text that reads back to the same f64, and valid JSON
        // ("0.1", "1e300", "-0.0") for every finite value.
        Value::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
        Value::Float(_) => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Struct(members) => {
            out.push('{');
            for (i, (name, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, member);
            }
            out.push('}');
        }
    }
}

fn write_strings<'s>(out: &mut String, strings: impl IntoIterator<Item = &'s String>) {
    for (i, s) in strings.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, s);
    }
}

fn write_id(out: &mut String, id: &Id) {
    match id {
        Id::Int(i) => out.push_str(&i.to_string()),
        Id::String(s) => write_string(out, s),
    }
}

/// A JSON string: quotes, backslashes and controls escaped, everything else as UTF-8.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let short = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if u32::from(c) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push_str(short);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// JSON as read, before the envelope is taken apart: unlike [`Value`] it keeps `null`,
/// which an envelope tells from an empty string.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    /// Recursion here is bounded: a `Json` comes only from [`parse_json`], within its limit.
    fn into_value(self) -> Value {
        match self {
            Json::Null => Value::void(),
            Json::Bool(b) => Value::Bool(b),
            Json::Int(i) => Value::Int(i),
            Json::Float(f) => Value::Float(f),
            Json::String(s) => Value::String(s),
            Json::Array(items) => Value::Array(items.into_iter().map(Json::into_value).collect()),
            Json::Object(members) => Value::Struct(
                members
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
        }
    }
}

/// Reads one JSON document, with arrays and objects nested at most `limit` deep.
///
/// serde_json's own recursion limit (128) stays above `limit`, so ours is the one that
/// answers; its errors are kept in `refused` to come out typed rather than as strings.
fn parse_json(text: &str, limit: usize) -> Result<Json, Error> {
    let refused = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Seed {
        depth: 0,
        limit,
        refused: &refused,
    };
    match seed
        .deserialize(&mut de)
        .and_then(|json| de.end().map(|()| json))
    {
        Ok(json) => Ok(json),
        Err(e) => Err(match refused.take() {
            Some(ours) => ours,
            None => Error::syntax(format!("line {} column {}", e.line(), e.column()), e),
        }),
    }
}

#[derive(Clone, Copy)]
struct Seed<'r> {
    depth: usize,
    limit: usize,
    refused: &'r Cell<Option<Error>>,
}

impl Seed<'_> {
    fn refuse<E: de::Error>(&self, error: Error) -> E {
        let e = E::custom(&error);
        self.refused.set(Some(error));
        e
    }

    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.limit {
            return Err(self.refuse(Error::TooDeep { limit: MAX_DEPTH }));
        }
        Ok(Seed {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Json, E> {
        Ok(Json::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Json, E> {
        i64::try_from(u)
            .map(Json::Int)
            .map_err(|_| self.refuse(Error::structure(format!("integer {u} is over 64 bits"))))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Json, E> {
        Ok(Json::Float(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let child = self.deeper()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let child = self.deeper()?;
        let mut members = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                let msg = format!("key \"{}\" twice", excerpt(&name));
                return Err(self.refuse(Error::structure(msg)));
            }
            let value = map.next_value_seed(child)?;
            members.insert(name, value);
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn s(text: &str) -> Value {
        Value::from(text)
    }

    fn map(members: &[(&str, Value)]) -> Value {
        Value::Struct(
            members
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn every_type() -> Value {
        map(&[
            (
                "string",
                s("\"\\/ ünïcødé ☃ 𝄞 \t\n\r\u{0}\u{1f}\u{7f}\u{2028} end"),
            ),
            ("empty", s("")),
            ("int", Value::Int(i64::MIN)),
            ("max", Value::Int(i64::MAX)),
            ("float", Value::Float(0.1)),
            ("big float", Value::Float(1e300)),
            ("tiny float", Value::Float(-5e-324)),
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            (
                "nested",
                Value::Array(vec![
                    Value::Array(vec![]),
                    map(&[]),
                    map(&[("k\"", Value::Array(vec![Value::Int(1), s("x")]))]),
                ]),
            ),
        ])
    }

    fn err_kind(body: &str) -> ErrorKind {
        match parse_call(body.as_bytes()) {
            Ok(r) => panic!("{body} parsed as {r:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn every_type_round_trips_through_a_call() {
        for version in [Version::V1, Version::V2] {
            let params = vec![s("OpaqueRef:abc"), every_type(), Value::Float(-0.0)];
            let id = Id::String("req-1".into());
            let text = encode_call(version, &id, "VM.set_other_config", &params);
            let request = parse_call(text.as_bytes()).unwrap();
            assert_eq!(
                request,
                Request {
                    version,
                    id,
                    call: Call::new("VM.set_other_config", params)
                }
            );
            // The text is JSON any reader takes.
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
    }

    #[test]
    fn every_type_round_trips_through_a_response() {
        let failure = Failure::new(
            "VM_BAD_POWER_STATE",
            vec!["OpaqueRef:1".into(), "\"halted\"".into()],
        );
        for version in [Version::V1, Version::V2] {
            for result in [Ok(every_type()), Err(failure.clone()), Ok(Value::void())] {
                let text = encode_response(version, &Id::Int(-3), &result);
                let response = parse_response(text.as_bytes()).unwrap();
                assert_eq!(
                    response,
                    Response {
                        id: Some(Id::Int(-3)),
                        result
                    }
                );
            }
        }
    }

    #[test]
    fn datetimes_go_as_strings_and_non_finite_floats_as_null() {
        let value = Value::Array(vec![
            Value::DateTime("20240229T23:59:59Z".into()),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
        ]);
        let text = encode_response(Version::V2, &Id::Int(1), &Ok(value));
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","result":["20240229T23:59:59Z",null,null],"id":1}"#
        );
        let response = parse_response(text.as_bytes()).unwrap();
        assert_eq!(
            response.result,
            Ok(Value::Array(vec![
                s("20240229T23:59:59Z"),
                Value::void(),
                Value::void()
            ]))
        );
    }

    #[test]
    fn floats_are_read_exactly() {
        // serde_json's default float reading is one ulp off here (found by the fuzzer).
        let r = parse_call(br#"{"method":"m","params":[-2.5e-30, 0.1, 5e-324],"id":1}"#).unwrap();
        assert_eq!(
            r.call.params,
            vec![
                Value::Float(-2.5e-30),
                Value::Float(0.1),
                Value::Float(5e-324)
            ]
        );
    }

    #[test]
    fn responses_are_written_as_xapi_writes_them() {
        let failure = Failure::new("SESSION_INVALID", vec!["OpaqueRef:x".into()]);
        let id = Id::Int(7);
        assert_eq!(
            encode_response(Version::V1, &id, &Ok(s("r"))),
            r#"{"result":"r","error":null,"id":7}"#
        );
        assert_eq!(
            encode_response(Version::V1, &id, &Err(failure.clone())),
            r#"{"result":null,"error":["SESSION_INVALID","OpaqueRef:x"],"id":7}"#
        );
        assert_eq!(
            encode_response(Version::V2, &id, &Ok(Value::Int(5))),
            r#"{"jsonrpc":"2.0","result":5,"id":7}"#
        );
        assert_eq!(
            encode_response(Version::V2, &Id::String("a".into()), &Err(failure)),
            r#"{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:x"]},"id":"a"}"#
        );
    }

    #[test]
    fn reads_requests_of_both_versions() {
        let r = parse_call(
            br#"{"method":"session.login_with_password","params":["root","pw"],"id":0}"#,
        )
        .unwrap();
        assert_eq!(r.version, Version::V1);
        assert_eq!(r.id, Id::Int(0));
        assert_eq!(
            r.call,
            Call::new("session.login_with_password", vec![s("root"), s("pw")])
        );
        let r = parse_call(br#" {"id":"x","params":[null, 1.0, 2, true, {}],"jsonrpc":"2.0","method":"m","extra":{"a":[1]}} "#).unwrap();
        assert_eq!(r.version, Version::V2);
        assert_eq!(r.id, Id::String("x".into()));
        assert_eq!(
            r.call.params,
            vec![
                Value::void(),
                Value::Float(1.0),
                Value::Int(2),
                Value::Bool(true),
                map(&[])
            ]
        );
        let r = parse_call(br#"{"jsonrpc":"2.0","method":"m","id":1}"#).unwrap();
        assert_eq!(r.call.params, vec![]);
        let r = parse_call(br#"{"jsonrpc":"2.0","method":"m","params":null,"id":1}"#).unwrap();
        assert_eq!(r.call.params, vec![]);
        let r = parse_call(br#"{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":1}"#).unwrap();
        assert_eq!(r.call.params, vec![map(&[("a", Value::Int(1))])]);
        let r = parse_call(
            "\u{feff}{\"method\":\"m\\u00e9\",\"params\":[\"\\ud83d\\ude00\"],\"id\":1}".as_bytes(),
        )
        .unwrap();
        assert_eq!(r.call, Call::new("mé", vec![s("😀")]));
    }

    #[test]
    fn refuses_requests_xapi_refuses() {
        for bad in [
            r#"{"method":"m","id":1}"#,
            r#"{"method":"m","params":{},"id":1}"#,
            r#"{"method":"m","params":"x","id":1}"#,
            r#"{"jsonrpc":"1.0","method":"m","params":[],"id":1}"#,
            r#"{"jsonrpc":2.0,"method":"m","params":[],"id":1}"#,
            r#"{"method":"m","params":[]}"#,
            r#"{"method":"m","params":[],"id":null}"#,
            r#"{"method":"m","params":[],"id":1.5}"#,
            r#"{"method":"m","params":[],"id":[1]}"#,
            r#"{"method":"","params":[],"id":1}"#,
            r#"{"method":7,"params":[],"id":1}"#,
            r#"{"params":[],"id":1}"#,
            r#"["m"]"#,
            r#""m""#,
            r#"{"method":"m","method":"n","params":[],"id":1}"#,
            r#"{"method":"m","params":[{"a":1,"a":2}],"id":1}"#,
            r#"{"method":"m","params":[18446744073709551615],"id":1}"#,
            r#"{"method":"m","params":[9223372036854775808],"id":1}"#,
        ] {
            assert_eq!(err_kind(bad), ErrorKind::Structure, "{bad}");
        }
    }

    #[test]
    fn refuses_malformed_json() {
        for bad in [
            "",
            "   ",
            "{",
            r#"{"method":"m","params":[],"id":1"#,
            r#"{"method":"m","params":[],"id":1}}"#,
            r#"{"method":"m","params":[],"id":1} {}"#,
            r#"{"method":"m","params":[NaN],"id":1}"#,
            r#"{"method":"m","params":[1e400],"id":1}"#,
            r#"{"method":"m","params":["\ud800"],"id":1}"#,
            r#"{"method":"m","params":['x'],"id":1}"#,
            r#"{"method":"m","params":[01],"id":1}"#,
            "{\"method\":\"m\",\"params\":[\"\u{1}\"],\"id\":1}",
        ] {
            assert_eq!(err_kind(bad), ErrorKind::Syntax, "{bad}");
        }
        assert_eq!(
            parse_call(b"{\"method\":\"\xff\"}").unwrap_err().kind(),
            ErrorKind::Syntax
        );
        // Beyond u64 serde_json reads an integer as a float; documented, not refused.
        let r = parse_call(br#"{"method":"m","params":[100000000000000000000],"id":1}"#).unwrap();
        assert_eq!(r.call.params, vec![Value::Float(1e20)]);
    }

    #[test]
    fn reads_responses_in_every_shape() {
        let ok = |body: &str| parse_response(body.as_bytes()).unwrap();
        assert_eq!(
            ok(r#"{"result":"r","error":null,"id":1}"#).result,
            Ok(s("r"))
        );
        assert_eq!(
            ok(r#"{"result":null,"error":null,"id":1}"#).result,
            Ok(Value::void())
        );
        assert_eq!(
            ok(r#"{"jsonrpc":"2.0","result":null,"id":null}"#),
            Response {
                id: None,
                result: Ok(Value::void())
            }
        );
        assert_eq!(
            ok(r#"{"jsonrpc":"2.0","result":1,"error":null,"id":"i"}"#).result,
            Ok(Value::Int(1))
        );
        let failure = |code: &str, params: &[&str]| {
            Err(Failure::new(
                code,
                params.iter().map(|p| p.to_string()).collect(),
            ))
        };
        assert_eq!(
            ok(r#"{"result":null,"error":["E","a",3],"id":1}"#).result,
            failure("E", &["a", "3"])
        );
        assert_eq!(
            ok(r#"{"jsonrpc":"2.0","error":["E"],"id":0}"#).result,
            failure("E", &[])
        );
        assert_eq!(
            ok(r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#)
                .result,
            failure("Parse error", &[])
        );
        for bad in [
            r#"{"id":1}"#,
            r#"{"result":1,"error":["E"],"id":1}"#,
            r#"{"result":null,"error":[],"id":1}"#,
            r#"{"result":null,"error":[["E"]],"id":1}"#,
            r#"{"result":null,"error":"E","id":1}"#,
            r#"{"jsonrpc":"2.0","error":{"code":1},"id":1}"#,
            r#"{"jsonrpc":"2.0","error":{"message":"E","data":"x"},"id":1}"#,
            r#"{"jsonrpc":"2.0","error":{"message":"E","data":[{}]},"id":1}"#,
            r#"{"jsonrpc":"3.0","result":1,"id":1}"#,
            r#"{"result":1,"id":true}"#,
            r#"[]"#,
        ] {
            assert_eq!(
                parse_response(bad.as_bytes()).unwrap_err().kind(),
                ErrorKind::Structure,
                "{bad}"
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let text = encode_call(Version::V2, &Id::Int(1), "VM.start", &[every_type()]);
        for end in 0..text.len() {
            assert!(
                parse_call(&text.as_bytes()[..end]).is_err(),
                "prefix {end} parsed"
            );
        }
        let text = encode_response(Version::V1, &Id::Int(1), &Ok(every_type()));
        for end in 0..text.len() {
            assert!(
                parse_response(&text.as_bytes()[..end]).is_err(),
                "prefix {end} parsed"
            );
        }
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(s("core"), |v, _| map(&[("k", v)]))
    }

    #[test]
    fn bounds_nesting_and_size() {
        let call = |v: Value| encode_call(Version::V1, &Id::Int(1), "m", &[v]);
        assert_eq!(
            parse_call(call(nested(MAX_DEPTH)).as_bytes())
                .unwrap()
                .call
                .params,
            vec![nested(MAX_DEPTH)]
        );
        assert!(matches!(
            parse_call(call(nested(MAX_DEPTH + 1)).as_bytes()),
            Err(Error::TooDeep { .. })
        ));
        let answer = |v: Value| encode_response(Version::V2, &Id::Int(1), &Ok(v));
        assert_eq!(
            parse_response(answer(nested(MAX_DEPTH)).as_bytes())
                .unwrap()
                .result,
            Ok(nested(MAX_DEPTH))
        );
        // Deeper than serde_json's own limit: still our error, not its.
        let deep = format!(
            r#"{{"method":"m","params":[{}],"id":1}}"#,
            "[".repeat(100_000)
        );
        assert!(matches!(
            parse_call(deep.as_bytes()),
            Err(Error::TooDeep { .. })
        ));
        let big = format!(
            r#"{{"method":"m","params":["{}"],"id":1}}"#,
            "x".repeat(MAX_CALL_LEN)
        );
        assert!(matches!(
            parse_call(big.as_bytes()),
            Err(Error::TooLong { .. })
        ));
    }
}
