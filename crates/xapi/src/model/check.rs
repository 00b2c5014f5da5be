//! Consistency of the model: what `datamodel_utils` and the generators would fail on.

use super::*;
use std::collections::HashSet;

fn refs_in(ty: &Ty, out: &mut Vec<&'static str>) {
    match *ty {
        Ty::Ref(c) | Ty::Record(c) => out.push(c),
        Ty::Set(t) => refs_in(t, out),
        Ty::Map(k, v) => {
            refs_in(k, out);
            refs_in(v, out);
        }
        _ => {}
    }
}

#[test]
fn names_are_unique() {
    let mut classes = HashSet::new();
    for c in CLASSES {
        assert!(
            classes.insert(c.name.to_ascii_lowercase()),
            "class {}",
            c.name
        );
        let mut fields = HashSet::new();
        for f in c.fields {
            assert!(fields.insert(f.name), "field {}.{}", c.name, f.name);
        }
        let mut msgs = HashSet::new();
        for m in c.messages {
            assert!(msgs.insert(m.name), "message {}.{}", c.name, m.name);
            let mut params = HashSet::new();
            for p in m.params {
                assert!(
                    params.insert(p.name),
                    "param {}.{} {}",
                    c.name,
                    m.name,
                    p.name
                );
            }
        }
    }
}

#[test]
fn every_ref_names_a_class() {
    for c in CLASSES {
        let mut refs = Vec::new();
        for f in c.fields {
            refs_in(&f.ty, &mut refs);
        }
        for m in c.messages {
            for p in m.params {
                refs_in(&p.ty, &mut refs);
            }
            if let Some(r) = &m.result {
                refs_in(r, &mut refs);
            }
        }
        for r in refs {
            assert!(class(r).is_some(), "{} refers to unknown class {r}", c.name);
        }
    }
}

#[test]
fn relations_pair_typed_ends() {
    let mut seen = HashSet::new();
    for r in RELATIONS {
        let from = class(r.from_class).expect("from class");
        let to = class(r.to_class).expect("to class");
        let ff = from.field(r.from_field).expect("from field");
        let tf = to.field(r.to_field).expect("to field");
        assert_eq!(
            ff.ty,
            Ty::Ref(r.to_class),
            "{}.{}",
            r.from_class,
            r.from_field
        );
        assert!(
            matches!(tf.ty, Ty::Set(Ty::Ref(c)) if *c == r.from_class),
            "{}.{}",
            r.to_class,
            r.to_field
        );
        assert_eq!(
            tf.qual,
            Qual::DynamicRO,
            "derived {}.{}",
            r.to_class,
            r.to_field
        );
        assert!(
            tf.default.is_none(),
            "derived {}.{} has a default",
            r.to_class,
            r.to_field
        );
        assert!(
            seen.insert((r.to_class, r.to_field)),
            "two relations end at {}.{}",
            r.to_class,
            r.to_field
        );
    }
}

#[test]
fn every_uuid_class_is_stored_and_every_stored_class_has_uuid() {
    for c in CLASSES.iter().filter(|c| c.stored) {
        let u = c
            .field("uuid")
            .unwrap_or_else(|| panic!("{} has no uuid", c.name));
        assert_eq!(u.ty, Ty::String);
    }
}

fn default_fits(ty: &Ty, d: &Default) -> bool {
    match (ty, d) {
        (Ty::String, Default::Str(_)) => true,
        (Ty::Enum(e), Default::Str(s)) => e.has(s),
        (Ty::Int, Default::Int(_)) => true,
        (Ty::Float, Default::Float(_)) => true,
        (Ty::Bool, Default::Bool(_)) => true,
        (Ty::DateTime, Default::Never) => true,
        (Ty::Ref(_), Default::Null) => true,
        (Ty::Set(_) | Ty::Map(..), Default::Empty) => true,
        _ => false,
    }
}

#[test]
fn defaults_fit_their_types() {
    for c in CLASSES {
        for f in c.fields {
            if let Some(d) = &f.default {
                assert!(
                    default_fits(&f.ty, d),
                    "{}.{} default {d:?}",
                    c.name,
                    f.name
                );
            }
            // Records never appear as fields.
            assert!(!matches!(f.ty, Ty::Record(_)), "{}.{}", c.name, f.name);
        }
    }
}

#[test]
fn enums_are_non_empty_and_unique() {
    fn walk(ty: &Ty) {
        match *ty {
            Ty::Enum(e) => {
                assert!(!e.values.is_empty(), "{}", e.name);
                let set: HashSet<_> = e.values.iter().collect();
                assert_eq!(set.len(), e.values.len(), "{}", e.name);
            }
            Ty::Set(t) => walk(t),
            Ty::Map(k, v) => {
                walk(k);
                walk(v);
            }
            _ => {}
        }
    }
    for c in CLASSES {
        c.fields.iter().for_each(|f| walk(&f.ty));
        c.messages
            .iter()
            .for_each(|m| m.params.iter().for_each(|p| walk(&p.ty)));
    }
}

#[test]
fn map_keys_are_strings_ints_enums_or_refs() {
    for c in CLASSES {
        for f in c.fields {
            if let Ty::Map(k, _) = f.ty {
                assert!(
                    matches!(k, Ty::String | Ty::Int | Ty::Enum(_) | Ty::Ref(_)),
                    "{}.{}",
                    c.name,
                    f.name
                );
            }
        }
    }
}

#[test]
fn vm_has_the_fields_clients_read() {
    let vm = class("VM").expect("VM");
    for f in [
        "uuid",
        "name_label",
        "name_description",
        "power_state",
        "allowed_operations",
        "current_operations",
        "is_a_template",
        "is_control_domain",
        "resident_on",
        "VCPUs_max",
        "VCPUs_at_startup",
        "memory_static_max",
        "memory_static_min",
        "memory_dynamic_max",
        "memory_dynamic_min",
        "memory_target",
        "actions_after_shutdown",
        "actions_after_reboot",
        "actions_after_crash",
        "PV_kernel",
        "PV_ramdisk",
        "PV_args",
        "PV_bootloader",
        "HVM_boot_policy",
        "HVM_boot_params",
        "platform",
        "other_config",
        "tags",
        "blocked_operations",
        "VBDs",
        "VIFs",
        "consoles",
        "metrics",
        "guest_metrics",
        "snapshots",
        "snapshot_of",
        "is_a_snapshot",
        "parent",
        "children",
        "domid",
        "domarch",
        "user_version",
        "affinity",
        "xenstore_data",
        "recommendations",
    ] {
        assert!(vm.field(f).is_some(), "VM.{f}");
    }
    assert!(class("VM_metrics")
        .and_then(|c| c.field("start_time"))
        .is_some());
}

#[test]
fn custom_messages_exclude_builtins() {
    let names: Vec<String> = custom_messages()
        .map(|(c, m)| format!("{}.{}", c.name, m.name))
        .collect();
    assert!(names.contains(&"VM.start".to_owned()));
    assert!(!names.contains(&"session.login_with_password".to_owned()));
    assert!(!names.contains(&"event.from".to_owned()));
}
