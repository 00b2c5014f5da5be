//! Running a command: its parameters checked against the model, then the calls.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fv_rpc::Value;
use fv_xapi::model::{self, Class, Field, Ty};

use crate::args::{self, Invocation, OutOpts};
use crate::client::{self, Endpoint, Protocol, Session, Transport};
use crate::commands::{self, class_cli, cli_name, names, CallSpec, Cmd, Setter, Special};
use crate::error::Error;
use crate::output::{self, emit};
use crate::values::{self, Namer, Resolve};
use crate::{complete, help};

/// The `key=value` parameters of a command, each to be used exactly once.
pub struct Params {
    items: Vec<(String, String)>,
    used: Vec<bool>,
}

/// `key` on the command line equals `want` (a CLI-form name), without case and with
/// `_` for `-`.
fn key_is(key: &str, want: &str) -> bool {
    key.len() == want.len()
        && key
            .bytes()
            .zip(want.bytes())
            .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (a == b'_' && b == b'-'))
}

impl Params {
    pub fn new(items: Vec<(String, String)>) -> Params {
        let used = vec![false; items.len()];
        Params { items, used }
    }

    /// The value of the first unused parameter named by any of `keys` (CLI-form names).
    pub fn take(&mut self, keys: &[String]) -> Option<String> {
        let i = (0..self.items.len())
            .find(|i| !self.used[*i] && keys.iter().any(|k| key_is(&self.items[*i].0, k)))?;
        self.used[i] = true;
        Some(self.items[i].1.clone())
    }

    pub fn take1(&mut self, key: &str) -> Option<String> {
        self.take(&[key.to_owned()])
    }

    pub fn require(&mut self, key: &str, cmd: &str) -> Result<String, Error> {
        self.take1(key)
            .ok_or_else(|| Error::usage(format!("{cmd}: missing parameter {key}=")))
    }

    /// The unused parameters, marked used.
    pub fn rest(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, item) in self.items.iter().enumerate() {
            if !self.used[i] {
                out.push(item.clone());
                self.used[i] = true;
            }
        }
        out
    }

    /// Fails on any parameter left unused.
    pub fn finish(&self, cmd: &str) -> Result<(), Error> {
        let left: Vec<&str> = self
            .items
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((k, _), _)| k.as_str())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(Error::usage(format!(
                "{cmd}: unknown parameter{} {} (see fv help {cmd})",
                if left.len() > 1 { "s" } else { "" },
                left.join(", ")
            )))
        }
    }
}

