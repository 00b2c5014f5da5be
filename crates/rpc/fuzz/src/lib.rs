//! Fuzz targets for fv-rpc's parsers, which read whatever a client or server sends.
//!
//! The first input byte picks how the rest becomes a document, so that a plain random
//! runner gets past the first tag too:
//! - raw bytes;
//! - a soup of the format's own pieces (tags, entities, numbers, keywords);
//! - a valid call or response, encoded from a value the input describes, then mutated
//!   (bytes flipped, inserted, removed, spans repeated).
//!
//! Every document goes through both parsers of the format. The checks: no panic, and what
//! parses re-encodes to a document that parses to the same thing (modulo what the format
//! cannot carry: XML-RPC ints travel as strings, and text loses what XML 1.0 cannot hold).

use std::collections::BTreeMap;

use fv_rpc::jsonrpc::{self, Id, Version};
use fv_rpc::{xmlrpc, Failure, Value};

pub mod runner;

/// Reads the fuzz input as a stream of numbers; zeroes once it runs out.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.u8()))
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

const TEXTS: &[&str] = &[
    "",
    " ",
    "a",
    "OpaqueRef:x",
    "<&>\"'",
    "ü😀",
    "\r\n",
    "\t",
    "\u{1}",
    "\u{fffe}",
    "]]>",
    "\\",
    "\"",
    "\u{2028}",
    "20240229T23:59:59Z",
];

const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.1,
    1.5,
    -2.5e-300,
    1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

/// A value the input describes, nested up to `depth` (a little past the parsers' limit).
fn value(input: &mut Input, depth: usize) -> Value {
    let kind = if depth == 0 {
        input.u8() % 5
    } else {
        input.u8() % 7
    };
    match kind {
        0 => Value::String(text(input)),
        1 => Value::Int(input.pick(&[0, 1, -1, i64::MAX, i64::MIN, 1 << 31]) ^ (input.u8() as i64)),
        2 => Value::Float(input.pick(FLOATS)),
        3 => Value::Bool(input.u8() & 1 == 1),
        4 => Value::DateTime(text(input)),
        5 => {
            let n = usize::from(input.u8() % 4);
            Value::Array((0..n).map(|_| value(input, depth - 1)).collect())
        }
        _ => {
            let n = usize::from(input.u8() % 4);
            let mut members = BTreeMap::new();
            for _ in 0..n {
                members.insert(text(input), value(input, depth - 1));
            }
            Value::Struct(members)
        }
    }
}

fn text(input: &mut Input) -> String {
    let n = usize::from(input.u8() % 3);
    (0..n).map(|_| input.pick(TEXTS)).collect()
}

/// A deep chain of arrays or structs, to cross the depth limit often.
fn deep(input: &mut Input) -> Value {
    let depth = usize::from(input.u8() % 8) + fv_rpc::MAX_DEPTH - 3;
    (0..depth).fold(Value::from("core"), |v, i| {
        if i % 2 == 0 {
            Value::Array(vec![v])
        } else {
            Value::Struct(BTreeMap::from([("k".to_owned(), v)]))
        }
    })
}

fn failure(input: &mut Input) -> Failure {
    let n = usize::from(input.u8() % 3);
    Failure::new(text(input), (0..n).map(|_| text(input)).collect())
}

/// Flips, inserts, removes or repeats a few bytes of `doc`.
fn mutate(input: &mut Input, doc: &mut Vec<u8>) {
    for _ in 0..input.u8() % 4 {
        if doc.is_empty() {
            return;
        }
        let at = (input.u64() % doc.len() as u64) as usize;
        match input.u8() % 5 {
            0 => doc[at] ^= input.u8(),
            1 => doc.insert(at, input.u8()),
            2 => {
                doc.remove(at);
            }
            3 => doc.truncate(at),
            _ => {
                let len = usize::from(input.u8()).min(doc.len() - at);
                let span = doc[at..at + len].to_vec();
                doc.splice(at..at, span.iter().cycle().take(len * 8).copied());
            }
        }
    }
}

fn soup(input: &mut Input, pieces: &[&str]) -> Vec<u8> {
    let mut doc = Vec::new();
    while !input.is_empty() {
        doc.extend_from_slice(input.pick(pieces).as_bytes());
    }
    doc
}

