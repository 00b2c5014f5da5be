//! XML-RPC as XAPI speaks it at `/`.
//!
//! Every answer is a struct inside `<params><param>`: `{Status: "Success", Value: v}` or
//! `{Status: "Failure", ErrorDescription: [code, params...]}` (ocaml-rpc's `xmlrpc.ml`,
//! `add_response`, which XAPI's `api_server.ml` uses). A `<fault>` is only for the transport
//! failing, never for a XenAPI error.
//!
//! Writing follows XAPI byte for byte where it matters: strings and ints are bare
//! `<value>text</value>` (so an `Int` reads back as a `String` holding digits, which
//! [`Value::as_int`] accepts), doubles `<double>`, booleans `<boolean>1</boolean>`.
//!
//! Reading takes what the Python SDK (`xmlrpc.client`) and XAPI write and a little more:
//! `<string>`, bare text, `<int>`/`<i4>`/`<i8>` (all read as 64-bit), `<boolean>` (`0`/`1`,
//! also `true`/`false`), `<double>`, `<dateTime.iso8601>` (its text, trimmed, unchecked), `<array>`
//! (with or without `<data>`), `<struct>`, and `<nil/>`, read as [`Value::void`] since
//! `Value` has no null. It refuses `<base64>` (XenAPI has no binary type), a `DOCTYPE`
//! (entity declarations are an attack surface no client needs), an encoding other than
//! UTF-8, and a struct naming one member twice (the Python SDK cannot send that; a parser
//! that kept either copy would let a proxy and fvd disagree on what was asked).

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::{excerpt, Call, Error, Failure, Value, MAX_CALL_LEN, MAX_DEPTH, MAX_RESPONSE_LEN};

const HEADER: &str = "<?xml version=\"1.0\"?>";

/// Reads a `<methodCall>` (a server's side), at most [`MAX_CALL_LEN`] bytes.
pub fn parse_call(body: &[u8]) -> Result<Call, Error> {
    let text = Error::check_body(body, MAX_CALL_LEN)?;
    let mut p = Parser::new(text, MAX_DEPTH);
    p.open(Tag::MethodCall)?;
    p.open(Tag::MethodName)?;
    let method = p.text(&Tag::MethodName)?.trim().to_owned();
    if method.is_empty() {
        return Err(p.structure("empty <methodName>"));
    }
    let mut params = Vec::new();
    // `<params>` may be left out of a call that has none.
    match p.next_tag()? {
        Tok::Close => {}
        Tok::Open(Tag::Params) => {
            loop {
                match p.next_tag()? {
                    Tok::Open(Tag::Param) => {
                        p.open(Tag::Value)?;
                        params.push(p.value(0)?);
                        p.close(&Tag::Param)?;
                    }
                    Tok::Close => break,
                    other => return Err(p.unexpected(other, "<param> or </params>")),
                }
            }
            p.close(&Tag::MethodCall)?;
        }
        other => return Err(p.unexpected(other, "<params> or </methodCall>")),
    }
    p.end()?;
    Ok(Call { method, params })
}

/// Writes a XenAPI answer as XAPI does: a `Status` struct, never a `<fault>`.
pub fn encode_response(result: &Result<Value, Failure>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(HEADER);
    out.push_str("<methodResponse><params><param><value><struct>");
    // Status first, as XAPI orders it (not the sorted order of a `Value::Struct`).
    match result {
        Ok(value) => {
            out.push_str("<member><name>Status</name><value>Success</value></member>");
            out.push_str("<member><name>Value</name>");
            write_value(&mut out, value);
            out.push_str("</member>");
        }
        Err(failure) => {
            out.push_str("<member><name>Status</name><value>Failure</value></member>");
            out.push_str("<member><name>ErrorDescription</name><value><array><data>");
            for s in std::iter::once(&failure.code).chain(&failure.params) {
                out.push_str("<value>");
                escape_into(&mut out, s);
                out.push_str("</value>");
            }
            out.push_str("</data></array></value></member>");
        }
    }
    out.push_str("</struct></value></param></params></methodResponse>");
    out
}

/// Writes an XML-RPC `<fault>`: for a request that is not a call at all, where there is no
/// XenAPI answer to give. Python's `xmlrpc.client` raises it as `Fault(code, message)`.
pub fn encode_fault(code: i32, message: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(HEADER);
    out.push_str("<methodResponse><fault><value><struct><member><name>faultCode</name>");
    // A real <int>: clients want a number here, unlike in XenAPI values.
    out.push_str(&format!("<value><int>{code}</int></value></member>"));
    out.push_str("<member><name>faultString</name><value>");
    escape_into(&mut out, message);
    out.push_str("</value></member></struct></value></fault></methodResponse>");
    out
}