/// The field of `class` a command-line name names.
pub fn field_named(class: &'static Class, key: &str) -> Option<&'static Field> {
    class
        .fields
        .iter()
        .find(|f| f.name == key)
        .or_else(|| class.fields.iter().find(|f| names(key, f.name)))
}

fn no_field(class: &'static Class, key: &str) -> Error {
    Error::usage(format!(
        "{} has no field {key} (see fv {}-param-list)",
        class.name,
        class_cli(class)
    ))
}

/// Fails on `--flags` other than `allowed`.
fn check_flags(inv: &Invocation, allowed: &[String], cmd: &str) -> Result<(), Error> {
    for f in &inv.flags {
        if !allowed.iter().any(|a| key_is(f, a)) {
            return Err(Error::usage(format!("{cmd}: unknown flag --{f}")));
        }
    }
    Ok(())
}

/// Runs a whole command line; the entry point of `main`.
pub fn main_with(argv: Vec<String>, out: &mut dyn Write) -> Result<(), Error> {
    if argv.first().map(String::as_str) == Some("__complete") {
        let line = argv.get(1).cloned().unwrap_or_default();
        let text: String = complete::candidates(&line)
            .into_iter()
            .map(|c| c + "\n")
            .collect();
        return emit(out, &text);
    }
    let inv = args::parse(argv)?;
    if inv.version {
        return emit(out, concat!("fv ", env!("CARGO_PKG_VERSION"), "\n"));
    }
    let Some(name) = inv.command.clone() else {
        return emit(out, &help::overview());
    };
    let Some(command) = commands::find(&name) else {
        let near = commands::similar(&name);
        let hint = if near.is_empty() {
            String::new()
        } else {
            format!(" Did you mean: {}?", near.join(", "))
        };
        return Err(Error::usage(format!(
            "unknown command {name}.{hint} (fv help lists them all)"
        )));
    };
    if inv.help {
        return emit(out, &help::command(command));
    }
    match &command.cmd {
        Cmd::Special(Special::Help) => {
            return match inv.words.first() {
                None => emit(out, &help::overview()),
                Some(w) => match commands::find(w) {
                    Some(c) => emit(out, &help::command(c)),
                    None => Err(Error::usage(format!("help: unknown command {w}"))),
                },
            }
        }
        Cmd::Special(Special::Completion) => {
            let shell = inv.words.first().map(String::as_str).unwrap_or("");
            return emit(out, &complete::script(shell)?);
        }
        _ => {}
    }
    if let Some(w) = inv.words.first() {
        return Err(Error::usage(format!(
            "{name}: unexpected word {w}; parameters are key=value"
        )));
    }
    let mut conn = inv.conn.clone();
    args::apply_env(&mut conn, |k| std::env::var(k).ok())?;
    let endpoint = Endpoint::from_opts(&conn)?;
    let user = conn.user.clone().unwrap_or_else(|| "root".to_owned());
    let password = client::password(&conn, &endpoint, &user)?;
    let protocol = if conn.jsonrpc {
        Protocol::JsonRpc
    } else {
        Protocol::XmlRpc
    };
    let mut session = Session::login(Transport::new(endpoint, protocol), &user, &password)?;
    let result = execute(&mut session, &command.name, &command.cmd, &inv, out);
    session.logout();
    result
}

/// Runs one command in a session.
pub fn execute(
    s: &mut Session,
    name: &str,
    cmd: &Cmd,
    inv: &Invocation,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut p = Params::new(inv.params.clone());
    let o = inv.out;
    let flags_none: &[String] = &[];
    match cmd {
        Cmd::List(c) => {
            check_flags(inv, flags_none, name)?;
            list(s, c, &mut p, o, out)
        }
        Cmd::ParamList(c) => {
            check_flags(inv, flags_none, name)?;
            let (r, _) = object(s, c, &mut p, name)?;
            p.finish(name)?;
            let rec = s.call_struct(&format!("{}.get_record", c.name), vec![Value::from(r)])?;
            let fields: Vec<&Field> = c.fields.iter().collect();
            let text = if o.json {
                output::json_text(&output::record_json(&rec, &fields, s))
            } else {
                output::record_block(c, &rec, &fields, s)
            };
            emit(out, &text)
        }
        Cmd::ParamGet(c) => {
            check_flags(inv, flags_none, name)?;
            param_get(s, c, &mut p, o, name, out)
        }
        Cmd::ParamSet(c) => {
            check_flags(inv, flags_none, name)?;
            param_set(s, c, &mut p, name)
        }
        Cmd::ParamAdd(c) | Cmd::ParamRemove(c) | Cmd::ParamClear(c) => {
            check_flags(inv, flags_none, name)?;
            let op = match cmd {
                Cmd::ParamAdd(_) => SetOp::Add,
                Cmd::ParamRemove(_) => SetOp::Remove,
                _ => SetOp::Clear,
            };
            param_collection(s, c, &mut p, op, name)
        }
        Cmd::Call(spec) => {
            let flags = bool_flags(spec);
            check_flags(inv, &flags, name)?;
            let args = call_args(s, spec, &mut p, inv, name)?;
            p.finish(name)?;
            let v = invoke(s, spec, args)?;
            print_result(s, spec.result.as_ref(), &v, o, out)
        }
        Cmd::CleanOrHard { clean, hard } => {
            check_flags(inv, &["force".to_owned()], name)?;
            let spec = if inv.flag("force") { hard } else { clean };
            let mut inv2 = inv.clone();
            inv2.flags.retain(|f| f != "force");
            let args = call_args(s, spec, &mut p, &inv2, name)?;
            p.finish(name)?;
            let v = invoke(s, spec, args)?;
            print_result(s, spec.result.as_ref(), &v, o, out)
        }
        Cmd::Special(Special::VmInstall) => {
            check_flags(inv, flags_none, name)?;
            vm_install(s, &mut p, o, name, out)
        }
        Cmd::Special(Special::EventWait) => {
            check_flags(inv, flags_none, name)?;
            event_wait(s, &mut p, name)
        }
        Cmd::Special(Special::Help | Special::Completion) => Ok(()),
    }
}

/// The object a command is about: `uuid=`, or `<class>=` by uuid or name-label.
fn object(
    s: &mut Session,
    class: &'static Class,
    p: &mut Params,
    cmd: &str,
) -> Result<(String, String), Error> {
    if let Some(u) = p.take1("uuid") {
        let r = s.by_uuid(class.name, &u)?;
        return Ok((r, u));
    }
    if let Some(n) = p.take1(&class_cli(class)) {
        let r = s.resolve(class.name, &n)?;
        let u = s.uuid_of(class.name, &r).unwrap_or_default();
        return Ok((r, u));
    }
    Err(Error::usage(format!(
        "{cmd}: missing parameter uuid= (or {}=NAME)",
        class_cli(class)
    )))
}

fn list(
    s: &mut Session,
    class: &'static Class,
    p: &mut Params,
    o: OutOpts,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let columns: Vec<&'static Field> = match p.take1("params") {
        Some(v) if v.trim() == "all" => class.fields.iter().collect(),
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| field_named(class, n).ok_or_else(|| no_field(class, n)))
            .collect::<Result<_, _>>()?,
        None => commands::default_columns(class)
            .into_iter()
            .filter_map(|n| class.field(n))
            .collect(),
    };
    let mut filters = Vec::new();
    for (k, v) in p.rest() {
        let f = field_named(class, &k).ok_or_else(|| no_field(class, &k))?;
        filters.push((f, v));
    }
    let recs = s.all_records(class.name)?;
    // Learn the uuids of the refs shown, in bulk where there are many.
    for f in columns.iter().chain(filters.iter().map(|(f, _)| f)) {
        let target = match f.ty {
            Ty::Ref(c) => c,
            Ty::Set(Ty::Ref(c)) => *c,
            _ => continue,
        };
        let refs: Vec<String> = recs
            .values()
            .filter_map(|r| r.get(f.name))
            .flat_map(|v| match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                _ => vec![],
            })
            .collect();
        s.prefetch_uuids(target, &refs);
    }
    let mut chosen: Vec<&BTreeMap<String, Value>> = Vec::new();
    for rec in recs.values() {
        let mut ok = true;
        for (f, want) in &filters {
            let hit = rec
                .get(f.name)
                .is_some_and(|v| values::matches(&f.ty, v, want, s));
            if !hit {
                ok = false;
                break;
            }
        }
        if ok {
            chosen.push(rec);
        }
    }
    let key = |r: &BTreeMap<String, Value>, f: &str| {
        r.get(f).and_then(Value::as_str).unwrap_or("").to_owned()
    };
    chosen.sort_by_key(|r| (key(r, "name_label"), key(r, "uuid")));
    let text = if o.json {
        let items = chosen
            .iter()
            .map(|r| output::record_json(r, &columns, s))
            .collect();
        output::json_text(&serde_json::Value::Array(items))
    } else if o.minimal {
        let uuids: Vec<String> = chosen.iter().map(|r| key(r, "uuid")).collect();
        format!("{}\n", uuids.join(","))
    } else {
        output::record_blocks(class, &chosen, &columns, s)
    };
    emit(out, &text)
}