const XML_PIECES: &[&str] = &[
    "<methodCall>",
    "</methodCall>",
    "<methodName>",
    "</methodName>",
    "<params>",
    "</params>",
    "<param>",
    "</param>",
    "<value>",
    "</value>",
    "<value/>",
    "<string>",
    "</string>",
    "<int>",
    "</int>",
    "<i4>",
    "</i4>",
    "<i8>",
    "</i8>",
    "<boolean>",
    "</boolean>",
    "<double>",
    "</double>",
    "<dateTime.iso8601>",
    "</dateTime.iso8601>",
    "<array>",
    "</array>",
    "<data>",
    "</data>",
    "<struct>",
    "</struct>",
    "<member>",
    "</member>",
    "<name>",
    "</name>",
    "<nil/>",
    "<base64>",
    "<methodResponse>",
    "</methodResponse>",
    "<fault>",
    "</fault>",
    "&amp;",
    "&lt;",
    "&#13;",
    "&#x1F600;",
    "&#0;",
    "&#xD800;",
    "&bogus;",
    "&",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?xml version=\"1.0\"?>",
    "<?xml version=\"1.0\" encoding=\"latin1\"?>",
    "<!DOCTYPE a>",
    " ",
    "\n",
    "\r",
    "a",
    "ü",
    "0",
    "1",
    "-",
    "9223372036854775808",
    "1e308",
    "nan",
    "inf",
    "Status",
    "Success",
    "Failure",
    "Value",
    "ErrorDescription",
    "faultCode",
    "faultString",
    "<",
    ">",
    "/",
    "\"",
    "=",
    " x=\"1\"",
    "\u{feff}",
    "\u{0}",
];

const JSON_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\"method\"",
    "\"params\"",
    "\"id\"",
    "\"jsonrpc\"",
    "\"2.0\"",
    "\"result\"",
    "\"error\"",
    "\"code\"",
    "\"message\"",
    "\"data\"",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5",
    "1e400",
    "9223372036854775808",
    "18446744073709551616",
    "100000000000000000000",
    "\"\\ud800\"",
    "\"\\u00e9\"",
    "\"a\"",
    "\"\\\"\"",
    "\\",
    " ",
    "\n",
    "NaN",
    "\u{feff}",
    "\u{0}",
    "ü",
];

/// XML-RPC: both parsers on one document, then the round trip of what parsed.
pub fn fuzz_xmlrpc(data: &[u8]) {
    let mut input = Input::new(data);
    let doc = match input.u8() % 4 {
        0 => input.rest().to_vec(),
        1 => soup(&mut input, XML_PIECES),
        mode => {
            let params: Vec<Value> = (0..input.u8() % 3)
                .map(|_| {
                    if input.u8() & 7 == 0 {
                        deep(&mut input)
                    } else {
                        value(&mut input, 4)
                    }
                })
                .collect();
            let mut doc = if mode == 2 {
                xmlrpc::encode_call(&text(&mut input), &params).into_bytes()
            } else if input.u8() & 1 == 0 {
                xmlrpc::encode_response(&Ok(params.into_iter().next().unwrap_or_else(Value::void)))
                    .into_bytes()
            } else {
                xmlrpc::encode_response(&Err(failure(&mut input))).into_bytes()
            };
            mutate(&mut input, &mut doc);
            doc
        }
    };
    if let Ok(call) = xmlrpc::parse_call(&doc) {
        let again = xmlrpc::encode_call(&call.method, &call.params);
        // Dropping what XML cannot hold may merge two struct keys; the re-read then refuses
        // the duplicate, which is the documented outcome.
        match xmlrpc::parse_call(again.as_bytes()) {
            Ok(back) => {
                assert_eq!(back.method, xml_text(&call.method).trim());
                let want: Vec<Value> = call.params.iter().map(xml_normal).collect();
                assert!(same(&back.params, &want), "{:?} != {:?}", back.params, want);
            }
            Err(e) => assert!(
                merges_keys(&call.params) || xml_text(&call.method).trim().is_empty(),
                "re-encoded call refused: {e}\n{again}"
            ),
        }
    }
    if let Ok(Ok(value)) = xmlrpc::parse_response(&doc) {
        let again = xmlrpc::encode_response(&Ok(value.clone()));
        match xmlrpc::parse_response(again.as_bytes()) {
            Ok(Ok(back)) => assert!(same(&[back], &[xml_normal(&value)])),
            Ok(Err(f)) => panic!("success re-read as {f}"),
            Err(e) => assert!(merges_keys(&[value]), "re-encoded response refused: {e}"),
        }
    }
}