/// Writes a `<methodCall>` (a client's side).
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(HEADER);
    out.push_str("<methodCall><methodName>");
    escape_into(&mut out, method);
    out.push_str("</methodName><params>");
    for param in params {
        out.push_str("<param>");
        write_value(&mut out, param);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

/// Reads a `<methodResponse>` (a client's side), at most [`MAX_RESPONSE_LEN`] bytes: the
/// XenAPI answer, `Ok(value)` or `Err(failure)`. A `<fault>` becomes a [`Failure`] with code
/// [`Failure::FAULT`] and params `[faultCode, faultString]`.
pub fn parse_response(body: &[u8]) -> Result<Result<Value, Failure>, Error> {
    let text = Error::check_body(body, MAX_RESPONSE_LEN)?;
    // One more level for the Status struct around the value.
    let mut p = Parser::new(text, MAX_DEPTH + 1);
    p.open(Tag::MethodResponse)?;
    let (value, is_fault) = match p.next_tag()? {
        Tok::Open(Tag::Params) => {
            p.open(Tag::Param)?;
            p.open(Tag::Value)?;
            let value = p.value(0)?;
            p.close(&Tag::Param)?;
            p.close(&Tag::Params)?;
            (value, false)
        }
        Tok::Open(Tag::Fault) => {
            p.open(Tag::Value)?;
            let value = p.value(0)?;
            p.close(&Tag::Fault)?;
            (value, true)
        }
        other => return Err(p.unexpected(other, "<params> or <fault>")),
    };
    p.close(&Tag::MethodResponse)?;
    p.end()?;
    if is_fault {
        fault(value).map(Err)
    } else {
        status(value)
    }
}

/// Unwraps XenAPI's `{Status, Value | ErrorDescription}`.
fn status(value: Value) -> Result<Result<Value, Failure>, Error> {
    let Value::Struct(mut members) = value else {
        return Err(Error::structure("response is not a XenAPI Status struct"));
    };
    match members.remove("Status") {
        Some(Value::String(s)) if s == "Success" => match members.remove("Value") {
            Some(value) => Ok(Ok(value)),
            None => Err(Error::structure("Success without a Value")),
        },
        Some(Value::String(s)) if s == "Failure" => match members.remove("ErrorDescription") {
            Some(Value::Array(items)) => Failure::from_description(items).map(Err),
            _ => Err(Error::structure(
                "Failure without an ErrorDescription array",
            )),
        },
        _ => Err(Error::structure(
            "response has no Status Success or Failure",
        )),
    }
}

fn fault(value: Value) -> Result<Failure, Error> {
    let Value::Struct(mut members) = value else {
        return Err(Error::structure("<fault> is not a struct"));
    };
    let code = members
        .remove("faultCode")
        .and_then(|c| c.as_int())
        .ok_or_else(|| Error::structure("<fault> has no integer faultCode"))?;
    let message = match members.remove("faultString") {
        Some(Value::String(s)) => s,
        _ => return Err(Error::structure("<fault> has no faultString")),
    };
    Ok(Failure::new(
        Failure::FAULT,
        vec![code.to_string(), message],
    ))
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => {
            out.push_str("<value>");
            escape_into(out, s);
            out.push_str("</value>");
        }
        Value::Int(i) => {
            out.push_str("<value>");
            out.push_str(&i.to_string());
            out.push_str("</value>");
        }
        Value::Float(f) => {
            // Debug is the shortest text that reads back to the same f64 ("0.1", "1e300",
            // "NaN", "inf"); Python's float() and Rust's parse take all of them.
            out.push_str(&format!("<value><double>{f:?}</double></value>"));
        }
        Value::Bool(b) => {
            out.push_str(if *b {
                "<value><boolean>1</boolean></value>"
            } else {
                "<value><boolean>0</boolean></value>"
            });
        }
        Value::DateTime(s) => {
            out.push_str("<value><dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601></value>");
        }
        Value::Array(items) => {
            out.push_str("<value><array><data>");
            for item in items {
                write_value(out, item);
            }
            out.push_str("</data></array></value>");
        }
        Value::Struct(members) => {
            out.push_str("<value><struct>");
            for (name, member) in members {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                write_value(out, member);
                out.push_str("</member>");
            }
            out.push_str("</struct></value>");
        }
    }
}

/// Escapes text for an element's content.
///
/// `\r` goes as `&#13;` because XML reads a literal CR as LF. Other C0 controls, U+FFFE
/// and U+FFFF are not XML 1.0 characters even as references, so they are dropped, as XAPI
/// does (ocaml-rpc `xmlrpc.ml`, `encode`): a reader such as Python's expat would refuse the
/// whole document otherwise. So two struct keys that differ only in those characters
/// collide, and a reader refuses the duplicate.
fn escape_into(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let replacement = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\r' => "&#13;",
            '\t' | '\n' => continue,
            c if u32::from(c) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(replacement);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
}

