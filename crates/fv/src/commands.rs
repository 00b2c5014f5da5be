//! The command set, derived from the object model (`fv_xapi::model`) at run time.
//!
//! Nothing here names a class, a field or a message of the model except the few xe
//! conventions listed in [`XE_ALIASES`] and the command-line-only commands
//! ([`Special`]). The rules:
//!
//! - Names: a class `VM_metrics` is `vm-metrics` (lower case, `_` → `-`), a message
//!   `clean_shutdown` is `clean-shutdown`; a field or parameter keeps its case with
//!   `_` → `-` (`name-label`, `PV-kernel`, `start-paused`), and is matched without case.
//! - Every stored class has `<class>-list`, `-param-list`, `-param-get`, `-param-set`,
//!   `-param-add`, `-param-remove` and `-param-clear`.
//! - Every message of a stored class is `<class>-<message>`, with its parameters as
//!   `key=value` and its booleans also as `--flags`; `create` and `destroy` come from
//!   `fv_xapi::generic::calls` where the class's lifecycle is generic. A message with an
//!   `Async.` twin runs as a task with a progress bar.
//! - A class with messages `clean_X` and `hard_X` has `<class>-X [--force]` (xe's
//!   `vm-shutdown`, `vm-reboot`), which takes the name over from a message `X`.
//! - Session plumbing (`session.login_with_password`, `session.logout`) and the `event`
//!   class are the CLI's own business and have no commands; `event-wait` replaces them.

use std::sync::OnceLock;

use fv_xapi::generic::{self, Generic};
use fv_xapi::model::{Class, Message, Qual, Ty, CLASSES};

/// The class's command prefix: `VM_guest_metrics` → `vm-guest-metrics`.
pub fn class_cli(class: &Class) -> String {
    class.name.to_ascii_lowercase().replace('_', "-")
}

/// A field's or parameter's name on the command line: `name_label` → `name-label`.
pub fn cli_name(api: &str) -> String {
    api.replace('_', "-")
}

/// Whether a command-line `key` names the API's `api` (`name-label`, `name_label` and
/// `Name-Label` all name `name_label`).
pub fn names(key: &str, api: &str) -> bool {
    key.len() == api.len()
        && key
            .bytes()
            .zip(api.bytes())
            .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (a == b'-' && b == b'_'))
}

/// A call's parameter, after the session.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
}

/// A XenAPI call a command makes: a custom message or a generic create/destroy.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub class: &'static Class,
    /// The message name: `start`, `create`.
    pub name: String,
    pub params: Vec<ParamSpec>,
    pub result: Option<Ty>,
    pub is_async: bool,
    pub doc: String,
}

impl CallSpec {
    fn from_message(class: &'static Class, m: &'static Message) -> CallSpec {
        CallSpec {
            class,
            name: m.name.to_owned(),
            params: m
                .params
                .iter()
                .map(|p| ParamSpec {
                    name: p.name,
                    ty: p.ty,
                    doc: p.doc,
                })
                .collect(),
            result: m.result,
            is_async: m.is_async,
            doc: m.doc.to_owned(),
        }
    }

    fn from_generic(class: &'static Class, name: &str, g: &Generic) -> CallSpec {
        let (doc, result) = match g {
            Generic::Create => (
                format!(
                    "Create a new {} from the given fields; prints its uuid.",
                    class.name
                ),
                Some(Ty::Ref(class.name)),
            ),
            _ => (format!("Destroy the specified {}.", class.name), None),
        };
        CallSpec {
            class,
            name: name.to_owned(),
            params: g
                .params(class)
                .into_iter()
                .map(|(name, ty)| ParamSpec {
                    name,
                    ty,
                    doc: match ty {
                        Ty::Record(_) => "the new object's fields, each as field=value",
                        _ => "the object",
                    },
                })
                .collect(),
            result,
            is_async: g.is_async(),
            doc,
        }
    }

    /// `VM.start`.
    pub fn method(&self) -> String {
        format!("{}.{}", self.class.name, self.name)
    }

