//! The meta-model: what a class, a field, a message and a relation are.
//!
//! Modelled on XAPI's `ocaml/idl/datamodel_types.ml`, kept lean. Everything is `const`
//! data; the database schema, the generic calls and the docs are derived from it at run time.

use crate::error::ErrorCode;

/// A field's or parameter's type, as XenAPI's `ty`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    String,
    Int,
    Float,
    Bool,
    /// `dateTime.iso8601`, always UTC.
    DateTime,
    Enum(&'static EnumType),
    /// A reference to an object of the named class.
    Ref(&'static str),
    Set(&'static Ty),
    Map(&'static Ty, &'static Ty),
    /// A whole record of the named class (only as a message result or parameter).
    Record(&'static str),
}

/// A named enumeration, values spelt exactly as XenAPI does.
#[derive(Debug, PartialEq)]
pub struct EnumType {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

impl EnumType {
    pub fn has(&self, v: &str) -> bool {
        self.values.contains(&v)
    }
}

/// Who may change a field, as XAPI's `qualifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qual {
    /// Read/write: a generated setter and a `create` parameter.
    RW,
    /// Set at creation only (`create` parameter, no setter).
    StaticRO,
    /// Maintained by the server; neither setter nor `create` parameter.
    DynamicRO,
}

/// A field's default value, used by `create` and for `DynamicRO` fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// The empty set or map.
    Empty,
    /// `OpaqueRef:NULL`.
    Null,
    /// The epoch, XAPI's `Date.never`.
    Never,
}

/// The six XenAPI roles, weakest first: each includes every role before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    ReadOnly,
    VmOperator,
    VmAdmin,
    VmPowerAdmin,
    PoolOperator,
    PoolAdmin,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::ReadOnly,
        Role::VmOperator,
        Role::VmAdmin,
        Role::VmPowerAdmin,
        Role::PoolOperator,
        Role::PoolAdmin,
    ];

    /// XenAPI's name of the role (`role.name_label`).
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::VmOperator => "vm-operator",
            Role::VmAdmin => "vm-admin",
            Role::VmPowerAdmin => "vm-power-admin",
            Role::PoolOperator => "pool-operator",
            Role::PoolAdmin => "pool-admin",
        }
    }

    /// The role named `name`, case-insensitively as XAPI compares role names.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// The role directly below this one, if any.
    pub fn below(self) -> Option<Role> {
        let i = Role::ALL.iter().position(|r| *r == self)?;
        i.checked_sub(1).map(|j| Role::ALL[j])
    }
}

/// One field of a class.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub qual: Qual,
    /// `None` for a field `create` requires (RW/StaticRO), or whose zero value is used (DynamicRO).
    pub default: Option<Default>,
    /// The role its setters need; `None` means the class's default.
    pub writer: Option<Role>,
    pub doc: &'static str,
}

impl Field {
    pub const fn new(name: &'static str, ty: Ty, qual: Qual, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            qual,
            default: None,
            writer: None,
            doc,
        }
    }

    /// With a default value.
    pub const fn def(self, d: Default) -> Field {
        Field {
            default: Some(d),
            ..self
        }
    }

    /// With the role its setters need.
    pub const fn writer(self, r: Role) -> Field {
        Field {
            writer: Some(r),
            ..self
        }
    }
}

/// A read/write field.
pub const fn rw(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field::new(name, ty, Qual::RW, doc)
}

/// A field set at creation only.
pub const fn sro(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field::new(name, ty, Qual::StaticRO, doc)
}

/// A field only the server changes.
pub const fn dro(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field::new(name, ty, Qual::DynamicRO, doc)
}

/// One parameter of a message.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
}

/// A shorthand for a [`Param`].
pub const fn p(name: &'static str, ty: Ty, doc: &'static str) -> Param {
    Param { name, ty, doc }
}

/// A custom (hand-implemented) message of a class: `VM.start` and the like.
///
/// The session parameter is implicit (as in XAPI's model); `params` are the others.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    pub name: &'static str,
    pub params: &'static [Param],
    /// `None` for a call that returns nothing (`""` on the wire).
    pub result: Option<Ty>,
    pub errors: &'static [&'static ErrorCode],
    pub min_role: Role,
    /// Whether an `Async.` twin exists.
    pub is_async: bool,
    /// Whether it changes anything (read-only messages are served to the read-only role).
    pub has_effect: bool,
    pub doc: &'static str,
}

/// A message with effect, synchronous only; chain [`Message::asyn`] and [`Message::pure`].
pub const fn call(
    name: &'static str,
    params: &'static [Param],
    result: Option<Ty>,
    errors: &'static [&'static ErrorCode],
    min_role: Role,
    doc: &'static str,
) -> Message {
    Message {
        name,
        params,
        result,
        errors,
        min_role,
        is_async: false,
        has_effect: true,
        doc,
    }
}

impl Message {
    /// With an `Async.` twin.
    pub const fn asyn(self) -> Message {
        Message {
            is_async: true,
            ..self
        }
    }

    /// Without side effects.
    pub const fn pure(self) -> Message {
        Message {
            has_effect: false,
            ..self
        }
    }
}

/// How `create`/`destroy` come about for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Neither exists as a call; the daemon creates and destroys records itself.
    Internal,
    /// Generic `create` and `destroy` served from the database.
    Generic,
}

/// A class of the object model.
#[derive(Debug)]
pub struct Class {
    /// The XenAPI name, exact case (`VM`, `host_metrics`).
    pub name: &'static str,
    pub doc: &'static str,
    /// Every field, including the derived back-reference sets, in record order.
    pub fields: &'static [Field],
    pub messages: &'static [Message],
    /// Generic create/destroy or none; a custom `create`/`destroy` message overrides.
    pub lifecycle: Lifecycle,
    /// The role for setters of fields without their own `writer`, and for create/destroy.
    pub default_role: Role,
    /// Whether records live in the database (all but `event`).
    pub stored: bool,
}

impl Class {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn message(&self, name: &str) -> Option<&'static Message> {
        self.messages.iter().find(|m| m.name == name)
    }

    /// Whether `get_by_name_label` exists: the class has a `name_label` field.
    pub fn by_name(&self) -> bool {
        self.field("name_label").is_some()
    }
}

/// The two ends of a reference: `from_class.from_field` is a stored `Ref`, and
/// `to_class.to_field` is the `Set` of refs back, derived by query and never stored.
#[derive(Debug, Clone, Copy)]
pub struct Relation {
    pub from_class: &'static str,
    pub from_field: &'static str,
    pub to_class: &'static str,
    pub to_field: &'static str,
}

/// A shorthand for a [`Relation`]: `rel("VBD", "VM", "VM", "VBDs")`.
pub const fn rel(
    from_class: &'static str,
    from_field: &'static str,
    to_class: &'static str,
    to_field: &'static str,
) -> Relation {
    Relation {
        from_class,
        from_field,
        to_class,
        to_field,
    }
}

/// Shorthands for common types.
pub mod t {
    use super::Ty;
    pub const STR_SET: Ty = Ty::Set(&Ty::String);
    pub const STR_MAP: Ty = Ty::Map(&Ty::String, &Ty::String);
}