/// The element names XML-RPC uses; anything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    MethodCall,
    MethodName,
    MethodResponse,
    Params,
    Param,
    Fault,
    Value,
    String,
    Int,
    Boolean,
    Double,
    DateTime,
    Base64,
    Array,
    Data,
    Struct,
    Member,
    Name,
    Nil,
    Other(String),
}

impl Tag {
    fn of(name: &[u8]) -> Tag {
        match name {
            b"methodCall" => Tag::MethodCall,
            b"methodName" => Tag::MethodName,
            b"methodResponse" => Tag::MethodResponse,
            b"params" => Tag::Params,
            b"param" => Tag::Param,
            b"fault" => Tag::Fault,
            b"value" => Tag::Value,
            b"string" => Tag::String,
            b"int" | b"i4" | b"i8" => Tag::Int,
            b"boolean" => Tag::Boolean,
            b"double" => Tag::Double,
            b"dateTime.iso8601" => Tag::DateTime,
            b"base64" => Tag::Base64,
            b"array" => Tag::Array,
            b"data" => Tag::Data,
            b"struct" => Tag::Struct,
            b"member" => Tag::Member,
            b"name" => Tag::Name,
            b"nil" => Tag::Nil,
            other => Tag::Other(excerpt(&String::from_utf8_lossy(other))),
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Tag::MethodCall => "methodCall",
            Tag::MethodName => "methodName",
            Tag::MethodResponse => "methodResponse",
            Tag::Params => "params",
            Tag::Param => "param",
            Tag::Fault => "fault",
            Tag::Value => "value",
            Tag::String => "string",
            Tag::Int => "int",
            Tag::Boolean => "boolean",
            Tag::Double => "double",
            Tag::DateTime => "dateTime.iso8601",
            Tag::Base64 => "base64",
            Tag::Array => "array",
            Tag::Data => "data",
            Tag::Struct => "struct",
            Tag::Member => "member",
            Tag::Name => "name",
            Tag::Nil => "nil",
            Tag::Other(name) => name,
        };
        f.write_str(name)
    }
}

