//! A fast path for the bodies of `filter` and `map`.
//!
//! The interpreter of the `cel` crate allocates several times per element of a comprehension
//! (the loop variable's name, a boxed copy of the element, the qualified-name lookup of
//! `m.provider_id`, the one-element list it appends). Over a thousand models that is
//! milliseconds. So at compile time, a `filter` / `map` whose body uses only the loop variable,
//! literals, field selection, comparisons, `&&` `||` `!` `?:`, `in`, `size`, `contains`,
//! `startsWith`, `endsWith` and `has` is compiled into a [`Native`] tree, and the comprehension
//! is replaced by a call to `@aigw_collect(range, k)`, which walks the tree for each element
//! without allocating. Anything else stays with the interpreter.
//!
//! The semantics are the interpreter's, errors included: values are compared with the same
//! `Val::equals` / `Comparer`, `&&` and `||` absorb errors the same way, and error messages name
//! the same operators and types.

use super::functions::{has_field, select_path_step};
use super::schema::{KINDS, ObjKind};
use super::values::{Data, List, ObjVal};
use cel::ExecutionError;
use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::{CelBool, CelBytes, CelInt, CelString, Kind};
use cel::common::value::{CowVal, Val};
use std::sync::Arc;

/// The function a natively compiled comprehension is replaced by.
pub(crate) const COLLECT: &str = "@aigw_collect";

/// A compiled `filter` / `map`: keep the elements for which `guard` holds (all when `None`),
/// and collect `item` for each.
#[derive(Debug)]
pub(crate) struct Collect {
    guard: Option<Native>,
    item: Native,
}