fn param_get(
    s: &mut Session,
    class: &'static Class,
    p: &mut Params,
    o: OutOpts,
    cmd: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (r, _) = object(s, class, p, cmd)?;
    let pname = p.require("param-name", cmd)?;
    let f = field_named(class, &pname).ok_or_else(|| no_field(class, &pname))?;
    let key = p.take1("param-key");
    p.finish(cmd)?;
    let v = s.call(
        &format!("{}.get_{}", class.name, f.name),
        vec![Value::from(r)],
    )?;
    let (ty, v) = match (&key, f.ty, &v) {
        (None, ..) => (f.ty, v),
        (Some(k), Ty::Map(_, vt), Value::Struct(m)) => match m.get(k) {
            Some(x) => (*vt, x.clone()),
            None => {
                return Err(Error::NotFound(format!(
                    "{} has no key {k}",
                    cli_name(f.name)
                )))
            }
        },
        (Some(_), ..) => {
            return Err(Error::usage(format!(
                "{cmd}: param-key= is for maps; {} is not one",
                cli_name(f.name)
            )))
        }
    };
    let text = if o.json {
        output::json_text(&values::json(&ty, &v, s))
    } else if o.minimal {
        match (&ty, &v) {
            (Ty::Set(inner), Value::Array(items)) => format!(
                "{}\n",
                items
                    .iter()
                    .map(|i| values::format(inner, i, s))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _ => format!("{}\n", values::format(&ty, &v, s)),
        }
    } else {
        format!("{}\n", values::format(&ty, &v, s))
    };
    emit(out, &text)
}

/// One change `param-set` makes, checked before any is made.
enum Change {
    /// Through `set_<field>`: the generic setter or the class's own message of that name.
    Set(&'static Field, Value),
    MapEntry(&'static Field, String, Value),
}

fn param_set(
    s: &mut Session,
    class: &'static Class,
    p: &mut Params,
    cmd: &str,
) -> Result<(), Error> {
    let (r, _) = object(s, class, p, cmd)?;
    let mut changes = Vec::new();
    for (k, text) in p.rest() {
        if let Some((fname, key)) = k.split_once(':') {
            let f = field_named(class, fname).ok_or_else(|| no_field(class, fname))?;
            let Ty::Map(kt, vt) = f.ty else {
                return Err(Error::usage(format!("{}: not a map", cli_name(f.name))));
            };
            if fv_xapi::generic::resolve(class, &format!("add_to_{}", f.name)).is_none() {
                return Err(Error::usage(format!("{} is read-only", cli_name(f.name))));
            }
            values::parse_map_part(kt, key, &k, s)?;
            let v = values::parse_map_part(vt, &text, &k, s)?;
            changes.push(Change::MapEntry(f, key.to_owned(), v));
        } else {
            let f = field_named(class, &k).ok_or_else(|| no_field(class, &k))?;
            let setter = commands::setter(class, f.name)
                .ok_or_else(|| Error::usage(format!("{} is read-only", cli_name(f.name))))?;
            let ty = match setter {
                Setter::Custom(m) => m.params[1].ty,
                Setter::Generic => f.ty,
            };
            let v = values::parse(&ty, &text, &k, s)?;
            changes.push(Change::Set(f, v));
        }
    }
    if changes.is_empty() {
        return Err(Error::usage(format!(
            "{cmd}: nothing to set; give field=value or map:key=value"
        )));
    }
    for c in changes {
        match c {
            Change::Set(f, v) => {
                s.call(
                    &format!("{}.set_{}", class.name, f.name),
                    vec![Value::from(r.clone()), v],
                )?;
            }
            Change::MapEntry(f, key, v) => {
                let me = Value::from(r.clone());
                s.call(
                    &format!("{}.remove_from_{}", class.name, f.name),
                    vec![me.clone(), Value::from(key.clone())],
                )?;
                s.call(
                    &format!("{}.add_to_{}", class.name, f.name),
                    vec![me, Value::from(key), v],
                )?;
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Add,
    Remove,
    Clear,
}

/// `param-add`, `param-remove`, `param-clear` on a set or map field, as xe: sets take
/// `param-key=a,b`; maps take `key=value` pairs to add, or `param-key=k` to remove.
fn param_collection(
    s: &mut Session,
    class: &'static Class,
    p: &mut Params,
    op: SetOp,
    cmd: &str,
) -> Result<(), Error> {
    let (r, _) = object(s, class, p, cmd)?;
    let pname = p.require("param-name", cmd)?;
    let f = field_named(class, &pname).ok_or_else(|| no_field(class, &pname))?;
    let me = Value::from(r);
    let api = |verb: &str| format!("{}.{verb}{}", class.name, f.name);
    let writable = |call: &str| fv_xapi::generic::resolve(class, call).is_some();
    if op == SetOp::Clear {
        p.finish(cmd)?;
        let empty = match f.ty {
            Ty::Set(_) => Value::Array(vec![]),
            Ty::Map(..) => Value::Struct(BTreeMap::new()),
            Ty::String => Value::from(""),
            _ => {
                return Err(Error::usage(format!(
                    "{cmd}: {} cannot be cleared",
                    cli_name(f.name)
                )))
            }
        };
        if commands::setter(class, f.name).is_none() {
            return Err(Error::usage(format!("{} is read-only", cli_name(f.name))));
        }
        s.call(&api("set_"), vec![me, empty])?;
        return Ok(());
    }
    match f.ty {
        Ty::Set(inner) => {
            let verb = if op == SetOp::Add { "add_" } else { "remove_" };
            if !writable(&format!("{verb}{}", f.name)) {
                return Err(Error::usage(format!("{} is read-only", cli_name(f.name))));
            }
            let keys = p.require("param-key", cmd)?;
            p.finish(cmd)?;
            let mut items = Vec::new();
            for k in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                items.push(values::parse(inner, k, "param-key", s)?);
            }
            for v in items {
                s.call(&api(verb), vec![me.clone(), v])?;
            }
        }
        Ty::Map(kt, vt) => {
            let verb = if op == SetOp::Add {
                "add_to_"
            } else {
                "remove_from_"
            };
            if !writable(&format!("{verb}{}", f.name)) {
                return Err(Error::usage(format!("{} is read-only", cli_name(f.name))));
            }
            if op == SetOp::Add {
                let mut pairs = Vec::new();
                for (k, v) in p.rest() {
                    let key = values::parse_map_part(kt, &k, &k, s)?;
                    pairs.push((key, values::parse_map_part(vt, &v, &k, s)?));
                }
                if pairs.is_empty() {
                    return Err(Error::usage(format!(
                        "{cmd}: give the entries as key=value"
                    )));
                }
                for (k, v) in pairs {
                    s.call(&api(verb), vec![me.clone(), k, v])?;
                }
            } else {
                let keys = p.require("param-key", cmd)?;
                p.finish(cmd)?;
                for k in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                    s.call(&api(verb), vec![me.clone(), Value::from(k)])?;
                }
            }
        }
        _ => {
            return Err(Error::usage(format!(
                "{cmd}: {} is neither a set nor a map",
                cli_name(f.name)
            )))
        }
    }
    Ok(())
}

/// The `--flags` a call takes: its boolean parameters by every key.
fn bool_flags(spec: &CallSpec) -> Vec<String> {
    spec.params
        .iter()
        .filter(|p| p.ty == Ty::Bool)
        .flat_map(|p| commands::param_keys(spec, p))
        .collect()
}

/// The call's arguments from the command line, in the model's order.
pub fn call_args<R: Resolve>(
    s: &mut R,
    spec: &CallSpec,
    p: &mut Params,
    inv: &Invocation,
    cmd: &str,
) -> Result<Vec<Value>, Error> {
    let mut args = Vec::with_capacity(spec.params.len());
    for param in &spec.params {
        let keys = commands::param_keys(spec, param);
        let v = match param.ty {
            Ty::Record(class) => {
                let c = model::class(class)
                    .ok_or_else(|| Error::Unexpected(format!("no class {class} in the model")))?;
                record_arg(s, c, p, cmd)?
            }
            Ty::Map(kt, vt) => {
                let mut m = BTreeMap::new();
                for (k, text) in p.rest_with_prefix(&keys[0]) {
                    let key = values::parse_map_part(kt, &k, &keys[0], s)?;
                    let key = values::plain(&key);
                    m.insert(key, values::parse_map_part(vt, &text, &keys[0], s)?);
                }
                Value::Struct(m)
            }
            ty => match p.take(&keys) {
                Some(text) => values::parse(&ty, &text, &keys[0], s)?,
                None if ty == Ty::Bool && keys.iter().any(|k| inv.flag(k)) => Value::Bool(true),
                None if commands::optional(spec, param) => match ty {
                    Ty::Bool => Value::Bool(false),
                    Ty::Set(_) => Value::Array(vec![]),
                    _ => Value::from(values::NULL_REF),
                },
                None => {
                    return Err(Error::usage(format!(
                        "{cmd}: missing parameter {}= ({})",
                        keys[0], param.doc
                    )))
                }
            },
        };
        args.push(v);
    }
    Ok(args)
}

impl Params {
    /// Unused `prefix:key=value` parameters as `(key, value)`, marked used.
    pub fn rest_with_prefix(&mut self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, (k, v)) in self.items.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            if let Some((head, key)) = k.split_once(':') {
                if key_is(head, prefix) {
                    out.push((key.to_owned(), v.clone()));
                    self.used[i] = true;
                }
            }
        }
        out
    }
}

/// A record argument (`create`'s): the class's settable fields from `field=value`
/// (refs also as `field-uuid=`) and `map:key=value`; fields without a default must be
/// given.
fn record_arg<R: Resolve>(
    s: &mut R,
    class: &'static Class,
    p: &mut Params,
    cmd: &str,
) -> Result<Value, Error> {
    let mut rec = BTreeMap::new();
    let mut missing = Vec::new();
    for f in commands::record_fields(class) {
        let key = cli_name(f.name);
        let v = match f.ty {
            Ty::Map(kt, vt) => {
                let mut m = BTreeMap::new();
                for (k, text) in p.rest_with_prefix(&key) {
                    let kv = values::plain(&values::parse_map_part(kt, &k, &key, s)?);
                    m.insert(kv, values::parse_map_part(vt, &text, &key, s)?);
                }
                (!m.is_empty()).then_some(Value::Struct(m))
            }
            ty => {
                let mut keys = vec![key.clone()];
                if matches!(ty, Ty::Ref(_)) {
                    keys.push(format!("{key}-uuid"));
                }
                match p.take(&keys) {
                    Some(text) => Some(values::parse(&ty, &text, &key, s)?),
                    None => None,
                }
            }
        };
        match v {
            Some(v) => {
                rec.insert(f.name.to_owned(), v);
            }
            None if f.default.is_none() => missing.push(format!("{key}=")),
            None => {}
        }
    }
    if !missing.is_empty() {
        return Err(Error::usage(format!(
            "{cmd}: missing parameter{} {}",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(" ")
        )));
    }
    Ok(Value::Struct(rec))
}

/// Makes the call: through its `Async.` twin and a task when it has one.
fn invoke(s: &mut Session, spec: &CallSpec, args: Vec<Value>) -> Result<Value, Error> {
    if spec.is_async {
        run_task(s, &spec.method(), args)
    } else {
        s.call(&spec.method(), args)
    }
}

/// Prints what a call answered: refs as uuids, records as blocks, nothing for void.
fn print_result(
    s: &mut Session,
    ty: Option<&Ty>,
    v: &Value,
    o: OutOpts,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let Some(ty) = ty else {
        return Ok(());
    };
    let text = match (ty, v) {
        (_, v) if o.json => output::json_text(&values::json(ty, v, s)),
        (Ty::Record(c), Value::Struct(rec)) => match model::class(c) {
            Some(class) => {
                let fields: Vec<&Field> = class.fields.iter().collect();
                output::record_block(class, rec, &fields, s)
            }
            None => format!("{}\n", values::plain(v)),
        },
        (Ty::Set(inner), Value::Array(items)) => items
            .iter()
            .map(|i| format!("{}\n", values::format(inner, i, s)))
            .collect(),
        _ => format!("{}\n", values::format(ty, v, s)),
    };
    emit(out, &text)
}

/// The value in a task's `result` (XAPI's XML-RPC `<value>` text).
pub fn task_result(text: &str) -> Result<Value, Error> {
    if text.trim().is_empty() {
        return Ok(Value::void());
    }
    let doc = format!(
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name>{text}</member></struct></value></param></params></methodResponse>"
    );
    match fv_rpc::xmlrpc::parse_response(doc.as_bytes()) {
        Ok(Ok(v)) => Ok(v),
        _ => Err(Error::Unexpected(format!("task result {text:.80}"))),
    }
}

/// What a task's record says about its end.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    Pending(f64),
    Done(Result<Value, fv_rpc::Failure>),
    Cancelled,
}

pub fn task_state(rec: &BTreeMap<String, Value>) -> Result<TaskState, Error> {
    let status = rec.get("status").and_then(Value::as_str).unwrap_or("");
    let progress = match rec.get("progress") {
        Some(Value::Float(f)) => *f,
        Some(v) => v.as_int().map_or(0.0, |i| i as f64),
        None => 0.0,
    };
    Ok(match status {
        "pending" | "cancelling" => TaskState::Pending(progress),
        "success" => {
            let text = rec.get("result").and_then(Value::as_str).unwrap_or("");
            TaskState::Done(Ok(task_result(text)?))
        }
        "failure" => {
            let info: Vec<String> = match rec.get("error_info") {
                Some(Value::Array(a)) => a.iter().map(values::plain).collect(),
                _ => vec![],
            };
            let mut info = info.into_iter();
            let code = info.next().unwrap_or_else(|| "INTERNAL_ERROR".into());
            TaskState::Done(Err(fv_rpc::Failure::new(code, info.collect())))
        }
        "cancelled" => TaskState::Cancelled,
        other => return Err(Error::Unexpected(format!("task status {other:.40}"))),
    })
}

/// A progress bar on stderr, drawn only on a terminal.
struct Progress {
    label: String,
    on: bool,
    last: Option<u32>,
}

impl Progress {
    fn new(label: &str) -> Progress {
        Progress {
            label: label.to_owned(),
            on: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, fraction: f64) {
        let pct = (fraction.clamp(0.0, 1.0) * 100.0).round() as u32;
        if !self.on || self.last == Some(pct) {
            return;
        }
        self.last = Some(pct);
        eprint!("\r{}", bar(&self.label, pct));
        let _ = std::io::stderr().flush();
    }

    fn clear(&mut self) {
        if self.on && self.last.is_some() {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

/// `label [#########           ]  45%`.
pub fn bar(label: &str, pct: u32) -> String {
    const WIDTH: usize = 30;
    let pct = pct.min(100);
    let filled = (pct.min(100) as usize * WIDTH) / 100;
    format!(
        "{label} [{}{}] {pct:>3}%",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    )
}

/// Runs `method` as `Async.method`, following its task with `event.from` (progress on
/// stderr) until it ends; Ctrl-C asks the server to cancel it (a second one exits).
pub fn run_task(s: &mut Session, method: &str, args: Vec<Value>) -> Result<Value, Error> {
    let task = s.call_str(&format!("Async.{method}"), args)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    // First Ctrl-C: the flag (the task is cancelled below); a second: exit at once.
    let ids = [
        signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGINT,
            130,
            interrupted.clone(),
        ),
        signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone()),
    ];
    let mut progress = Progress::new(method);
    let result = follow_task(s, &task, &interrupted, &mut progress);
    progress.clear();
    for id in ids.into_iter().flatten() {
        signal_hook::low_level::unregister(id);
    }
    let _ = s.call("task.destroy", vec![Value::from(task.as_str())]);
    result
}

fn follow_task(
    s: &mut Session,
    task: &str,
    interrupted: &AtomicBool,
    progress: &mut Progress,
) -> Result<Value, Error> {
    let subscription = Value::Array(vec![Value::String(format!("task/{task}"))]);
    let mut token = String::new();
    let mut cancel_sent = false;
    loop {
        if interrupted.load(Ordering::Relaxed) && !cancel_sent {
            cancel_sent = true;
            eprintln!("\nfv: cancelling the task (Ctrl-C again to leave it running)");
            let _ = s.call("task.cancel", vec![Value::from(task)]);
        }
        let answer = s.call(
            "event.from",
            vec![
                subscription.clone(),
                Value::from(token.as_str()),
                Value::Float(1.0),
            ],
        );
        let batch = match answer {
            Ok(Value::Struct(b)) => b,
            Ok(_) => return Err(Error::Unexpected("event.from answered no struct".into())),
            Err(Error::Api(f)) if f.code == "EVENTS_LOST" => {
                token.clear();
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(Value::String(t)) = batch.get("token") {
            token = t.clone();
        }
        let events = match batch.get("events") {
            Some(Value::Array(e)) => e.clone(),
            _ => vec![],
        };
        for ev in events {
            let Value::Struct(ev) = ev else { continue };
            if ev.get("operation").and_then(Value::as_str) == Some("del") {
                return Err(Error::Unexpected(format!("task {task} vanished")));
            }
            let Some(Value::Struct(snap)) = ev.get("snapshot") else {
                continue;
            };
            match task_state(snap)? {
                TaskState::Pending(f) => progress.show(f),
                TaskState::Done(r) => {
                    progress.show(1.0);
                    return r.map_err(Error::Api);
                }
                TaskState::Cancelled => {
                    return Err(Error::Interrupted("the task was cancelled".into()))
                }
            }
        }
    }
}

/// `vm-install template=... new-name-label=... [sr-uuid=...]`: clones the template (or
/// copies it into the SR), provisions the copy's disks, makes it a VM; prints its uuid.
fn vm_install(
    s: &mut Session,
    p: &mut Params,
    o: OutOpts,
    cmd: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let vm = model::class("VM").ok_or_else(|| Error::Unexpected("no VM class".into()))?;
    let template = p
        .take(&[
            "template".into(),
            "template-uuid".into(),
            "template-name-label".into(),
        ])
        .ok_or_else(|| Error::usage(format!("{cmd}: missing parameter template=")))?;
    let new_name = p
        .take(&["new-name-label".into()])
        .ok_or_else(|| Error::usage(format!("{cmd}: missing parameter new-name-label=")))?;
    let sr = p.take(&["sr-uuid".into(), "sr".into(), "sr-name-label".into()]);
    p.finish(cmd)?;
    let tref = s.resolve(vm.name, &template)?;
    let is_template = s.call("VM.get_is_a_template", vec![Value::from(tref.as_str())])?;
    if is_template != Value::Bool(true) {
        return Err(Error::usage(format!("{cmd}: {template} is not a template")));
    }
    let new_ref = match sr {
        Some(sr) => {
            let sref = s.resolve("SR", &sr)?;
            run_task(
                s,
                "VM.copy",
                vec![Value::from(tref), Value::from(new_name), Value::from(sref)],
            )?
        }
        None => run_task(
            s,
            "VM.clone",
            vec![Value::from(tref), Value::from(new_name)],
        )?,
    };
    let Value::String(new_ref) = new_ref else {
        return Err(Error::Unexpected("the clone answered no VM".into()));
    };
    run_task(s, "VM.provision", vec![Value::from(new_ref.as_str())])?;
    s.call(
        "VM.set_is_a_template",
        vec![Value::from(new_ref.as_str()), Value::Bool(false)],
    )?;
    print_result(s, Some(&Ty::Ref("VM")), &Value::String(new_ref), o, out)
}

/// A condition of `event-wait`: `field=value`, or `field=/=value` for "not".
#[derive(Debug)]
struct Condition {
    field: &'static Field,
    want: String,
    negate: bool,
}

fn holds(conds: &[Condition], rec: &BTreeMap<String, Value>, n: &mut dyn Namer) -> bool {
    conds.iter().all(|c| {
        let hit = rec
            .get(c.field.name)
            .is_some_and(|v| values::matches(&c.field.ty, v, &c.want, n));
        hit != c.negate
    })
}

/// `event-wait class=vm uuid=... power-state=running`: returns once every condition
/// holds on the object, waiting on `event.from`.
fn event_wait(s: &mut Session, p: &mut Params, cmd: &str) -> Result<(), Error> {
    let cname = p.require("class", cmd)?;
    let class = model::CLASSES
        .iter()
        .copied()
        .find(|c| {
            c.stored
                && (c.name.eq_ignore_ascii_case(&cname)
                    || class_cli(c) == cname.to_ascii_lowercase())
        })
        .ok_or_else(|| Error::usage(format!("{cmd}: no class {cname}")))?;
    let (r, _) = object(s, class, p, cmd)?;
    let mut conds = Vec::new();
    for (k, v) in p.rest() {
        let f = field_named(class, &k).ok_or_else(|| no_field(class, &k))?;
        let (want, negate) = match v.strip_prefix("/=") {
            Some(rest) => (rest.to_owned(), true),
            None => (v, false),
        };
        conds.push(Condition {
            field: f,
            want,
            negate,
        });
    }
    if conds.is_empty() {
        return Err(Error::usage(format!(
            "{cmd}: give at least one field=value to wait for"
        )));
    }
    let sub = Value::Array(vec![Value::String(format!("{}/{r}", class.name))]);
    let mut token = String::new();
    loop {
        let batch = match s.call(
            "event.from",
            vec![sub.clone(), Value::from(token.as_str()), Value::Float(30.0)],
        ) {
            Ok(Value::Struct(b)) => b,
            Ok(_) => return Err(Error::Unexpected("event.from answered no struct".into())),
            Err(Error::Api(f)) if f.code == "EVENTS_LOST" => {
                token.clear();
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(Value::String(t)) = batch.get("token") {
            token = t.clone();
        }
        if let Some(Value::Array(events)) = batch.get("events") {
            for ev in events {
                let Value::Struct(ev) = ev else { continue };
                if ev.get("operation").and_then(Value::as_str) == Some("del") {
                    return Err(Error::NotFound(format!("the {} was destroyed", class.name)));
                }
                if let Some(Value::Struct(snap)) = ev.get("snapshot") {
                    if holds(&conds, snap, s) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::tests::Table;

    fn spec(name: &str) -> CallSpec {
        match &commands::find(name).expect(name).cmd {
            Cmd::Call(c) => c.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn inv(args: &[&str]) -> Invocation {
        args::parse(args.iter().copied()).expect("parse")
    }

    fn table() -> Table {
        Table(vec![
            ("VM", "web", "OpaqueRef:vm1"),
            (
                "VM",
                "11111111-1111-1111-1111-111111111111",
                "OpaqueRef:vm1",
            ),
            ("SR", "local", "OpaqueRef:sr1"),
            ("network", "net0", "OpaqueRef:n0"),
        ])
    }

    fn args_of(cmd: &str, line: &[&str]) -> Result<Vec<Value>, Error> {
        let i = inv(line);
        let mut p = Params::new(i.params.clone());
        let out = call_args(&mut table(), &spec(cmd), &mut p, &i, cmd)?;
        p.finish(cmd)?;
        Ok(out)
    }

    #[test]
    fn vm_start_arguments_from_keys_flags_and_aliases() {
        let r = Value::from("OpaqueRef:vm1");
        let f = Value::Bool(false);
        let t = Value::Bool(true);
        assert_eq!(
            args_of("vm-start", &["vm=web"]).unwrap(),
            [r.clone(), f.clone(), f.clone()]
        );
        assert_eq!(
            args_of("vm-start", &["uuid=web", "paused=true"]).unwrap(),
            [r.clone(), t.clone(), f.clone()]
        );
        assert_eq!(
            args_of("vm-start", &["vm=web", "--start-paused", "--force"]).unwrap(),
            [r.clone(), t.clone(), t.clone()]
        );
        assert_eq!(
            args_of("vm-start", &["vm=web", "start_paused=yes"]).unwrap(),
            [r, t, f]
        );
        let e = args_of("vm-start", &[]).unwrap_err();
        assert!(e.to_string().contains("missing parameter uuid="), "{e}");
        let e = args_of("vm-start", &["vm=web", "colour=red"]).unwrap_err();
        assert!(e.to_string().contains("unknown parameter colour"), "{e}");
        let e = args_of("vm-start", &["vm=nobody"]).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        let e = args_of("vm-start", &["vm=web", "paused=perhaps"]).unwrap_err();
        assert!(e.to_string().contains("not true or false"), "{e}");
    }

    #[test]
    fn clone_and_copy_arguments() {
        assert_eq!(
            args_of("vm-clone", &["uuid=web", "new-name-label=web2"]).unwrap(),
            [Value::from("OpaqueRef:vm1"), Value::from("web2")]
        );
        assert_eq!(
            args_of("vm-copy", &["vm=web", "new-name=c"]).unwrap()[2],
            Value::from(values::NULL_REF),
            "sr may be left out"
        );
        assert_eq!(
            args_of("vm-copy", &["vm=web", "new-name=c", "sr-uuid=local"]).unwrap()[2],
            Value::from("OpaqueRef:sr1")
        );
        assert!(
            args_of("vm-clone", &["uuid=web"]).is_err(),
            "new name required"
        );
    }

    #[test]
    fn create_takes_a_record_from_fields() {
        let v = args_of(
            "network-create",
            &[
                "name-label=lan",
                "other-config:mtu=9000",
                "tags=a,b",
                "MTU=1500",
            ],
        )
        .unwrap();
        let Value::Struct(rec) = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(rec["name_label"], Value::from("lan"));
        assert_eq!(rec["MTU"], Value::Int(1500));
        assert_eq!(
            rec["other_config"],
            Value::Struct(BTreeMap::from([("mtu".into(), Value::from("9000"))]))
        );
        assert!(!rec.contains_key("uuid"), "server-set fields are not sent");
        let v = args_of(
            "vif-create",
            &[
                "VM=web",
                "network-uuid=net0",
                "device=0",
                "MAC=aa:bb:cc:dd:ee:ff",
            ],
        );
        match v {
            Ok(v) => {
                let Value::Struct(rec) = &v[0] else { panic!() };
                assert_eq!(rec["VM"], Value::from("OpaqueRef:vm1"));
                assert_eq!(rec["network"], Value::from("OpaqueRef:n0"));
            }
            // VIF may require more fields than given: then the error names them.
            Err(e) => assert!(e.to_string().contains("missing parameter"), "{e}"),
        }
    }

    #[test]
    fn task_records_decode() {
        let rec = |status: &str, extra: Vec<(&str, Value)>| {
            let mut m = BTreeMap::from([("status".to_owned(), Value::from(status))]);
            for (k, v) in extra {
                m.insert(k.to_owned(), v);
            }
            m
        };
        assert_eq!(
            task_state(&rec("pending", vec![("progress", Value::Float(0.25))])).unwrap(),
            TaskState::Pending(0.25)
        );
        assert_eq!(
            task_state(&rec(
                "success",
                vec![("result", Value::from("<value>OpaqueRef:x</value>"))]
            ))
            .unwrap(),
            TaskState::Done(Ok(Value::from("OpaqueRef:x")))
        );
        assert_eq!(
            task_state(&rec("success", vec![("result", Value::from(""))])).unwrap(),
            TaskState::Done(Ok(Value::void()))
        );
        let info = Value::Array(vec![
            "VM_BAD_POWER_STATE".into(),
            "r".into(),
            "Halted".into(),
            "Running".into(),
        ]);
        match task_state(&rec("failure", vec![("error_info", info)])).unwrap() {
            TaskState::Done(Err(f)) => {
                assert_eq!(f.code, "VM_BAD_POWER_STATE");
                assert_eq!(f.params.len(), 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            task_state(&rec("cancelled", vec![])).unwrap(),
            TaskState::Cancelled
        );
        assert!(task_state(&rec("weird", vec![])).is_err());
        assert!(task_result("<value><struct>").is_err());
        assert_eq!(
            task_result("<value><array><data><value>a</value></data></array></value>").unwrap(),
            Value::Array(vec!["a".into()])
        );
    }

    #[test]
    fn progress_bars() {
        assert_eq!(
            bar("VM.start", 0),
            format!("VM.start [{}]   0%", " ".repeat(30))
        );
        assert_eq!(
            bar("x", 50),
            format!("x [{}{}]  50%", "#".repeat(15), " ".repeat(15))
        );
        assert_eq!(bar("x", 250), format!("x [{}] 100%", "#".repeat(30)));
    }

    #[test]
    fn params_are_used_once_and_leftovers_reported() {
        let mut p = Params::new(vec![
            ("Name_Label".into(), "a".into()),
            ("x:k".into(), "v".into()),
            ("other".into(), "o".into()),
        ]);
        assert_eq!(p.take1("name-label").as_deref(), Some("a"));
        assert_eq!(p.take1("name-label"), None);
        assert_eq!(p.rest_with_prefix("x"), [("k".to_owned(), "v".to_owned())]);
        let e = p.finish("cmd").unwrap_err();
        assert!(e.to_string().contains("unknown parameter other"), "{e}");
        assert!(matches!(e, Error::Usage(_)));
    }

    #[test]
    fn event_wait_conditions() {
        let vm = model::class("VM").expect("VM");
        let rec = BTreeMap::from([
            ("power_state".to_owned(), Value::from("Running")),
            ("name_label".to_owned(), Value::from("web")),
        ]);
        let c = |f: &str, want: &str, negate| Condition {
            field: vm.field(f).expect(f),
            want: want.into(),
            negate,
        };
        let t = &mut table();
        assert!(holds(&[c("power_state", "running", false)], &rec, t));
        assert!(holds(
            &[
                c("power_state", "halted", true),
                c("name_label", "web", false)
            ],
            &rec,
            t
        ));
        assert!(!holds(&[c("power_state", "running", true)], &rec, t));
    }

    #[test]
    fn fields_by_cli_or_api_name() {
        let vm = model::class("VM").expect("VM");
        assert_eq!(
            field_named(vm, "name-label").map(|f| f.name),
            Some("name_label")
        );
        assert_eq!(
            field_named(vm, "pv-kernel").map(|f| f.name),
            Some("PV_kernel")
        );
        assert_eq!(
            field_named(vm, "PV_kernel").map(|f| f.name),
            Some("PV_kernel")
        );
        assert!(field_named(vm, "nope").is_none());
    }
}
