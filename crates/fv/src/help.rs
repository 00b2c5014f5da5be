//! Help text, from the model's docs.

use fv_xapi::model::{Class, Ty};

use crate::commands::{self, class_cli, cli_name, CallSpec, Cmd, Command, Special};

/// `fv` alone or `fv help`: usage, connection options, and every command by class.
pub fn overview() -> String {
    let mut out = String::from(
        "fv: Ferrovisor's command-line interface, in the manner of xe.\n\
         \n\
         Usage: fv [connection] COMMAND [key=value ...] [--flag ...] [--json] [--minimal]\n\
         \n\
         Connection (without -s: the local socket, $FV_SOCKET or /var/lib/ferrovisor/fvd.sock):\n\
         \x20 -s HOST [-p PORT]       fvd over HTTPS (port 443)\n\
         \x20 --nossl                 plain HTTP instead (fvd --insecure-http; port 80)\n\
         \x20 -u USER                 default root\n\
         \x20 -pw PASSWORD | -pwf FILE\n\
         \x20 --fingerprint SHA256    trust the server certificate with this fingerprint\n\
         \x20 --cafile FILE           verify the server certificate against these CAs\n\
         \x20 --no-verify             do not verify the certificate (warned)\n\
         \x20 --socket PATH           the local socket\n\
         \x20 --jsonrpc               JSON-RPC instead of XML-RPC\n\
         Environment: FV_SERVER FV_PORT FV_USERNAME FV_PASSWORD FV_SOCKET FV_FINGERPRINT FV_CAFILE\n\
         \n\
         Commands (fv help COMMAND for one):\n",
    );
    let mut group = String::new();
    let mut line = String::new();
    let flush = |out: &mut String, line: &mut String| {
        if !line.is_empty() {
            out.push_str(line);
            out.push('\n');
            line.clear();
        }
    };
    for c in commands::all() {
        let g = match &c.cmd {
            Cmd::Special(_) => "other".to_owned(),
            Cmd::List(cl)
            | Cmd::ParamList(cl)
            | Cmd::ParamGet(cl)
            | Cmd::ParamSet(cl)
            | Cmd::ParamAdd(cl)
            | Cmd::ParamRemove(cl)
            | Cmd::ParamClear(cl) => class_cli(cl),
            Cmd::Call(s) => class_cli(s.class),
            Cmd::CleanOrHard { clean, .. } => class_cli(clean.class),
        };
        if g != group {
            flush(&mut out, &mut line);
            group = g;
            line = "  ".to_owned();
        } else if line.len() + c.name.len() > 78 {
            flush(&mut out, &mut line);
            line = "  ".to_owned();
        }
        line.push_str(&c.name);
        line.push(' ');
    }
    flush(&mut out, &mut line);
    out
}

fn ty_name(ty: &Ty) -> String {
    match ty {
        Ty::String => "string".into(),
        Ty::Int => "int".into(),
        Ty::Float => "float".into(),
        Ty::Bool => "bool".into(),
        Ty::DateTime => "datetime".into(),
        Ty::Enum(e) => e.values.join("|"),
        Ty::Ref(c) => format!("{c} uuid or name"),
        Ty::Set(t) => format!("comma-separated {}", ty_name(t)),
        Ty::Map(..) => "map".into(),
        Ty::Record(c) => format!("{c} record"),
    }
}

fn fields_help(class: &'static Class, only_settable: bool) -> String {
    let mut out = String::new();
    for f in class.fields {
        if only_settable && commands::setter(class, f.name).is_none() {
            continue;
        }
        let name = match f.ty {
            Ty::Map(..) => format!("{}:KEY", cli_name(f.name)),
            _ => cli_name(f.name),
        };
        out.push_str(&format!(
            "  {name}=  ({}, {})  {}\n",
            commands::field_tag(class, f).trim(),
            ty_name(&f.ty),
            f.doc
        ));
    }
    out
}

fn call_help(name: &str, spec: &CallSpec, extra_flag: Option<&str>) -> String {
    let mut out = format!("fv {name}: {}\n", spec.doc);
    out.push_str(&format!(
        "Calls {}{}.\n\nParameters:\n",
        if spec.is_async { "Async." } else { "" },
        spec.method()
    ));
    for p in &spec.params {
        if let Ty::Record(c) = p.ty {
            if let Some(class) = fv_xapi::model::class(c) {
                for f in commands::record_fields(class) {
                    let req = if f.default.is_none() {
                        "required"
                    } else {
                        "optional"
                    };
                    let key = match f.ty {
                        Ty::Map(..) => format!("{}:KEY=", cli_name(f.name)),
                        Ty::Ref(_) => format!("{0}= | {0}-uuid=", cli_name(f.name)),
                        _ => format!("{}=", cli_name(f.name)),
                    };
                    out.push_str(&format!(
                        "  {key}  ({}, {req})  {}\n",
                        ty_name(&f.ty),
                        f.doc
                    ));
                }
            }
            continue;
        }
        let keys = commands::param_keys(spec, p);
        let req = if commands::optional(spec, p) {
            "optional"
        } else {
            "required"
        };
        let shown = match p.ty {
            Ty::Map(..) => format!("{}:KEY=", keys[0]),
            Ty::Bool => format!("{}= | --{}", keys[0], keys[0]),
            _ => keys
                .iter()
                .map(|k| format!("{k}="))
                .collect::<Vec<_>>()
                .join(" | "),
        };
        out.push_str(&format!(
            "  {shown}  ({}, {req})  {}\n",
            ty_name(&p.ty),
            p.doc
        ));
    }
    if let Some(f) = extra_flag {
        out.push_str(f);
    }
    out
}