/// What the parser sees of the document: elements and their text, with comments,
/// processing instructions and the declaration gone and references resolved.
#[derive(Debug)]
enum Tok<'a> {
    Open(Tag),
    /// An end tag; quick-xml has checked that it matches its start tag.
    Close,
    Text(Cow<'a, str>),
    Eof,
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    /// Array and struct nesting allowed below the top value.
    limit: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, limit: usize) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        // `<nil/>`, `<value/>`, `<struct/>` arrive as a start and an end, like their long forms.
        config.expand_empty_elements = true;
        config.check_end_names = true;
        Parser { reader, limit }
    }

    fn next(&mut self) -> Result<Tok<'a>, Error> {
        loop {
            let at = self.reader.buffer_position();
            let event = self
                .reader
                .read_event()
                .map_err(|e| Error::syntax(format!("byte {}", self.reader.error_position()), e))?;
            let syntax = |e: quick_xml::Error| Error::syntax(format!("byte {at}"), e);
            return Ok(match event {
                Event::Start(start) => Tok::Open(Tag::of(start.name().as_ref())),
                // Not produced with `expand_empty_elements`; refused rather than trusted.
                Event::Empty(_) => return Err(self.structure("unexpanded empty element")),
                Event::End(_) => Tok::Close,
                Event::Text(text) => Tok::Text(text.xml10_content().map_err(|e| syntax(e.into()))?),
                Event::CData(text) => {
                    Tok::Text(text.xml10_content().map_err(|e| syntax(e.into()))?)
                }
                Event::GeneralRef(reference) => {
                    if let Some(c) = reference.resolve_char_ref().map_err(syntax)? {
                        Tok::Text(Cow::Owned(c.to_string()))
                    } else {
                        let name = reference.decode().map_err(|e| syntax(e.into()))?;
                        Tok::Text(Cow::Borrowed(match &*name {
                            "lt" => "<",
                            "gt" => ">",
                            "amp" => "&",
                            "apos" => "'",
                            "quot" => "\"",
                            other => {
                                let msg = format!("undefined entity &{};", excerpt(other));
                                return Err(self.structure(&msg));
                            }
                        }))
                    }
                }
                Event::Decl(decl) => {
                    if let Some(encoding) = decl.encoding() {
                        let encoding = encoding.map_err(|e| syntax(e.into()))?;
                        if !is_utf8_name(&encoding) {
                            let name = String::from_utf8_lossy(&encoding).into_owned();
                            let msg = format!("encoding {} is not UTF-8", excerpt(&name));
                            return Err(self.structure(&msg));
                        }
                    }
                    continue;
                }
                Event::Comment(_) | Event::PI(_) => continue,
                Event::DocType(_) => return Err(self.structure("DOCTYPE is not accepted")),
                Event::Eof => Tok::Eof,
            });
        }
    }

    /// The next token that is not whitespace between elements.
    fn next_tag(&mut self) -> Result<Tok<'a>, Error> {
        loop {
            match self.next()? {
                Tok::Text(text) if is_blank(&text) => continue,
                Tok::Text(text) => {
                    let msg = format!("unexpected text \"{}\"", excerpt(&text));
                    return Err(self.structure(&msg));
                }
                tok => return Ok(tok),
            }
        }
    }

    fn open(&mut self, want: Tag) -> Result<(), Error> {
        match self.next_tag()? {
            Tok::Open(tag) if tag == want => Ok(()),
            other => Err(self.unexpected(other, &format!("<{want}>"))),
        }
    }

    fn close(&mut self, of: &Tag) -> Result<(), Error> {
        match self.next_tag()? {
            Tok::Close => Ok(()),
            other => Err(self.unexpected(other, &format!("</{of}>"))),
        }
    }

    /// Nothing but blanks and comments after the root element.
    fn end(&mut self) -> Result<(), Error> {
        match self.next_tag()? {
            Tok::Eof => Ok(()),
            other => Err(self.unexpected(other, "end of document")),
        }
    }

    /// The text of an element that holds only text, up to and including its end tag.
    fn text(&mut self, of: &Tag) -> Result<String, Error> {
        let mut text = String::new();
        loop {
            match self.next()? {
                Tok::Text(t) => text.push_str(&t),
                Tok::Close => return Ok(text),
                other => return Err(self.unexpected(other, &format!("text or </{of}>"))),
            }
        }
    }

    /// The content of a `<value>` whose start tag was read, up to and including its end.
    /// `depth` counts the arrays and structs around it.
    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        let mut text = String::new();
        loop {
            match self.next()? {
                Tok::Text(t) => text.push_str(&t),
                // No type element: the text is a string.
                Tok::Close => return Ok(Value::String(text)),
                Tok::Open(tag) => {
                    if !is_blank(&text) {
                        return Err(self.structure("text beside a type element in <value>"));
                    }
                    let value = self.typed(tag, depth)?;
                    self.close(&Tag::Value)?;
                    return Ok(value);
                }
                Tok::Eof => return Err(self.unexpected(Tok::Eof, "</value>")),
            }
        }
    }

    /// A type element whose start tag was read, up to and including its end.
    fn typed(&mut self, tag: Tag, depth: usize) -> Result<Value, Error> {
        Ok(match tag {
            Tag::String => Value::String(self.text(&tag)?),
            Tag::Int => {
                let text = self.text(&tag)?;
                match text.trim().parse() {
                    Ok(i) => Value::Int(i),
                    Err(_) => return Err(self.bad_scalar(&tag, &text)),
                }
            }
            Tag::Boolean => {
                let text = self.text(&tag)?;
                match text.trim() {
                    "1" | "true" => Value::Bool(true),
                    "0" | "false" => Value::Bool(false),
                    _ => return Err(self.bad_scalar(&tag, &text)),
                }
            }
            Tag::Double => {
                let text = self.text(&tag)?;
                match text.trim().parse() {
                    Ok(f) => Value::Float(f),
                    Err(_) => return Err(self.bad_scalar(&tag, &text)),
                }
            }
            Tag::DateTime => Value::DateTime(self.text(&tag)?.trim().to_owned()),
            Tag::Nil => {
                self.close(&tag)?;
                Value::void()
            }
            Tag::Array => {
                let depth = self.deeper(depth)?;
                let mut items = Vec::new();
                // `<data>` may be missing from an empty array.
                match self.next_tag()? {
                    Tok::Close => return Ok(Value::Array(items)),
                    Tok::Open(Tag::Data) => {}
                    other => return Err(self.unexpected(other, "<data>")),
                }
                loop {
                    match self.next_tag()? {
                        Tok::Open(Tag::Value) => items.push(self.value(depth)?),
                        Tok::Close => break,
                        other => return Err(self.unexpected(other, "<value> or </data>")),
                    }
                }
                self.close(&Tag::Array)?;
                Value::Array(items)
            }
            Tag::Struct => {
                let depth = self.deeper(depth)?;
                let mut members = BTreeMap::new();
                loop {
                    match self.next_tag()? {
                        Tok::Open(Tag::Member) => {
                            self.open(Tag::Name)?;
                            let name = self.text(&Tag::Name)?;
                            self.open(Tag::Value)?;
                            let value = self.value(depth)?;
                            self.close(&Tag::Member)?;
                            match members.entry(name) {
                                Entry::Vacant(slot) => {
                                    slot.insert(value);
                                }
                                Entry::Occupied(slot) => {
                                    let msg = format!("member {} twice", excerpt(slot.key()));
                                    return Err(self.structure(&msg));
                                }
                            }
                        }
                        Tok::Close => break,
                        other => return Err(self.unexpected(other, "<member> or </struct>")),
                    }
                }
                Value::Struct(members)
            }
            Tag::Base64 => return Err(self.structure("<base64> is not a XenAPI type")),
            other => {
                return Err(self.structure(&format!("<{other}> is not an XML-RPC type")));
            }
        })
    }

    fn deeper(&self, depth: usize) -> Result<usize, Error> {
        if depth >= self.limit {
            return Err(Error::TooDeep { limit: MAX_DEPTH });
        }
        Ok(depth + 1)
    }

    fn structure(&self, msg: &str) -> Error {
        Error::structure(format!("{msg} (at byte {})", self.reader.buffer_position()))
    }

    fn unexpected(&self, found: Tok<'_>, expected: &str) -> Error {
        let found = match found {
            Tok::Open(tag) => format!("<{tag}>"),
            Tok::Close => "an end tag".to_owned(),
            Tok::Text(text) => format!("text \"{}\"", excerpt(&text)),
            Tok::Eof => "end of document".to_owned(),
        };
        self.structure(&format!("expected {expected}, found {found}"))
    }

    fn bad_scalar(&self, tag: &Tag, text: &str) -> Error {
        self.structure(&format!("<{tag}> holds \"{}\"", excerpt(text)))
    }
}