/// JSON-RPC: both parsers on one document, then the round trip of what parsed.
pub fn fuzz_jsonrpc(data: &[u8]) {
    let mut input = Input::new(data);
    let doc = match input.u8() % 4 {
        0 => input.rest().to_vec(),
        1 => soup(&mut input, JSON_PIECES),
        mode => {
            let version = if input.u8() & 1 == 0 {
                Version::V1
            } else {
                Version::V2
            };
            let id = if input.u8() & 1 == 0 {
                Id::Int(input.u64() as i64)
            } else {
                Id::String(text(&mut input))
            };
            let params: Vec<Value> = (0..input.u8() % 3)
                .map(|_| {
                    if input.u8() & 7 == 0 {
                        deep(&mut input)
                    } else {
                        value(&mut input, 4)
                    }
                })
                .collect();
            let mut doc = if mode == 2 {
                jsonrpc::encode_call(version, &id, &text(&mut input), &params).into_bytes()
            } else if input.u8() & 1 == 0 {
                let result = Ok(params.into_iter().next().unwrap_or_else(Value::void));
                jsonrpc::encode_response(version, &id, &result).into_bytes()
            } else {
                jsonrpc::encode_response(version, &id, &Err(failure(&mut input))).into_bytes()
            };
            mutate(&mut input, &mut doc);
            doc
        }
    };
    if let Ok(request) = jsonrpc::parse_call(&doc) {
        let again = jsonrpc::encode_call(
            request.version,
            &request.id,
            &request.call.method,
            &request.call.params,
        );
        let back = jsonrpc::parse_call(again.as_bytes()).expect("re-encoded call parses");
        assert_eq!(
            (back.version, &back.id, &back.call.method),
            (request.version, &request.id, &request.call.method)
        );
        let (b, r) = (&back.call.params, &request.call.params);
        assert!(same(b, r), "{b:?} != {r:?}\n{again}");
    }
    if let Ok(response) = jsonrpc::parse_response(&doc) {
        let id = response.id.clone().unwrap_or(Id::Int(0));
        for version in [Version::V1, Version::V2] {
            let again = jsonrpc::encode_response(version, &id, &response.result);
            let back =
                jsonrpc::parse_response(again.as_bytes()).expect("re-encoded response parses");
            match (&back.result, &response.result) {
                (Ok(a), Ok(b)) => assert!(same(std::slice::from_ref(a), std::slice::from_ref(b))),
                (a, b) => assert_eq!(a, b),
            }
        }
    }
}

/// Text as XML-RPC carries it: without the characters XML 1.0 cannot hold.
fn xml_text(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            !((u32::from(c) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
                || c == '\u{fffe}'
                || c == '\u{ffff}')
        })
        .collect()
}

/// A value as it reads back after XML-RPC: ints as strings, text filtered.
fn xml_normal(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(xml_text(s)),
        Value::Int(i) => Value::String(i.to_string()),
        Value::DateTime(s) => Value::DateTime(xml_text(s).trim().to_owned()),
        Value::Array(items) => Value::Array(items.iter().map(xml_normal).collect()),
        Value::Struct(members) => Value::Struct(
            members
                .iter()
                .map(|(k, v)| (xml_text(k), xml_normal(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether filtering text for XML makes two keys of one struct equal.
fn merges_keys(values: &[Value]) -> bool {
    values.iter().any(|v| match v {
        Value::Array(items) => merges_keys(items),
        Value::Struct(members) => {
            let filtered: std::collections::BTreeSet<String> =
                members.keys().map(|k| xml_text(k)).collect();
            filtered.len() < members.len()
                || merges_keys(&members.values().cloned().collect::<Vec<_>>())
        }
        _ => false,
    })
}

/// Equality with NaN equal to itself and floats compared bit for bit.
fn same(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Value::Float(x), Value::Float(y)) => {
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
            }
            (Value::Array(x), Value::Array(y)) => same(x, y),
            (Value::Struct(x), Value::Struct(y)) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|((kx, vx), (ky, vy))| {
                        kx == ky && same(std::slice::from_ref(vx), std::slice::from_ref(vy))
                    })
            }
            (x, y) => x == y,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_run_on_a_few_inputs() {
        let mut rng = runner::XorShift::new(7);
        let mut data = Vec::new();
        for _ in 0..2000 {
            rng.input(&mut data);
            fuzz_xmlrpc(&data);
            fuzz_jsonrpc(&data);
        }
    }
}
