//! The API reference in Markdown, written from the model: `docs/xenapi.md` is this text,
//! and a test fails when it is not (run it with `FV_REGENERATE_DOCS=1` to rewrite the file).

use std::fmt::Write;

use super::{Class, Lifecycle, Qual, Ty, CLASSES};
use crate::dispatch::writer_role;
use crate::error::codes;
use crate::generic;

/// XenAPI's spelling of a type.
pub fn type_name(ty: &Ty) -> String {
    match ty {
        Ty::String => "string".into(),
        Ty::Int => "int".into(),
        Ty::Float => "float".into(),
        Ty::Bool => "bool".into(),
        Ty::DateTime => "datetime".into(),
        Ty::Enum(e) => format!("enum {}", e.name),
        Ty::Ref(c) => format!("{c} ref"),
        Ty::Set(t) => format!("{} set", type_name(t)),
        Ty::Map(k, v) => format!("({} -> {}) map", type_name(k), type_name(v)),
        Ty::Record(c) => format!("{c} record"),
    }
}

fn qual(q: Qual) -> &'static str {
    match q {
        Qual::RW => "RW",
        Qual::StaticRO => "RO (set at create)",
        Qual::DynamicRO => "RO (server)",
    }
}

/// One line of text: Markdown table cells must not break or hold `|`.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn class_section(out: &mut String, c: &'static Class) {
    let _ = writeln!(out, "## {}\n\n{}\n", c.name, cell(c.doc));
    let _ = writeln!(out, "| Field | Type | Access | Setter role | Description |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for f in c.fields {
        let setter = if f.qual == Qual::RW {
            writer_role(c, f).name()
        } else {
            "-"
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            f.name,
            cell(&type_name(&f.ty)),
            qual(f.qual),
            setter,
            cell(f.doc)
        );
    }
    let mut messages: Vec<String> = c
        .messages
        .iter()
        .map(|m| {
            let params: Vec<String> = m
                .params
                .iter()
                .map(|p| format!("{} {}", type_name(&p.ty), p.name))
                .collect();
            let result = m.result.as_ref().map_or("void".into(), type_name);
            let errors: Vec<&str> = m.errors.iter().map(|e| e.name).collect();
            format!(
                "| `{}({})` | {} | {}{} | {} | {} |",
                m.name,
                cell(&params.join(", ")),
                cell(&result),
                m.min_role.name(),
                if m.is_async { ", async" } else { "" },
                errors.join(", "),
                cell(m.doc)
            )
        })
        .collect();
    if !messages.is_empty() {
        let _ = writeln!(out, "\n| Message | Result | Role | Errors | Description |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        messages.sort();
        for m in messages {
            let _ = writeln!(out, "{m}");
        }
    }
    let generic: Vec<String> = generic::calls(c)
        .into_iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !generic.is_empty() {
        let lifecycle = match c.lifecycle {
            Lifecycle::Generic => "",
            Lifecycle::Internal => " (records are made by the server)",
        };
        let _ = writeln!(out, "\nGeneric calls{lifecycle}: {}.", generic.join(", "));
    }
    out.push('\n');
}

/// The whole reference.
pub fn markdown() -> String {
    let mut out = String::from(
        "# The XenAPI as Ferrovisor serves it\n\n\
         Written from the object model in `crates/xapi/src/model` (do not edit: the test \
         `model::reference::tests::docs_match_the_model` fails when this file and the model \
         differ; `FV_REGENERATE_DOCS=1 cargo test -p fv-xapi docs_match` rewrites it).\n\n\
         Every call takes a session reference first (except `session.login_with_password`). \
         Roles, weakest first: read-only, vm-operator, vm-admin, vm-power-admin, \
         pool-operator, pool-admin; each may do what the roles before it may. Calls marked \
         async also exist as `Async.<class>.<message>`, returning a task.\n\n",
    );
    for c in CLASSES {
        class_section(&mut out, c);
    }
    out.push_str("## Errors\n\n| Code | Parameters |\n|---|---|\n");
    for e in codes::ALL {
        let _ = writeln!(out, "| `{}` | {} |", e.name, e.params.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_match_the_model() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/xenapi.md");
        let want = markdown();
        if std::env::var_os("FV_REGENERATE_DOCS").is_some() {
            std::fs::write(&path, &want).expect("write docs/xenapi.md");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/xenapi.md does not match the model: run \
             FV_REGENERATE_DOCS=1 cargo test -p fv-xapi docs_match"
        );
    }

    #[test]
    fn types_read_as_xenapi_writes_them() {
        assert_eq!(type_name(&Ty::Set(&Ty::Ref("VBD"))), "VBD ref set");
        assert_eq!(
            type_name(&Ty::Map(&Ty::String, &Ty::String)),
            "(string -> string) map"
        );
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
