//! Records as xe prints them, or as JSON.

use std::collections::BTreeMap;
use std::io::Write;

use fv_rpc::Value;
use fv_xapi::model::{Class, Field};

use crate::commands::{cli_name, field_tag};
use crate::error::Error;
use crate::values::{self, Namer};

fn write_err(e: std::io::Error) -> Error {
    Error::Io {
        what: "writing the output".into(),
        source: e,
    }
}

/// Writes text, ignoring a closed pipe (`fv vm-list | head`) as xe does.
pub fn emit(out: &mut dyn Write, text: &str) -> Result<(), Error> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(write_err),
    }
}

/// One record as xe's block of `name ( RW): value` lines: the first name left-aligned,
/// the others right-aligned on the colon.
pub fn record_block(
    class: &'static Class,
    rec: &BTreeMap<String, Value>,
    fields: &[&'static Field],
    names: &mut dyn Namer,
) -> String {
    let labels: Vec<String> = fields
        .iter()
        .map(|f| format!("{} ({})", cli_name(f.name), field_tag(class, f)))
        .collect();
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (i, (f, label)) in fields.iter().zip(&labels).enumerate() {
        let value = rec
            .get(f.name)
            .map(|v| values::format(&f.ty, v, names))
            .unwrap_or_default();
        if i == 0 {
            out.push_str(&format!("{label:<width$}: {value}\n"));
        } else {
            out.push_str(&format!("{label:>width$}: {value}\n"));
        }
    }
    out
}

/// Many records, each block followed by a blank line.
pub fn record_blocks(
    class: &'static Class,
    recs: &[&BTreeMap<String, Value>],
    fields: &[&'static Field],
    names: &mut dyn Namer,
) -> String {
    recs.iter()
        .map(|r| format!("{}\n", record_block(class, r, fields, names)))
        .collect()
}

/// One record as a JSON object of the chosen fields, by their XenAPI names.
pub fn record_json(
    rec: &BTreeMap<String, Value>,
    fields: &[&'static Field],
    names: &mut dyn Namer,
) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|f| {
                let v = rec
                    .get(f.name)
                    .map_or(serde_json::Value::Null, |v| values::json(&f.ty, v, names));
                (f.name.to_owned(), v)
            })
            .collect(),
    )
}

/// Pretty JSON and a newline.
pub fn json_text(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::tests::Table;
    use fv_xapi::model;

    fn vm_rec() -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("uuid".to_owned(), Value::from("1111")),
            ("name_label".to_owned(), Value::from("web")),
            ("power_state".to_owned(), Value::from("Running")),
            ("resident_on".to_owned(), Value::from("OpaqueRef:h")),
            (
                "other_config".to_owned(),
                Value::Struct(BTreeMap::from([("k".to_owned(), Value::from("v"))])),
            ),
        ])
    }

    #[test]
    fn blocks_align_as_xe() {
        let vm = model::class("VM").expect("VM");
        let fields: Vec<&Field> = [
            "uuid",
            "name_label",
            "power_state",
            "resident_on",
            "other_config",
        ]
        .iter()
        .map(|n| vm.field(n).expect(n))
        .collect();
        let t = &mut Table(vec![("host", "host-uuid", "OpaqueRef:h")]);
        let text = record_block(vm, &vm_rec(), &fields, t);
        assert_eq!(
            text,
            "uuid ( RO)        : 1111\n\
             \x20 name-label ( RW): web\n\
             \x20power-state ( RO): Running\n\
             \x20resident-on ( RO): host-uuid\n\
             other-config (MRW): k: v\n"
        );
        let j = record_json(&vm_rec(), &fields, t);
        assert_eq!(j["resident_on"], "host-uuid");
        assert_eq!(j["other_config"]["k"], "v");
        assert_eq!(j["name_label"], "web");
        // A field the record lacks is empty, not a panic.
        let text = record_block(vm, &BTreeMap::new(), &fields[..1], t);
        assert_eq!(text, "uuid ( RO): \n");
    }

    #[test]
    fn a_closed_pipe_is_not_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(emit(&mut Closed, "x").is_ok());
    }
}