/// Help for one command.
pub fn command(c: &Command) -> String {
    let n = &c.name;
    match &c.cmd {
        Cmd::List(class) => format!(
            "fv {n} [params=FIELD,...|all] [FIELD=VALUE ...] [--minimal] [--json]\n\
             Lists the {} objects whose fields have the given values (--minimal: their uuids).\n\
             Default columns: {}.\n\nFields:\n{}",
            class.name,
            commands::default_columns(class).iter().map(|f| cli_name(f)).collect::<Vec<_>>().join(", "),
            fields_help(class, false)
        ),
        Cmd::ParamList(class) => format!(
            "fv {n} uuid=UUID [--json]\nEvery field of one {}.\n",
            class.name
        ),
        Cmd::ParamGet(class) => format!(
            "fv {n} uuid=UUID param-name=FIELD [param-key=KEY]\nOne field of a {} (one key of a map field).\n\nFields:\n{}",
            class.name,
            fields_help(class, false)
        ),
        Cmd::ParamSet(class) => format!(
            "fv {n} uuid=UUID FIELD=VALUE ... [MAP:KEY=VALUE ...]\nSets fields of a {}.\n\nSettable fields:\n{}",
            class.name,
            fields_help(class, true)
        ),
        Cmd::ParamAdd(class) => format!(
            "fv {n} uuid=UUID param-name=SET param-key=VALUE[,VALUE...]\n\
             fv {n} uuid=UUID param-name=MAP KEY=VALUE ...\nAdds to a set or map field of a {}.\n",
            class.name
        ),
        Cmd::ParamRemove(class) => format!(
            "fv {n} uuid=UUID param-name=SET|MAP param-key=KEY[,KEY...]\nRemoves from a set or map field of a {}.\n",
            class.name
        ),
        Cmd::ParamClear(class) => format!(
            "fv {n} uuid=UUID param-name=FIELD\nEmpties a set, map or string field of a {}.\n",
            class.name
        ),
        Cmd::Call(spec) => call_help(n, spec, None),
        Cmd::CleanOrHard { clean, hard } => {
            let mut out = call_help(n, clean, Some(&format!(
                "  --force  with it, {} instead: {}\n",
                hard.method(),
                hard.doc
            )));
            out.insert_str(0, "");
            out
        }
        Cmd::Special(Special::VmInstall) => format!(
            "fv {n} template=UUID|NAME new-name-label=NAME [sr-uuid=SR]\n\
             Installs a VM from a template: VM.clone (VM.copy into the SR if given), then\n\
             VM.provision, then is-a-template=false. Prints the new VM's uuid.\n"
        ),
        Cmd::Special(Special::EventWait) => format!(
            "fv {n} class=CLASS uuid=UUID FIELD=VALUE [FIELD=/=VALUE ...]\n\
             Waits (with event.from) until every condition holds on the object; `=/=` means\n\
             \"is not\". Example: fv event-wait class=vm uuid=... power-state=running\n"
        ),
        Cmd::Special(Special::Help) => format!("fv {n} [COMMAND]\n"),
        Cmd::Special(Special::Completion) => format!(
            "fv {n} bash|zsh|fish\nPrints a completion script, e.g. `source <(fv completion bash)`.\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_lists_every_command() {
        let text = overview();
        for c in commands::all() {
            assert!(text.contains(&c.name), "{}", c.name);
        }
        assert!(text.lines().all(|l| l.len() <= 100), "lines stay short");
    }

    #[test]
    fn command_help_comes_from_the_model_docs() {
        let text = command(commands::find("vm-start").expect("vm-start"));
        assert!(text.contains("Calls Async.VM.start"), "{text}");
        assert!(text.contains("start-paused= | --start-paused"), "{text}");
        assert!(text.contains("Instantiate VM in paused state"), "{text}");
        assert!(text.contains("uuid= | vm="), "{text}");
        let text = command(commands::find("vm-shutdown").expect("vm-shutdown"));
        assert!(
            text.contains("--force") && text.contains("VM.hard_shutdown"),
            "{text}"
        );
        let text = command(commands::find("vm-param-set").expect("p"));
        assert!(
            text.contains("name-label=") && !text.contains("power-state="),
            "{text}"
        );
        let text = command(commands::find("network-create").expect("n"));
        assert!(text.contains("name-label="), "{text}");
        for c in commands::all() {
            assert!(!command(c).is_empty());
        }
    }
}