/// A compiled expression over the loop variable.
#[derive(Debug)]
pub(crate) enum Native {
    Lit(Data),
    Var,
    /// `x.f.g…`: a chain of field selections, each with its position in each kind of object.
    Select(Box<Native>, Box<[Field]>),
    /// `@aigw_path(x, [fields])`: free-form selection.
    Path(Box<Native>, Box<[CelString<'static>]>),
    /// `@aigw_has(x, field)`.
    Has(Box<Native>, CelString<'static>),
    Index(Box<Native>, Box<Native>),
    Eq(Box<Native>, Box<Native>),
    Ne(Box<Native>, Box<Native>),
    Cmp(Cmp, Box<Native>, Box<Native>),
    And(Box<Native>, Box<Native>),
    Or(Box<Native>, Box<Native>),
    Not(Box<Native>),
    In(Box<Native>, Box<Native>),
    Cond(Box<Native>, Box<Native>, Box<Native>),
    /// `contains`, `startsWith`, `endsWith` on a string.
    Str(StrFn, Box<Native>, Box<Native>),
    /// `size(x)` (`member: false`) or `x.size()`.
    Size(Box<Native>, bool),
    /// A common shape over a field path of the loop variable, answered on the stored data.
    Fast(Box<Fast>),
}

/// `m.f.g <test>`: answered directly when the path leads through objects and free-form maps
/// to data of the expected type; otherwise `general`, the same expression as general nodes,
/// answers (with the interpreter's semantics and errors).
#[derive(Debug)]
pub(crate) struct Fast {
    path: Box<[Field]>,
    test: Test,
    general: Native,
}

#[derive(Debug)]
enum Test {
    /// `path == lit` (or `!=` when `negated`).
    Eq { lit: Data, negated: bool },
    /// `path <op> lit`, or `lit <op> path` when `reversed`.
    Cmp { op: Cmp, lit: Data, reversed: bool },
    /// `path in [lits]`.
    InLit(Data),
    /// `lit in path`.
    LitIn(Data),
    /// `path.contains(lit)` and friends.
    Str(StrFn, CelString<'static>),
    /// `path` itself, a bool.
    Bool,
}

/// A field name and its position in each kind of object (`u8::MAX`: none).
#[derive(Debug)]
pub(crate) struct Field {
    name: CelString<'static>,
    slots: [u8; KINDS],
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn operator(self) -> &'static str {
        match self {
            Cmp::Lt => operators::LESS,
            Cmp::Le => operators::LESS_EQUALS,
            Cmp::Gt => operators::GREATER,
            Cmp::Ge => operators::GREATER_EQUALS,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum StrFn {
    Contains,
    StartsWith,
    EndsWith,
}

impl StrFn {
    fn name(self) -> &'static str {
        match self {
            StrFn::Contains => "contains",
            StrFn::StartsWith => "startsWith",
            StrFn::EndsWith => "endsWith",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compiling

/// Names that may be function namespaces: a loop variable so named could make `x.f()` a call of
/// the function `x.f`, so it is left to the interpreter.
const NAMESPACES: &[&str] = &["optional", "strings", "math", "lists", "base64", "cel"];

/// Replaces the natively compilable comprehensions of `e`, innermost first, with calls to
/// [`COLLECT`]; their compiled bodies are appended to `table`.
pub(crate) fn compile_comprehensions(e: &mut IdedExpr, table: &mut Vec<Collect>) {
    match &mut e.expr {
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                compile_comprehensions(part, table);
            }
            if let Some(collect) = collect(c) {
                let range = std::mem::take(&mut c.iter_range);
                let k = IdedExpr {
                    id: e.id,
                    expr: Expr::Literal(LiteralValue::Int(CelInt::from(table.len() as i64))),
                };
                table.push(collect);
                e.expr = Expr::Call(CallExpr {
                    func_name: COLLECT.to_owned(),
                    target: None,
                    args: vec![range, k],
                });
            }
        }
        Expr::Call(call) => {
            if let Some(t) = &mut call.target {
                compile_comprehensions(t, table);
            }
            for a in &mut call.args {
                compile_comprehensions(a, table);
            }
        }
        Expr::Select(s) => compile_comprehensions(&mut s.operand, table),
        Expr::List(l) => {
            for a in &mut l.elements {
                compile_comprehensions(a, table);
            }
        }
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &mut entry.expr {
                    compile_comprehensions(&mut me.key, table);
                    compile_comprehensions(&mut me.value, table);
                }
            }
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// The native form of a `filter` / `map` comprehension:
/// `@result + [item]`, or `guard ? @result + [item] : @result`, from `[]`, always looping.
fn collect(c: &ComprehensionExpr) -> Option<Collect> {
    let accu = c.accu_var.as_str();
    let var = c.iter_var.as_str();
    if c.iter_var2.is_some() || NAMESPACES.contains(&var) || var == accu {
        return None;
    }
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == accu);
    let empty_list = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    let always = matches!(&c.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if *b.inner());
    if !empty_list || !always || !is_accu(&c.result) {
        return None;
    }
    let appended = |e: &IdedExpr| -> Option<Native> {
        let Expr::Call(call) = &e.expr else {
            return None;
        };
        match (
            call.func_name.as_str(),
            call.target.as_ref(),
            call.args.as_slice(),
        ) {
            (operators::ADD, None, [lhs, rhs]) if is_accu(lhs) => match &rhs.expr {
                Expr::List(l) if l.elements.len() == 1 && l.optional_indices.is_empty() => {
                    native(&l.elements[0], var)
                }
                _ => None,
            },
            _ => None,
        }
    };
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == operators::CONDITIONAL && call.target.is_none() => {
            match call.args.as_slice() {
                [guard, step, otherwise] if is_accu(otherwise) => Some(Collect {
                    guard: Some(native(guard, var)?),
                    item: appended(step)?,
                }),
                _ => None,
            }
        }
        _ => Some(Collect {
            guard: None,
            item: appended(&c.loop_step)?,
        }),
    }
}

fn literal(l: &LiteralValue) -> Option<Data> {
    Some(match l {
        LiteralValue::Boolean(b) => Data::Bool(CelBool::from(*b.inner())),
        LiteralValue::Int(i) => Data::Int(CelInt::from(*i.inner())),
        LiteralValue::UInt(u) => Data::UInt(cel::common::types::CelUInt::from(*u.inner())),
        LiteralValue::Double(d) => Data::Double(cel::common::types::CelDouble::from(*d.inner())),
        LiteralValue::String(s) => Data::Str(s.clone()),
        LiteralValue::Null => Data::Null,
        LiteralValue::Bytes(_) => return None,
    })
}

fn string_literal(e: &IdedExpr) -> Option<CelString<'static>> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// `e` compiled over the loop variable `var`, if every part of it is supported, with the
/// common shapes made [`Native::Fast`].
fn native(e: &IdedExpr, var: &str) -> Option<Native> {
    general(e, var).map(optimize)
}

/// Makes the common shapes of `n` and its operands [`Native::Fast`]. A fast node has the same
/// value as the node it replaces, so any operand may become one.
fn optimize(n: Native) -> Native {
    let n = fast(n);
    let o = |b: Box<Native>| Box::new(optimize(*b));
    match n {
        Native::Eq(a, b) => Native::Eq(o(a), o(b)),
        Native::Ne(a, b) => Native::Ne(o(a), o(b)),
        Native::Cmp(op, a, b) => Native::Cmp(op, o(a), o(b)),
        Native::And(a, b) => Native::And(o(a), o(b)),
        Native::Or(a, b) => Native::Or(o(a), o(b)),
        Native::Not(a) => Native::Not(o(a)),
        Native::In(a, b) => Native::In(o(a), o(b)),
        Native::Cond(c, a, b) => Native::Cond(o(c), o(a), o(b)),
        Native::Str(f, a, b) => Native::Str(f, o(a), o(b)),
        Native::Size(a, member) => Native::Size(o(a), member),
        Native::Index(a, b) => Native::Index(o(a), o(b)),
        Native::Has(a, field) => Native::Has(o(a), field),
        Native::Path(a, fields) => Native::Path(o(a), fields),
        other @ (Native::Lit(_) | Native::Var | Native::Select(..) | Native::Fast(_)) => other,
    }
}

/// The field path of the loop variable `n` reads, if it is one.
fn var_path(n: &Native) -> Option<&[Field]> {
    match n {
        Native::Select(base, fields) if matches!(**base, Native::Var) => Some(fields),
        _ => None,
    }
}

fn lit(n: &Native) -> Option<&Data> {
    match n {
        Native::Lit(d) => Some(d),
        _ => None,
    }
}

fn clone_path(fields: &[Field]) -> Box<[Field]> {
    fields
        .iter()
        .map(|f| Field {
            name: f.name.clone(),
            slots: f.slots,
        })
        .collect()
}

/// `n`, or its [`Native::Fast`] form.
fn fast(n: Native) -> Native {
    let shape = match &n {
        Native::Eq(a, b) | Native::Ne(a, b) => {
            let negated = matches!(n, Native::Ne(..));
            match (var_path(a), lit(b), lit(a), var_path(b)) {
                (Some(p), Some(l), _, _) | (_, _, Some(l), Some(p)) => Some((
                    p,
                    Test::Eq {
                        lit: l.clone(),
                        negated,
                    },
                )),
                _ => None,
            }
        }
        Native::Cmp(op, a, b) => match (var_path(a), lit(b), lit(a), var_path(b)) {
            (Some(p), Some(l), _, _) => Some((
                p,
                Test::Cmp {
                    op: *op,
                    lit: l.clone(),
                    reversed: false,
                },
            )),
            (_, _, Some(l), Some(p)) => Some((
                p,
                Test::Cmp {
                    op: *op,
                    lit: l.clone(),
                    reversed: true,
                },
            )),
            _ => None,
        },
        Native::In(a, b) => match (var_path(a), lit(b), lit(a), var_path(b)) {
            (Some(p), Some(l @ Data::List(_)), _, _) => Some((p, Test::InLit(l.clone()))),
            (_, _, Some(l), Some(p)) => Some((p, Test::LitIn(l.clone()))),
            _ => None,
        },
        Native::Str(f, a, b) => match (var_path(a), lit(b)) {
            (Some(p), Some(Data::Str(s))) => Some((p, Test::Str(*f, s.clone()))),
            _ => None,
        },
        Native::Select(..) => var_path(&n).map(|p| (p, Test::Bool)),
        _ => None,
    };
    match shape {
        Some((path, test)) => {
            let path = clone_path(path);
            Native::Fast(Box::new(Fast {
                path,
                test,
                general: n,
            }))
        }
        None => n,
    }
}

/// `e` compiled over the loop variable `var`, if every part of it is supported.
fn general(e: &IdedExpr, var: &str) -> Option<Native> {
    let n = |e: &IdedExpr| general(e, var).map(Box::new);
    Some(match &e.expr {
        Expr::Literal(l) => Native::Lit(literal(l)?),
        Expr::Ident(name) if name == var => Native::Var,
        Expr::Select(s) if !s.test => {
            let field = Field {
                name: CelString::from(s.field.clone()),
                slots: ObjKind::slots(&s.field),
            };
            match *n(&s.operand)? {
                Native::Select(base, fields) => {
                    let mut fields = fields.into_vec();
                    fields.push(field);
                    Native::Select(base, fields.into())
                }
                operand => Native::Select(Box::new(operand), Box::new([field])),
            }
        }
        Expr::List(l) if l.optional_indices.is_empty() => {
            let items = l
                .elements
                .iter()
                .map(|item| match &item.expr {
                    Expr::Literal(lit) => literal(lit),
                    _ => None,
                })
                .collect::<Option<Vec<Data>>>()?;
            Native::Lit(Data::List(List(items.into())))
        }
        Expr::Call(call) => {
            let name = call.func_name.as_str();
            match (call.target.as_deref(), call.args.as_slice()) {
                (None, [a, b]) => match name {
                    operators::EQUALS => Native::Eq(n(a)?, n(b)?),
                    operators::NOT_EQUALS => Native::Ne(n(a)?, n(b)?),
                    operators::LESS => Native::Cmp(Cmp::Lt, n(a)?, n(b)?),
                    operators::LESS_EQUALS => Native::Cmp(Cmp::Le, n(a)?, n(b)?),
                    operators::GREATER => Native::Cmp(Cmp::Gt, n(a)?, n(b)?),
                    operators::GREATER_EQUALS => Native::Cmp(Cmp::Ge, n(a)?, n(b)?),
                    operators::LOGICAL_AND => Native::And(n(a)?, n(b)?),
                    operators::LOGICAL_OR => Native::Or(n(a)?, n(b)?),
                    operators::IN => Native::In(n(a)?, n(b)?),
                    operators::INDEX => Native::Index(n(a)?, n(b)?),
                    super::functions::HAS => Native::Has(n(a)?, string_literal(b)?),
                    super::functions::PATH => match &b.expr {
                        Expr::List(l) => Native::Path(
                            n(a)?,
                            l.elements
                                .iter()
                                .map(string_literal)
                                .collect::<Option<Vec<_>>>()?
                                .into(),
                        ),
                        _ => return None,
                    },
                    _ => return None,
                },
                (None, [a]) => match name {
                    operators::LOGICAL_NOT => Native::Not(n(a)?),
                    "size" => Native::Size(n(a)?, false),
                    _ => return None,
                },
                (None, [c, a, b]) if name == operators::CONDITIONAL => {
                    Native::Cond(n(c)?, n(a)?, n(b)?)
                }
                (Some(target), [arg]) => {
                    let f = match name {
                        "contains" => StrFn::Contains,
                        "startsWith" => StrFn::StartsWith,
                        "endsWith" => StrFn::EndsWith,
                        _ => return None,
                    };
                    Native::Str(f, n(target)?, n(arg)?)
                }
                (Some(target), []) if name == "size" => Native::Size(n(target)?, true),
                _ => return None,
            }
        }
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Evaluating

/// A value during native evaluation: stored data (a field, a literal), another borrowed
/// value, or one computed here. Stored data is handled without dynamic dispatch where the
/// interpreter's semantics allow; everything else goes through `Val`.
pub(crate) enum NV<'b, 'v> {
    Data(&'b Data),
    Obj(&'b ObjVal),
    Ref(&'b (dyn Val + 'v)),
    Int(CelInt),
    Owned(Box<dyn Val + 'v>),
}

impl<'b, 'v> NV<'b, 'v> {
    fn val(&self) -> &(dyn Val + 'v) {
        match self {
            NV::Data(d) => d.as_val(),
            NV::Obj(o) => *o,
            NV::Ref(v) => *v,
            NV::Int(i) => i,
            NV::Owned(b) => b.as_ref(),
        }
    }

    fn into_boxed(self) -> Box<dyn Val + 'v> {
        match self {
            NV::Data(d) => d.as_val().clone_as_boxed(),
            NV::Obj(o) => Box::new((*o).clone()),
            NV::Ref(v) => v.clone_as_boxed(),
            NV::Int(i) => Box::new(i),
            NV::Owned(b) => b,
        }
    }

    /// A value the interpreter handed back as a `CowVal`.
    pub(crate) fn from_cow(v: CowVal<'b, 'v>) -> Self {
        match v {
            CowVal::Borrowed(b) => NV::Ref(b),
            CowVal::Owned(o) => NV::Owned(o),
        }
    }

    /// The object this is, if it is one.
    #[inline]
    fn object(&self) -> Option<&'b ObjVal> {
        match self {
            NV::Data(Data::Obj(o)) => Some(o),
            NV::Obj(o) => Some(o),
            NV::Ref(r) => r.downcast_ref::<ObjVal>(),
            _ => None,
        }
    }
}

/// The element a comprehension is at, with the object it is, found once.
#[derive(Clone, Copy)]
pub(crate) struct Elem<'b, 'v> {
    val: &'b (dyn Val + 'v),
    obj: Option<&'b ObjVal>,
}

impl<'b, 'v> Elem<'b, 'v> {
    fn new(val: &'b (dyn Val + 'v)) -> Self {
        Elem {
            val,
            obj: val.downcast_ref::<ObjVal>(),
        }
    }

    #[inline]
    fn nv(self) -> NV<'b, 'v> {
        match self.obj {
            Some(o) => NV::Obj(o),
            None => NV::Ref(self.val),
        }
    }
}

/// `a == b` for stored scalars of one type, as `Val::equals` answers it; `None` otherwise.
#[inline]
fn data_eq(a: &Data, b: &Data) -> Option<bool> {
    Some(match (a, b) {
        (Data::Str(a), Data::Str(b)) => a.inner() == b.inner(),
        (Data::Int(a), Data::Int(b)) => a.inner() == b.inner(),
        (Data::Bool(a), Data::Bool(b)) => a.inner() == b.inner(),
        (Data::Double(a), Data::Double(b)) => a.inner() == b.inner(),
        (Data::Null, Data::Null) => true,
        _ => return None,
    })
}

fn equals(a: &NV<'_, '_>, b: &NV<'_, '_>) -> bool {
    if let (NV::Data(x), NV::Data(y)) = (a, b)
        && let Some(eq) = data_eq(x, y)
    {
        return eq;
    }
    a.val().equals(b.val())
}

/// `a <op> b` for stored scalars of one type, as the `Comparer`s answer it; `None` otherwise.
#[inline]
fn data_cmp(a: &Data, b: &Data) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Data::Int(a), Data::Int(b)) => Some(a.inner().cmp(b.inner())),
        (Data::Double(a), Data::Double(b)) => a.inner().partial_cmp(b.inner()),
        (Data::Str(a), Data::Str(b)) => Some(a.inner().cmp(b.inner())),
        _ => None,
    }
}

static TRUE: Data = Data::Bool(CelBool::TRUE);
static FALSE: Data = Data::Bool(CelBool::FALSE);
static NULL: Data = Data::Null;

#[inline]
fn boolean<'b, 'v>(b: bool) -> NV<'b, 'v> {
    NV::Data(if b { &TRUE } else { &FALSE })
}

fn type_name(v: &dyn Val) -> String {
    v.get_type().name().to_owned()
}

fn overload(operator: &str, args: &[&dyn Val]) -> ExecutionError {
    ExecutionError::no_such_overload(operator, args.iter().map(|a| type_name(*a)).collect())
}

/// The errors the interpreter reports as "no matching overload" for an operator.
fn as_overload(e: ExecutionError, operator: &str, args: &[&dyn Val]) -> ExecutionError {
    match e {
        ExecutionError::NoSuchOverload(_)
        | ExecutionError::ValuesNotComparable(..)
        | ExecutionError::UnsupportedKeyType(_)
        | ExecutionError::UnexpectedType { .. } => overload(operator, args),
        other => other,
    }
}

/// Results of native evaluation; errors are boxed to keep the hot path's values small.
type Res<T> = Result<T, Box<ExecutionError>>;

#[inline(always)]
fn try_bool(v: Res<NV<'_, '_>>) -> Res<bool> {
    let v = v?;
    if let NV::Data(Data::Bool(b)) = v {
        return Ok(*b.inner());
    }
    v.val()
        .downcast_ref::<CelBool>()
        .map(|b| *b.inner())
        .ok_or_else(|| {
            Box::new(ExecutionError::UnexpectedType {
                got: type_name(v.val()),
                want: "bool".to_owned(),
            })
        })
}

/// `&&` and `||` as the interpreter evaluates them: the absorbing value wins over an error on
/// either side.
fn logical<'b, 'v>(
    operator: &str,
    absorbing: bool,
    a: &'b Native,
    b: &'b Native,
    var: Elem<'b, 'v>,
) -> Res<NV<'b, 'v>> {
    let left = truth(a, var);
    if matches!(left, Ok(l) if l == absorbing) {
        return Ok(boolean(absorbing));
    }
    let right_value = operand(b, var)?;
    let right = match right_value {
        NV::Data(Data::Bool(b)) => Some(*b.inner()),
        ref other => other.val().downcast_ref::<CelBool>().map(|b| *b.inner()),
    };
    match (left, right) {
        (Ok(_), Some(r)) => Ok(boolean(r)),
        (Err(_), Some(r)) if r == absorbing => Ok(boolean(absorbing)),
        (Err(e), _) => match *e {
            ExecutionError::UnexpectedType { got, want } if want == "bool" => Err(Box::new(
                ExecutionError::no_such_overload(operator, vec![got, type_name(right_value.val())]),
            )),
            e => Err(Box::new(e)),
        },
        (Ok(_), None) => Err(Box::new(ExecutionError::no_such_overload(
            operator,
            vec!["bool".to_owned(), type_name(right_value.val())],
        ))),
    }
}

/// `v.field`, as the interpreter selects it; `slots` as in [`Field`].
#[inline]
fn select<'b, 'v>(
    v: NV<'b, 'v>,
    field: &CelString<'static>,
    slots: Option<&[u8; KINDS]>,
) -> Res<NV<'b, 'v>> {
    if let Some(obj) = v.object() {
        let found = match slots {
            Some(slots) => obj.field_at(slots),
            None => obj.field(field.inner()),
        };
        return found
            .map(NV::Data)
            .ok_or_else(|| Box::new(ExecutionError::no_such_key(field.inner())));
    }
    match v {
        NV::Data(Data::Map(map)) => match map.lookup(field.inner()) {
            Some(d) => Ok(NV::Data(d)),
            None if map.is_free_form() => Ok(NV::Data(&NULL)),
            None => Err(Box::new(ExecutionError::no_such_key(field.inner()))),
        },
        NV::Data(d) => Ok(select_path_step(d.as_val(), field).map(NV::from_cow)?),
        NV::Ref(r) => Ok(select_path_step(r, field).map(NV::from_cow)?),
        other => {
            let owned = select_path_step(other.val(), field)?.into_owned();
            Ok(NV::Owned(owned))
        }
    }
}

/// Evaluates `n`, without a call for the leaves.
#[inline(always)]
fn operand<'b, 'v>(n: &'b Native, var: Elem<'b, 'v>) -> Res<NV<'b, 'v>> {
    match n {
        Native::Var => Ok(var.nv()),
        Native::Lit(d) => Ok(NV::Data(d)),
        other => eval(other, var),
    }
}

/// Evaluates `n` with the loop variable bound to `var`. The frequent nodes are handled here;
/// the rest out of line, to keep this function's frame small.
pub(crate) fn eval<'b, 'v>(n: &'b Native, var: Elem<'b, 'v>) -> Res<NV<'b, 'v>> {
    Ok(match n {
        Native::Lit(d) => NV::Data(d),
        Native::Var => var.nv(),
        Native::Select(x, fields) => {
            let mut node = operand(x, var)?;
            for f in fields.iter() {
                node = select(node, &f.name, Some(&f.slots))?;
            }
            node
        }
        Native::Eq(a, b) => {
            let (a, b) = (operand(a, var)?, operand(b, var)?);
            boolean(equals(&a, &b))
        }
        Native::Ne(a, b) => {
            let (a, b) = (operand(a, var)?, operand(b, var)?);
            boolean(!equals(&a, &b))
        }
        Native::Cmp(op, a, b) => {
            let (a, b) = (operand(a, var)?, operand(b, var)?);
            let ordering = match (&a, &b) {
                (NV::Data(x), NV::Data(y)) => match data_cmp(x, y) {
                    Some(o) => o,
                    None => compare(*op, &a, &b)?,
                },
                _ => compare(*op, &a, &b)?,
            };
            boolean(match op {
                Cmp::Lt => ordering.is_lt(),
                Cmp::Le => ordering.is_le(),
                Cmp::Gt => ordering.is_gt(),
                Cmp::Ge => ordering.is_ge(),
            })
        }
        Native::And(a, b) => logical(operators::LOGICAL_AND, false, a, b, var)?,
        Native::Or(a, b) => logical(operators::LOGICAL_OR, true, a, b, var)?,
        Native::Not(a) => match operand(a, var)? {
            NV::Data(Data::Bool(b)) => boolean(!*b.inner()),
            other => boolean(!bool_operand(&other)?),
        },
        Native::In(a, b) => {
            let (a, b) = (operand(a, var)?, operand(b, var)?);
            if let (NV::Data(x), NV::Data(Data::List(list))) = (&a, &b) {
                boolean(list.0.iter().any(|item| {
                    data_eq(item, x).unwrap_or_else(|| item.as_val().equals(x.as_val()))
                }))
            } else {
                boolean(contains(&a, &b)?)
            }
        }
        Native::Cond(c, a, b) => {
            if truth(c, var)? {
                operand(a, var)?
            } else {
                operand(b, var)?
            }
        }
        Native::Str(f, s, arg) => {
            let (s, arg) = (operand(s, var)?, operand(arg, var)?);
            match (&s, &arg) {
                (NV::Data(Data::Str(s)), NV::Data(Data::Str(p))) => {
                    boolean(string_fn(*f, s.inner(), p.inner()))
                }
                _ => boolean(string_fn_dyn(*f, &s, &arg)?),
            }
        }
        Native::Fast(f) => match f.test(var) {
            Some(b) => boolean(b),
            None => operand(&f.general, var)?,
        },
        other => rare(other, var)?,
    })
}

/// The truth of `n`, as `try_bool(operand(n, var))`, without building a value for the common
/// shapes.
#[inline]
fn truth<'b, 'v>(n: &'b Native, var: Elem<'b, 'v>) -> Res<bool> {
    match n {
        Native::Fast(f) => {
            if let Some(b) = f.test(var) {
                return Ok(b);
            }
        }
        Native::And(a, b) => return truth_logical(n, false, a, b, var),
        Native::Or(a, b) => return truth_logical(n, true, a, b, var),
        Native::Not(a) => {
            if let Ok(b) = truth(a, var) {
                return Ok(!b);
            }
        }
        _ => {}
    }
    try_bool(operand(n, var))
}

/// `a && b` / `a || b` as a bool: when both sides are bools or the absorbing value decides,
/// directly; otherwise (errors) through the general evaluation, which builds the same error.
fn truth_logical<'b, 'v>(
    n: &'b Native,
    absorbing: bool,
    a: &'b Native,
    b: &'b Native,
    var: Elem<'b, 'v>,
) -> Res<bool> {
    let left = truth(a, var);
    if matches!(left, Ok(l) if l == absorbing) {
        return Ok(absorbing);
    }
    match (left, truth(b, var)) {
        (Ok(_), Ok(r)) => Ok(r),
        (Err(_), Ok(r)) if r == absorbing => Ok(absorbing),
        _ => try_bool(eval(n, var)),
    }
}

impl Fast {
    /// The data at the path, if it only goes through objects and free-form maps.
    #[inline]
    fn walk<'b>(&self, obj: &'b ObjVal) -> Option<&'b Data> {
        let (first, rest) = self.path.split_first()?;
        let mut d = obj.field_at(&first.slots)?;
        for f in rest {
            d = match d {
                Data::Obj(o) => o.field_at(&f.slots)?,
                Data::Map(m) => match m.lookup(f.name.inner()) {
                    Some(x) => x,
                    None if m.is_free_form() => &NULL,
                    None => return None,
                },
                _ => return None,
            };
        }
        Some(d)
    }

    /// The answer, when the stored data allows one without the general path.
    #[inline]
    fn test(&self, var: Elem<'_, '_>) -> Option<bool> {
        let d = self.walk(var.obj?)?;
        match &self.test {
            Test::Eq { lit, negated } => data_eq(d, lit).map(|eq| eq != *negated),
            Test::Cmp { op, lit, reversed } => {
                let ordering = if *reversed {
                    data_cmp(lit, d)?
                } else {
                    data_cmp(d, lit)?
                };
                Some(match op {
                    Cmp::Lt => ordering.is_lt(),
                    Cmp::Le => ordering.is_le(),
                    Cmp::Gt => ordering.is_gt(),
                    Cmp::Ge => ordering.is_ge(),
                })
            }
            Test::InLit(Data::List(items)) => {
                let mut found = false;
                for item in items.0.iter() {
                    found |= data_eq(item, d)?;
                }
                Some(found)
            }
            Test::InLit(_) => None,
            Test::LitIn(lit) => match d {
                Data::List(items) => {
                    let mut found = false;
                    for item in items.0.iter() {
                        found |= data_eq(item, lit)?;
                    }
                    Some(found)
                }
                _ => None,
            },
            Test::Str(f, p) => match d {
                Data::Str(s) => Some(string_fn(*f, s.inner(), p.inner())),
                _ => None,
            },
            Test::Bool => match d {
                Data::Bool(b) => Some(*b.inner()),
                _ => None,
            },
        }
    }
}

/// The operand of `!`, which must be a bool.
#[inline(never)]
fn bool_operand(a: &NV<'_, '_>) -> Res<bool> {
    a.val()
        .downcast_ref::<CelBool>()
        .map(|b| *b.inner())
        .ok_or_else(|| Box::new(overload(operators::LOGICAL_NOT, &[a.val()])))
}

#[inline(never)]
fn compare(op: Cmp, a: &NV<'_, '_>, b: &NV<'_, '_>) -> Res<std::cmp::Ordering> {
    let (l, r) = (a.val(), b.val());
    Ok(l.as_comparer()
        .ok_or_else(|| overload(op.operator(), &[l, r]))?
        .compare(r)
        .map_err(|e| as_overload(e, op.operator(), &[l, r]))?)
}

#[inline(never)]
fn contains(a: &NV<'_, '_>, b: &NV<'_, '_>) -> Res<bool> {
    let (l, r) = (a.val(), b.val());
    let container = r
        .as_container()
        .ok_or_else(|| overload(operators::IN, &[l, r]))?;
    Ok(container
        .contains(l)
        .map_err(|e| as_overload(e, operators::IN, &[l, r]))?)
}

/// `contains`, `startsWith`, `endsWith`.
#[inline]
fn string_fn(f: StrFn, s: &str, p: &str) -> bool {
    match f {
        StrFn::Contains => {
            // Short haystacks, the common case, are searched directly.
            let (h, n) = (s.as_bytes(), p.as_bytes());
            match n.first() {
                None => true,
                Some(&first) if h.len() <= 64 => {
                    h.len() >= n.len()
                        && (0..=h.len() - n.len()).any(|i| h[i] == first && &h[i..i + n.len()] == n)
                }
                Some(_) => s.contains(p),
            }
        }
        StrFn::StartsWith => s.starts_with(p),
        StrFn::EndsWith => s.ends_with(p),
    }
}

#[inline(never)]
fn string_fn_dyn(f: StrFn, s: &NV<'_, '_>, arg: &NV<'_, '_>) -> Res<bool> {
    match (
        s.val().downcast_ref::<CelString>(),
        arg.val().downcast_ref::<CelString>(),
    ) {
        (Some(s), Some(p)) => Ok(string_fn(f, s.inner(), p.inner())),
        _ => Err(Box::new(ExecutionError::no_such_member_overload(
            f.name(),
            vec![type_name(s.val()), type_name(arg.val())],
        ))),
    }
}

/// The less frequent nodes.
#[inline(never)]
fn rare<'b, 'v>(n: &'b Native, var: Elem<'b, 'v>) -> Res<NV<'b, 'v>> {
    Ok(match n {
        Native::Path(x, fields) => {
            let mut node = operand(x, var)?;
            for field in fields.iter() {
                if node.val().get_type().kind() == Kind::NullType {
                    return Ok(NV::Data(&NULL));
                }
                node = select(node, field, None)?;
            }
            node
        }
        Native::Has(x, field) => boolean(has_field(operand(x, var)?.val(), field.inner())?),
        Native::Index(x, i) => {
            let container = operand(x, var)?;
            let index = operand(i, var)?;
            let get = |c: &dyn Val| -> Res<()> {
                c.as_indexer()
                    .map(|_| ())
                    .ok_or_else(|| Box::new(overload(operators::INDEX, &[c, index.val()])))
            };
            match container {
                NV::Ref(c) => {
                    get(c)?;
                    let found = c.as_indexer().expect("checked").get(index.val());
                    NV::from_cow(
                        found.map_err(|e| as_overload(e, operators::INDEX, &[c, index.val()]))?,
                    )
                }
                NV::Obj(c) => {
                    let found = c.as_indexer().expect("an object").get(index.val());
                    NV::from_cow(
                        found.map_err(|e| as_overload(e, operators::INDEX, &[c, index.val()]))?,
                    )
                }
                NV::Data(d) => {
                    let c = d.as_val();
                    get(c)?;
                    let found = c.as_indexer().expect("checked").get(index.val());
                    NV::from_cow(
                        found.map_err(|e| as_overload(e, operators::INDEX, &[c, index.val()]))?,
                    )
                }
                other => {
                    let c = other.val();
                    get(c)?;
                    let found = c.as_indexer().expect("checked").get(index.val());
                    NV::Owned(
                        found
                            .map_err(|e| as_overload(e, operators::INDEX, &[c, index.val()]))?
                            .into_owned(),
                    )
                }
            }
        }
        Native::Size(x, member) => {
            let x = operand(x, var)?;
            let v = x.val();
            let size = if let Some(s) = v.downcast_ref::<CelString>() {
                s.inner().chars().count() as i64
            } else if let Some(b) = v.downcast_ref::<CelBytes>() {
                b.inner().len() as i64
            } else if matches!(v.get_type().kind(), Kind::List | Kind::Map)
                && let Some(sizer) = v.as_sizer()
            {
                *sizer.size().inner()
            } else if *member {
                return Err(Box::new(ExecutionError::no_such_member_overload(
                    "size",
                    vec![type_name(v)],
                )));
            } else {
                return Err(Box::new(ExecutionError::no_such_overload(
                    "size",
                    vec![type_name(v)],
                )));
            };
            NV::Int(CelInt::from(size))
        }
        _ => unreachable!("eval handles the other nodes"),
    })
}

// ---------------------------------------------------------------------------------------------
// The table of the strategy being evaluated

thread_local! {
    static TABLE: std::cell::RefCell<Option<Arc<[Collect]>>> = const { std::cell::RefCell::new(None) };
}

/// Makes `table` the compiled comprehensions of this thread's evaluation; clears on drop.
pub(crate) struct Installed(());

impl Installed {
    pub(crate) fn new(table: &Arc<[Collect]>) -> Installed {
        TABLE.with(|t| *t.borrow_mut() = Some(table.clone()));
        Installed(())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        TABLE.with(|t| *t.borrow_mut() = None);
    }
}

/// `@aigw_collect(range, k)`: runs compiled comprehension `k` over `range`.
/// Declares [`COLLECT`], the overload compiled comprehensions run through.
pub(crate) fn register(env: &mut cel::Env) -> Result<(), cel::DeclarationError> {
    env.add_overload(
        COLLECT,
        "@aigw_collect(dyn,int)",
        vec![cel::common::types::DYN_TYPE, cel::common::types::INT_TYPE],
        collect_fn,
    )
}

pub(crate) fn collect_fn<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let k = args[1]
        .downcast_ref::<CelInt>()
        .and_then(|k| usize::try_from(*k.inner()).ok())
        .ok_or_else(|| ExecutionError::function_error(COLLECT, "bad comprehension index"))?;
    let table = TABLE.with(|t| t.borrow().clone()).ok_or_else(|| {
        ExecutionError::function_error(COLLECT, "no compiled comprehensions installed")
    })?;
    let c = table
        .get(k)
        .ok_or_else(|| ExecutionError::function_error(COLLECT, "bad comprehension index"))?;
    let range = &*args[0];
    let iterable = range
        .as_iterable()
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: type_name(range),
            want: "iterable".to_owned(),
        })?;
    let mut items = iterable.iter();
    // Kept objects go into a list of their own, without a box each; anything else (map keys,
    // computed values) into a `CelList`.
    let mut objects: Vec<ObjVal> = Vec::new();
    let mut others: Vec<Box<dyn Val + 'v>> = Vec::new();
    while let Some(item) = items.next() {
        let elem = Elem::new(item);
        if let Some(guard) = &c.guard
            && !truth(guard, elem).map_err(|e| *e)?
        {
            continue;
        }
        let value = operand(&c.item, elem).map_err(|e| *e)?;
        if others.is_empty()
            && let Some(obj) = value.object()
        {
            objects.push(obj.clone());
            continue;
        }
        if !objects.is_empty() {
            others.extend(objects.drain(..).map(|o| Box::new(o) as Box<dyn Val + 'v>));
        }
        others.push(value.into_boxed());
    }
    if others.is_empty() {
        Ok(CowVal::owned(List(objects)))
    } else {
        Ok(CowVal::owned(cel::common::types::CelList::from(others)))
    }
}