fn is_blank(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn is_utf8_name(name: &[u8]) -> bool {
    [&b"utf-8"[..], b"utf8", b"us-ascii", b"ascii"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn call_of(params: &str) -> String {
        format!("<?xml version='1.0'?><methodCall><methodName>m</methodName><params>{params}</params></methodCall>")
    }

    /// The one parameter of a call holding `value` (a `<value>` element).
    fn parse_value(value: &str) -> Result<Value, Error> {
        let call = parse_call(call_of(&format!("<param>{value}</param>")).as_bytes())?;
        assert_eq!(call.params.len(), 1);
        Ok(call.params.into_iter().next().unwrap())
    }

    fn kind(value: &str) -> ErrorKind {
        match parse_value(value) {
            Ok(v) => panic!("{value} parsed as {v:?}"),
            Err(e) => e.kind(),
        }
    }

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

    /// Every type, with text that needs escaping and a nested struct and array.
    fn every_type() -> Value {
        map(&[
            ("string", s("<&>\"' ünïcødé ☃ 𝄞 ]]> \t\n\r end")),
            ("empty", s("")),
            ("int", Value::Int(-9_007_199_254_740_993)),
            ("float", Value::Float(0.1)),
            ("big float", Value::Float(1e300)),
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("when", Value::DateTime("20240229T23:59:59Z".into())),
            (
                "nested",
                Value::Array(vec![
                    Value::Array(vec![]),
                    map(&[]),
                    map(&[("k&<", Value::Array(vec![Value::Int(1), s("x")]))]),
                ]),
            ),
        ])
    }

    /// What a value reads back as over XML-RPC: ints go as strings, as in XAPI.
    fn as_sent(value: &Value) -> Value {
        match value {
            Value::Int(i) => Value::String(i.to_string()),
            Value::Array(items) => Value::Array(items.iter().map(as_sent).collect()),
            Value::Struct(m) => {
                Value::Struct(m.iter().map(|(k, v)| (k.clone(), as_sent(v))).collect())
            }
            other => other.clone(),
        }
    }

    #[test]
    fn every_type_round_trips_through_a_call() {
        let params = vec![s("OpaqueRef:abc"), every_type(), Value::Float(-0.0)];
        let text = encode_call("VM.set_other_config", &params);
        let call = parse_call(text.as_bytes()).unwrap();
        assert_eq!(call.method, "VM.set_other_config");
        assert_eq!(call.params, params.iter().map(as_sent).collect::<Vec<_>>());
        assert!(matches!(call.params[2], Value::Float(f) if f == 0.0 && f.is_sign_negative()));
    }

    #[test]
    fn every_type_round_trips_through_a_response() {
        let value = every_type();
        let text = encode_response(&Ok(value.clone()));
        assert_eq!(
            parse_response(text.as_bytes()).unwrap(),
            Ok(as_sent(&value))
        );
        let failure = Failure::new(
            "VM_BAD_POWER_STATE",
            vec!["OpaqueRef:1".into(), "<halted>".into()],
        );
        let text = encode_response(&Err(failure.clone()));
        assert_eq!(parse_response(text.as_bytes()).unwrap(), Err(failure));
    }

    #[test]
    fn non_finite_doubles_round_trip() {
        for f in [
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
        ] {
            let text = encode_response(&Ok(Value::Float(f)));
            assert_eq!(
                parse_response(text.as_bytes()).unwrap(),
                Ok(Value::Float(f))
            );
        }
        let text = encode_response(&Ok(Value::Float(f64::NAN)));
        assert!(
            matches!(parse_response(text.as_bytes()).unwrap(), Ok(Value::Float(f)) if f.is_nan())
        );
    }

    #[test]
    fn responses_are_written_as_xapi_writes_them() {
        assert_eq!(
            encode_response(&Ok(Value::Int(7))),
            "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>\
             <member><name>Status</name><value>Success</value></member>\
             <member><name>Value</name><value>7</value></member>\
             </struct></value></param></params></methodResponse>"
        );
        assert_eq!(
            encode_response(&Err(Failure::new(
                "SESSION_INVALID",
                vec!["OpaqueRef:x".into()]
            ))),
            "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>\
             <member><name>Status</name><value>Failure</value></member>\
             <member><name>ErrorDescription</name><value><array><data>\
             <value>SESSION_INVALID</value><value>OpaqueRef:x</value>\
             </data></array></value></member>\
             </struct></value></param></params></methodResponse>"
        );
    }

    #[test]
    fn reads_every_scalar_form() {
        assert_eq!(parse_value("<value>bare</value>").unwrap(), s("bare"));
        assert_eq!(
            parse_value("<value> spaced </value>").unwrap(),
            s(" spaced ")
        );
        assert_eq!(parse_value("<value/>").unwrap(), s(""));
        assert_eq!(parse_value("<value></value>").unwrap(), s(""));
        assert_eq!(parse_value("<value><string/></value>").unwrap(), s(""));
        assert_eq!(
            parse_value("<value><string> x </string></value>").unwrap(),
            s(" x ")
        );
        assert_eq!(
            parse_value("<value>\n  <int> 42 </int>\n</value>").unwrap(),
            Value::Int(42)
        );
        assert_eq!(
            parse_value("<value><i4>-5</i4></value>").unwrap(),
            Value::Int(-5)
        );
        assert_eq!(
            parse_value("<value><i8>9223372036854775807</i8></value>").unwrap(),
            Value::Int(i64::MAX)
        );
        assert_eq!(
            parse_value("<value><int>-9223372036854775808</int></value>").unwrap(),
            Value::Int(i64::MIN)
        );
        for (text, b) in [("1", true), ("0", false), ("true", true), ("false", false)] {
            let v = parse_value(&format!("<value><boolean>{text}</boolean></value>")).unwrap();
            assert_eq!(v, Value::Bool(b));
        }
        assert_eq!(
            parse_value("<value><double>1.5</double></value>").unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(
            parse_value("<value><double>-1e-7</double></value>").unwrap(),
            Value::Float(-1e-7)
        );
        assert_eq!(
            parse_value("<value><dateTime.iso8601>20240101T00:00:00</dateTime.iso8601></value>")
                .unwrap(),
            Value::DateTime("20240101T00:00:00".into())
        );
        assert_eq!(parse_value("<value><nil/></value>").unwrap(), Value::void());
        assert_eq!(
            parse_value("<value><nil></nil></value>").unwrap(),
            Value::void()
        );
    }

    #[test]
    fn reads_arrays_and_structs_in_every_form() {
        for empty in [
            "<array/>",
            "<array></array>",
            "<array><data/></array>",
            "<array> <data> </data> </array>",
        ] {
            assert_eq!(
                parse_value(&format!("<value>{empty}</value>")).unwrap(),
                Value::Array(vec![])
            );
        }
        for empty in ["<struct/>", "<struct></struct>", "<struct>\n</struct>"] {
            assert_eq!(
                parse_value(&format!("<value>{empty}</value>")).unwrap(),
                map(&[])
            );
        }
        let v = parse_value(
            "<value><struct>\n <member>\n  <name>a b</name>\n  <value><array><data>\
             <value>x</value><value><int>1</int></value></data></array></value>\n </member>\
             <member><name></name><value/></member></struct></value>",
        )
        .unwrap();
        assert_eq!(
            v,
            map(&[
                ("a b", Value::Array(vec![s("x"), Value::Int(1)])),
                ("", s(""))
            ])
        );
    }

    #[test]
    fn resolves_references_and_cdata() {
        assert_eq!(
            parse_value("<value>&lt;&gt;&amp;&quot;&apos;&#65;&#x42;&#x1F600;</value>").unwrap(),
            s("<>&\"'AB😀")
        );
        assert_eq!(
            parse_value("<value><![CDATA[<raw & ]]></value>").unwrap(),
            s("<raw & ")
        );
        assert_eq!(
            parse_value("<value>a<!-- gone -->b</value>").unwrap(),
            s("ab")
        );
        assert_eq!(
            parse_value("<value><name>x</name></value>")
                .unwrap_err()
                .kind(),
            ErrorKind::Structure
        );
        // XML reads a literal CR as LF; only a reference keeps it.
        assert_eq!(
            parse_value("<value>a\r\nb\rc&#13;</value>").unwrap(),
            s("a\nb\nc\r")
        );
        assert_eq!(kind("<value>&nbsp;</value>"), ErrorKind::Structure);
        assert_eq!(kind("<value>a & b</value>"), ErrorKind::Syntax);
        assert_eq!(kind("<value>&#0;</value>"), ErrorKind::Syntax);
        assert_eq!(kind("<value>&#xD800;</value>"), ErrorKind::Syntax);
    }

    #[test]
    fn escapes_what_xml_needs_and_drops_what_it_cannot_carry() {
        let mut out = String::new();
        escape_into(
            &mut out,
            "a<b>&\"c'\r\n\t\u{1}\u{1f}\u{7f}\u{fffe}\u{ffff}é",
        );
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c'&#13;\n\t\u{7f}é");
        let text = encode_response(&Ok(s("x\u{0}y\u{8}z")));
        assert_eq!(parse_response(text.as_bytes()).unwrap(), Ok(s("xyz")));
    }

    #[test]
    fn reads_calls_without_params_and_with_blanks_and_comments() {
        let call =
            parse_call(b"<methodCall><methodName>system.listMethods</methodName></methodCall>")
                .unwrap();
        assert_eq!(call, Call::new("system.listMethods", vec![]));
        let call =
            parse_call(b"<methodCall><methodName>m</methodName><params/></methodCall>").unwrap();
        assert_eq!(call.params, vec![]);
        let text =
            "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n<methodCall>\n\
                    <methodName> session.login_with_password </methodName>\n<params>\n\
                    <param>\n<value><string>root</string></value>\n</param>\n\
                    <param><value>pw</value></param>\n</params>\n</methodCall>\n<?pi?>\n";
        let call = parse_call(text.as_bytes()).unwrap();
        assert_eq!(
            call,
            Call::new("session.login_with_password", vec![s("root"), s("pw")])
        );
    }

    #[test]
    fn reads_faults() {
        let text = encode_fault(-32700, "parse <error>");
        assert_eq!(
            parse_response(text.as_bytes()).unwrap(),
            Err(Failure::new(
                Failure::FAULT,
                vec!["-32700".into(), "parse <error>".into()]
            ))
        );
        // Python's xmlrpc.client writes the code as an <int> and the string as <string>.
        let python = "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n\
                      <member>\n<name>faultCode</name>\n<value><int>3</int></value>\n</member>\n\
                      <member>\n<name>faultString</name>\n<value><string>no</string></value>\n\
                      </member>\n</struct></value>\n</fault>\n</methodResponse>\n";
        assert_eq!(
            parse_response(python.as_bytes()).unwrap(),
            Err(Failure::new(Failure::FAULT, vec!["3".into(), "no".into()]))
        );
    }

    #[test]
    fn refuses_bad_scalars() {
        assert_eq!(
            kind("<value><int>9223372036854775808</int></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><int>99999999999999999999999999999</int></value>"),
            ErrorKind::Structure
        );
        assert_eq!(kind("<value><int>1.0</int></value>"), ErrorKind::Structure);
        assert_eq!(kind("<value><int/></value>"), ErrorKind::Structure);
        assert_eq!(
            kind("<value><boolean>2</boolean></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><double>one</double></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><double></double></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><base64>AAAA</base64></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><float>1</float></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><int><int>1</int></int></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value>text<int>1</int></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><int>1</int>text</value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><int>1</int><int>2</int></value>"),
            ErrorKind::Structure
        );
        assert_eq!(kind("<value><nil>x</nil></value>"), ErrorKind::Structure);
    }

    #[test]
    fn refuses_bad_structure() {
        let member = |name: &str| format!("<member><name>{name}</name><value>v</value></member>");
        let dup = format!(
            "<value><struct>{}{}</struct></value>",
            member("a"),
            member("a")
        );
        assert_eq!(kind(&dup), ErrorKind::Structure);
        assert_eq!(
            kind("<value><struct><member><value>v</value><name>a</name></member></struct></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><struct><member><name>a</name></member></struct></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><struct><value>v</value></struct></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><array><value>v</value></array></value>"),
            ErrorKind::Structure
        );
        assert_eq!(
            kind("<value><array><data><int>1</int></data></array></value>"),
            ErrorKind::Structure
        );
        for bad in [
            "",
            "   ",
            "<methodResponse/>",
            "<methodCall/>",
            "<methodCall><methodName></methodName></methodCall>",
            "<methodCall><methodName>m</methodName><param><value/></param></methodCall>",
            "<methodCall><methodName>m</methodName><params><value/></params></methodCall>",
            "<methodCall><methodName>m</methodName><params><param>x</param></params></methodCall>",
            "<methodCall><methodName>m</methodName></methodCall><methodCall/>",
            "<methodCall><methodName>m</methodName></methodCall>junk",
            "<methodCall><methodName>m<b/></methodName></methodCall>",
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><methodCall><methodName>m</methodName></methodCall>",
            "<!DOCTYPE x [<!ENTITY e \"boom\">]><methodCall><methodName>&e;</methodName></methodCall>",
        ] {
            let err = parse_call(bad.as_bytes()).unwrap_err();
            assert_ne!(err.kind(), ErrorKind::Limit, "{bad}: {err}");
        }
        for bad in [
            "<methodCall><methodName>m</methodName></methodCal>",
            "<methodCall><methodName>m</methodName>",
            "<methodCall><methodName>m</methodName></methodCall></methodCall>",
            "<methodCall",
        ] {
            let err = parse_call(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::Syntax | ErrorKind::Structure),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            parse_call(b"<methodCall><methodName>\xff</methodName></methodCall>")
                .unwrap_err()
                .kind(),
            ErrorKind::Syntax
        );
    }

    #[test]
    fn refuses_responses_that_are_not_xenapi_answers() {
        let response = |v: &str| {
            format!("<methodResponse><params><param>{v}</param></params></methodResponse>")
        };
        for bad in [
            response("<value>bare</value>"),
            response("<value><struct><member><name>Status</name><value>Success</value></member></struct></value>"),
            response("<value><struct><member><name>Status</name><value>Failure</value></member></struct></value>"),
            response("<value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data/></array></value></member></struct></value>"),
            response("<value><struct><member><name>Status</name><value>Maybe</value></member></struct></value>"),
            "<methodResponse><params></params></methodResponse>".to_owned(),
            "<methodResponse><fault><value>x</value></fault></methodResponse>".to_owned(),
            "<methodResponse></methodResponse>".to_owned(),
        ] {
            assert_eq!(parse_response(bad.as_bytes()).unwrap_err().kind(), ErrorKind::Structure, "{bad}");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let text = encode_call("VM.start", &[s("OpaqueRef:x"), every_type()]);
        for end in 0..text.len() {
            if text.is_char_boundary(end) {
                assert!(
                    parse_call(&text.as_bytes()[..end]).is_err(),
                    "prefix {end} parsed"
                );
            } else {
                assert_eq!(
                    parse_call(&text.as_bytes()[..end]).unwrap_err().kind(),
                    ErrorKind::Syntax
                );
            }
        }
        let text = encode_response(&Ok(every_type()));
        for end in 0..text.len() {
            assert!(
                parse_response(&text.as_bytes()[..end]).is_err(),
                "prefix {end} parsed"
            );
        }
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(s("core"), |v, _| Value::Array(vec![v]))
    }

    #[test]
    fn bounds_nesting() {
        let text = encode_call("m", &[nested(MAX_DEPTH)]);
        assert_eq!(
            parse_call(text.as_bytes()).unwrap().params,
            vec![nested(MAX_DEPTH)]
        );
        let text = encode_call("m", &[nested(MAX_DEPTH + 1)]);
        assert!(matches!(
            parse_call(text.as_bytes()),
            Err(Error::TooDeep { .. })
        ));
        // The result of a response gets the same depth, under its Status struct.
        let text = encode_response(&Ok(nested(MAX_DEPTH)));
        assert_eq!(
            parse_response(text.as_bytes()).unwrap(),
            Ok(nested(MAX_DEPTH))
        );
        let text = encode_response(&Ok(nested(MAX_DEPTH + 1)));
        assert_eq!(
            parse_response(text.as_bytes()).unwrap_err().kind(),
            ErrorKind::Limit
        );
        // Far deeper than any stack would take, refused at the limit.
        let deep = "<value><struct><member><name>a</name>".repeat(100_000);
        let text = call_of(&format!("<param>{deep}</param>"));
        let text = &text[..text.len().min(MAX_CALL_LEN)];
        assert!(matches!(
            parse_call(text.as_bytes()),
            Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn bounds_size() {
        let big = call_of(&format!(
            "<param><value>{}</value></param>",
            "x".repeat(MAX_CALL_LEN)
        ));
        assert!(matches!(
            parse_call(big.as_bytes()),
            Err(Error::TooLong { .. })
        ));
        let fits = call_of(&format!(
            "<param><value>{}</value></param>",
            "x".repeat(MAX_CALL_LEN - 200)
        ));
        assert!(parse_call(fits.as_bytes()).is_ok());
        // Responses may be larger.
        let text = encode_response(&Ok(s(&"y".repeat(MAX_CALL_LEN * 2))));
        assert!(parse_response(text.as_bytes()).is_ok());
    }

    #[test]
    fn many_references_and_members_stay_linear() {
        // 300 KB of references and 5k members parse well within a test's time.
        let refs = "&amp;".repeat(MAX_CALL_LEN / 6);
        let v = parse_value(&format!("<value>{refs}</value>")).unwrap();
        assert_eq!(v.as_str().unwrap().len(), MAX_CALL_LEN / 6);
        let members: String = (0..5_000)
            .map(|i| format!("<member><name>{i}</name><value/></member>"))
            .collect();
        let v = parse_value(&format!("<value><struct>{members}</struct></value>")).unwrap();
        assert!(matches!(v, Value::Struct(m) if m.len() == 5_000));
    }
}