    /// The parameter naming the object the call is about: the first, if it is a ref to
    /// the call's own class.
    pub fn self_param(&self) -> Option<&ParamSpec> {
        self.params
            .first()
            .filter(|p| p.ty == Ty::Ref(self.class.name))
    }
}

/// The commands that are not one call of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `vm-install template=... new-name-label=...`: clone (or copy) a template, provision.
    VmInstall,
    /// `event-wait class=... uuid=... field=value`.
    EventWait,
    /// `help [command]`.
    Help,
    /// `completion bash|zsh|fish`.
    Completion,
}

/// What a command does.
#[derive(Debug, Clone)]
pub enum Cmd {
    List(&'static Class),
    ParamList(&'static Class),
    ParamGet(&'static Class),
    ParamSet(&'static Class),
    ParamAdd(&'static Class),
    ParamRemove(&'static Class),
    ParamClear(&'static Class),
    Call(CallSpec),
    /// `<class>-X`: `clean_X`, or `hard_X` with `--force`.
    CleanOrHard {
        clean: CallSpec,
        hard: CallSpec,
    },
    Special(Special),
}

/// A command and its name.
#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    pub cmd: Cmd,
}

/// xe's spellings of some parameters, kept so that xe habits work: (class, message,
/// model parameter, xe's name). Each entry must name a real parameter (a unit test
/// checks), so the table cannot drift from the model unnoticed.
pub const XE_ALIASES: &[(&str, &str, &str, &str)] = &[
    ("VM", "start", "start_paused", "paused"),
    ("VM", "resume", "start_paused", "paused"),
    ("VM", "clone", "new_name", "new-name-label"),
    ("VM", "copy", "new_name", "new-name-label"),
    ("VM", "snapshot", "new_name", "new-name-label"),
];

/// Whether a class gets commands at all.
fn has_commands(class: &Class) -> bool {
    class.stored
}

/// Messages the CLI uses itself and offers no command for.
fn hidden(class: &Class, msg: &str) -> bool {
    matches!(
        (class.name, msg),
        ("session", "login_with_password" | "logout")
    )
}

fn derive() -> Vec<Command> {
    let mut out = Vec::new();
    for class in CLASSES.iter().copied().filter(|c| has_commands(c)) {
        let pre = class_cli(class);
        let mut add = |suffix: &str, cmd: Cmd| {
            out.push(Command {
                name: format!("{pre}-{suffix}"),
                cmd,
            })
        };
        add("list", Cmd::List(class));
        add("param-list", Cmd::ParamList(class));
        add("param-get", Cmd::ParamGet(class));
        add("param-set", Cmd::ParamSet(class));
        add("param-add", Cmd::ParamAdd(class));
        add("param-remove", Cmd::ParamRemove(class));
        add("param-clear", Cmd::ParamClear(class));
        let mut calls: Vec<CallSpec> = class
            .messages
            .iter()
            .filter(|m| !hidden(class, m.name))
            .map(|m| CallSpec::from_message(class, m))
            .collect();
        for (name, g) in generic::calls(class) {
            if matches!(g, Generic::Create | Generic::Destroy) && class.message(&name).is_none() {
                calls.push(CallSpec::from_generic(class, &name, &g));
            }
        }
        // clean_X + hard_X → X [--force]; it takes the name X over from a message X.
        let mut paired = Vec::new();
        for c in &calls {
            if let Some(verb) = c.name.strip_prefix("clean_") {
                if let Some(h) = calls.iter().find(|h| h.name == format!("hard_{verb}")) {
                    paired.push((verb.to_owned(), c.clone(), h.clone()));
                }
            }
        }
        calls.retain(|c| !paired.iter().any(|(verb, _, _)| *verb == c.name));
        for c in calls {
            add(&cli_name(&c.name).to_ascii_lowercase(), Cmd::Call(c));
        }
        for (verb, clean, hard) in paired {
            add(
                &cli_name(&verb).to_ascii_lowercase(),
                Cmd::CleanOrHard { clean, hard },
            );
        }
    }
    for (name, s) in [
        ("vm-install", Special::VmInstall),
        ("event-wait", Special::EventWait),
        ("help", Special::Help),
        ("completion", Special::Completion),
    ] {
        out.push(Command {
            name: name.to_owned(),
            cmd: Cmd::Special(s),
        });
    }
    out
}

/// Every command, derived once.
pub fn all() -> &'static [Command] {
    static ALL: OnceLock<Vec<Command>> = OnceLock::new();
    ALL.get_or_init(derive)
}

/// The command of that name (lower case, as listed).
pub fn find(name: &str) -> Option<&'static Command> {
    all().iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// Commands whose name is close to `name`, for a "did you mean" hint.
pub fn similar(name: &str) -> Vec<&'static str> {
    let name = name.to_ascii_lowercase();
    let mut out: Vec<&str> = all()
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| {
            c.starts_with(&name)
                || name.starts_with(*c)
                || (name.len() > 3 && c.contains(&name))
                || edit_distance(c, &name) <= 2
        })
        .collect();
    out.truncate(8);
    out
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The keys a call's parameter answers to on the command line, first the canonical one.
///
/// The object the call is about: `uuid`, the parameter's own name and the class's
/// (`vm=`, by uuid or name). Any other ref: its name and `<name>-uuid` (xe's `sr-uuid=`).
/// Plus the [`XE_ALIASES`].
pub fn param_keys(call: &CallSpec, p: &ParamSpec) -> Vec<String> {
    let mut keys = Vec::new();
    let is_self = call.self_param().is_some_and(|s| s.name == p.name);
    if is_self {
        keys.push("uuid".to_owned());
        if p.name != "self" {
            keys.push(cli_name(p.name));
        }
        let c = class_cli(call.class);
        if !keys.contains(&c) {
            keys.push(c);
        }
    } else {
        keys.push(cli_name(p.name));
        if matches!(p.ty, Ty::Ref(_)) {
            keys.push(format!("{}-uuid", cli_name(p.name)));
        }
    }
    for (c, m, param, alias) in XE_ALIASES {
        if *c == call.class.name && *m == call.name && *param == p.name {
            keys.push((*alias).to_owned());
        }
    }
    keys
}

/// Whether a parameter may be left out, and the value it then takes: booleans are
/// false, sets and maps empty, refs other than the call's object null (XenAPI's "an
/// invalid reference" for an optional object, as `VM.copy`'s `sr`). Strings, numbers,
/// enums and the object itself must be given.
pub fn optional(call: &CallSpec, p: &ParamSpec) -> bool {
    let is_self = call.self_param().is_some_and(|s| s.name == p.name);
    match p.ty {
        Ty::Bool | Ty::Set(_) | Ty::Map(..) => true,
        Ty::Ref(_) => !is_self,
        _ => false,
    }
}

/// The fields a record parameter (`create`'s `args`) takes from the command line: those
/// not maintained by the server.
pub fn record_fields(
    class: &'static Class,
) -> impl Iterator<Item = &'static fv_xapi::model::Field> {
    class
        .fields
        .iter()
        .filter(|f| f.qual != Qual::DynamicRO && fv_xapi::model::is_stored(class, f))
}

/// How a field may be changed from the command line: a custom `set_<field>` message of
/// the class, else the generic setter of an RW field.
#[derive(Debug, Clone, Copy)]
pub enum Setter {
    Custom(&'static Message),
    Generic,
}

pub fn setter(class: &'static Class, field: &str) -> Option<Setter> {
    let name = format!("set_{field}");
    if let Some(m) = class.message(&name) {
        if m.params.len() == 2 {
            return Some(Setter::Custom(m));
        }
    }
    match generic::resolve(class, &name) {
        Some(Generic::Set(_)) => Some(Setter::Generic),
        _ => None,
    }
}

/// The columns `<class>-list` shows without `params=`: uuid, name-label and
/// name-description where the class has them; the references to its owners for a class
/// without names (a VIF's VM and network); and its server-maintained states (a VM's
/// power-state, a task's status).
pub fn default_columns(class: &'static Class) -> Vec<&'static str> {
    let mut out = vec!["uuid"];
    for f in ["name_label", "name_description"] {
        if class.field(f).is_some() {
            out.push(f);
        }
    }
    if !class.by_name() {
        out.extend(fv_xapi::model::relations_from(class.name).map(|r| r.from_field));
        if class.field("device").is_some() {
            out.push("device");
        }
    }
    for f in class.fields {
        if f.qual == Qual::DynamicRO && matches!(f.ty, Ty::Enum(_)) && !out.contains(&f.name) {
            out.push(f.name);
        }
    }
    out
}

/// A field's type tag as xe shows it beside the name: `RO`/`RW`, with `S` for a set and
/// `M` for a map (`MRW` for other-config).
pub fn field_tag(class: &'static Class, f: &fv_xapi::model::Field) -> String {
    let kind = match f.ty {
        Ty::Set(_) => "S",
        Ty::Map(..) => "M",
        _ => " ",
    };
    let rw = if setter(class, f.name).is_some() {
        "RW"
    } else {
        "RO"
    };
    format!("{kind}{rw}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fv_xapi::model;

    fn call_of(name: &str) -> CallSpec {
        match &find(name).unwrap_or_else(|| panic!("{name}")).cmd {
            Cmd::Call(c) => c.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn every_stored_class_has_list_and_param_commands() {
        for c in CLASSES.iter().filter(|c| c.stored) {
            let pre = class_cli(c);
            for s in [
                "list",
                "param-list",
                "param-get",
                "param-set",
                "param-add",
                "param-remove",
            ] {
                assert!(find(&format!("{pre}-{s}")).is_some(), "{pre}-{s}");
            }
        }
        for name in [
            "vm-list",
            "sr-list",
            "vdi-list",
            "host-list",
            "network-list",
            "vif-list",
            "task-list",
            "vm-metrics-list",
            "vm-guest-metrics-list",
            "pif-list",
            "pbd-list",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(find("event-list").is_none(), "event is not stored");
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = all().iter().map(|c| c.name.as_str()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(n, names.len());
    }

    #[test]
    fn every_message_of_a_stored_class_has_a_command() {
        for (class, m) in CLASSES
            .iter()
            .filter(|c| c.stored)
            .flat_map(|c| c.messages.iter().map(move |m| (*c, m)))
        {
            if hidden(class, m.name) {
                continue;
            }
            let covered = all().iter().any(|cmd| match &cmd.cmd {
                Cmd::Call(c) => c.class.name == class.name && c.name == m.name,
                Cmd::CleanOrHard { clean, hard } => {
                    clean.class.name == class.name && (clean.name == m.name || hard.name == m.name)
                }
                _ => false,
            });
            // A message X shadowed by the clean_X/hard_X pair is the one exception.
            let shadowed = class.message(&format!("clean_{}", m.name)).is_some()
                && class.message(&format!("hard_{}", m.name)).is_some();
            assert!(covered || shadowed, "{}.{}", class.name, m.name);
        }
    }

    #[test]
    fn vm_lifecycle_commands_come_from_the_model() {
        let start = call_of("vm-start");
        assert_eq!(start.method(), "VM.start");
        assert!(start.is_async);
        let names: Vec<&str> = start.params.iter().map(|p| p.name).collect();
        assert_eq!(names, ["vm", "start_paused", "force"]);
        assert_eq!(param_keys(&start, &start.params[0]), ["uuid", "vm"]);
        assert_eq!(
            param_keys(&start, &start.params[1]),
            ["start-paused", "paused"]
        );
        assert!(optional(&start, &start.params[1]));
        assert!(!optional(&start, &start.params[0]));
        for n in [
            "vm-pause",
            "vm-unpause",
            "vm-clone",
            "vm-copy",
            "vm-destroy",
            "vm-clean-shutdown",
            "vm-hard-reboot",
            "vm-provision",
        ] {
            call_of(n);
        }
        let copy = call_of("vm-copy");
        assert_eq!(param_keys(&copy, &copy.params[2]), ["sr", "sr-uuid"]);
        assert!(optional(&copy, &copy.params[2]));
        assert_eq!(call_of("vm-destroy").params[0].name, "self");
        assert_eq!(
            param_keys(&call_of("vm-destroy"), &call_of("vm-destroy").params[0]),
            ["uuid", "vm"]
        );
        match &find("vm-shutdown").expect("vm-shutdown").cmd {
            Cmd::CleanOrHard { clean, hard } => {
                assert_eq!(
                    (clean.name.as_str(), hard.name.as_str()),
                    ("clean_shutdown", "hard_shutdown")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            find("vm-reboot").map(|c| &c.cmd),
            Some(Cmd::CleanOrHard { .. })
        ));
        assert!(find("vm-set-vcpus-max").is_some());
        assert!(find("VM-Start").is_some(), "found without case");
    }

    #[test]
    fn create_and_destroy_follow_the_lifecycle() {
        let c = call_of("network-create");
        assert!(matches!(c.params[0].ty, Ty::Record("network")));
        assert_eq!(c.result, Some(Ty::Ref("network")));
        call_of("network-destroy");
        // A custom create wins over the generic one (VDI's is async and custom).
        let vdi = call_of("vdi-create");
        assert!(vdi.is_async);
        assert!(
            find("host-create").is_none(),
            "host's lifecycle is internal"
        );
        assert!(find("session-login-with-password").is_none());
        assert!(find("session-logout").is_none());
        assert!(find("session-change-password").is_some());
        assert!(find("task-cancel").is_some());
    }

    #[test]
    fn xe_aliases_name_real_parameters() {
        for (c, m, p, alias) in XE_ALIASES {
            let class = model::class(c).expect(c);
            let msg = class.message(m).unwrap_or_else(|| panic!("{c}.{m}"));
            assert!(msg.params.iter().any(|x| x.name == *p), "{c}.{m}.{p}");
            assert!(
                !msg.params.iter().any(|x| names(alias, x.name)),
                "{alias} shadows"
            );
        }
    }

    #[test]
    fn name_matching() {
        assert!(names("name-label", "name_label"));
        assert!(names("Name-Label", "name_label"));
        assert!(names("pv-kernel", "PV_kernel"));
        assert!(!names("name-labe", "name_label"));
        assert!(
            !names("name_label", "name-label"),
            "only the CLI side has dashes"
        );
        assert_eq!(cli_name("PV_kernel"), "PV-kernel");
        assert_eq!(
            class_cli(model::class("VM_guest_metrics").expect("c")),
            "vm-guest-metrics"
        );
    }

    #[test]
    fn setters_custom_or_generic() {
        let vm = model::class("VM").expect("VM");
        assert!(matches!(setter(vm, "name_label"), Some(Setter::Generic)));
        assert!(matches!(setter(vm, "VCPUs_max"), Some(Setter::Custom(_))));
        assert!(matches!(
            setter(vm, "memory_static_max"),
            Some(Setter::Custom(_))
        ));
        assert!(setter(vm, "power_state").is_none());
        assert!(setter(vm, "uuid").is_none());
        let f = vm.field("other_config").expect("f");
        assert_eq!(field_tag(vm, f), "MRW");
        assert_eq!(field_tag(vm, vm.field("uuid").expect("f")), " RO");
        assert_eq!(
            field_tag(vm, vm.field("allowed_operations").expect("f")),
            "SRO"
        );
    }

    #[test]
    fn default_columns_are_derived() {
        assert_eq!(
            default_columns(model::class("VM").expect("VM")),
            ["uuid", "name_label", "name_description", "power_state"]
        );
        let vif = default_columns(model::class("VIF").expect("VIF"));
        assert!(
            vif.starts_with(&["uuid"]) && vif.contains(&"VM") && vif.contains(&"network"),
            "{vif:?}"
        );
        assert!(default_columns(model::class("task").expect("task")).contains(&"status"));
    }

    #[test]
    fn similar_names_are_suggested() {
        assert!(similar("vm-strat").contains(&"vm-start"));
        assert!(similar("vm-lst").contains(&"vm-list"));
        assert!(similar("zzzzzzzzzz").is_empty());
    }
}
