//! The CEL environment: the standard library, the strings extension, and ngrok's collection
//! functions, declared once as overloads of a shared [`Env`].
//!
//! Overloads are plain functions, so the one input they need beyond their arguments, the seeded
//! random generator of `random()` / `randomize()`, lives in a thread-local that an evaluation
//! sets up and clears (evaluation is synchronous, so it never spans threads).

use super::schema::{ObjKind, PRICE_TYPES, price_index};
use super::values::{List, NULL, ObjVal};
use cel::ExecutionError;
use cel::common::ast::{
    CallExpr, ComprehensionExpr, Expr, IdedExpr, ListExpr, LiteralValue, operators,
};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelString, CelUInt, DOUBLE_TYPE, DYN_TYPE, INT_TYPE, Kind,
    LIST_TYPE, NULL_TYPE, STRING_TYPE, UINT_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::{DeclarationError, Env};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::cell::RefCell;
use std::cmp::Ordering;

/// The function `has(x.f)` is rewritten to, so that free-form maps answer it (see `compile`).
pub(crate) const HAS: &str = "@aigw_has";

/// The function `x.metadata.a.b` is rewritten to (see `compile`).
pub(crate) const PATH: &str = "@aigw_path";

/// The overload the two-argument `sortBy` macro expands to; CEL source can't name it.
const SORT_BY_KEYS: &str = "@aigw_sortByKeys";

/// The variable the `sortBy` macro binds its target to, so that it is evaluated once.
const SORT_BY_INPUT: &str = "@aigw_sortBy_input";

/// The standard library, the strings extension and ngrok's functions (the compiled
/// comprehensions of [`super::native`] are registered on top, in [`super::ENV`]).
pub(crate) fn build_env() -> Result<Env, DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)?;
    env.add_macro(Macro::receiver("sortBy", 2, sort_by_macro))?;

    let list = || LIST_TYPE;
    let string = || STRING_TYPE;
    for (name, f) in [
        ("only", only as cel::common::functions::Function),
        ("ignore", ignore),
        ("onlyProviders", only_providers),
        ("ignoreProviders", ignore_providers),
        ("onlyAuthors", only_authors),
        ("ignoreAuthors", ignore_authors),
    ] {
        env.add_member_overload(name, &format!("list.{name}(list)"), list(), vec![list()], f)?;
        env.add_member_overload(
            name,
            &format!("list.{name}(string)"),
            list(),
            vec![string()],
            f,
        )?;
    }
    env.add_member_overload(
        "inRegion",
        "list.inRegion(string)",
        list(),
        vec![string()],
        in_region,
    )?;
    env.add_member_overload(
        "inCountryCode",
        "list.inCountryCode(string)",
        list(),
        vec![string()],
        in_country_code,
    )?;
    for (id, max) in [
        ("double", DOUBLE_TYPE),
        ("int", INT_TYPE),
        ("uint", UINT_TYPE),
    ] {
        env.add_member_overload(
            "underCost",
            &format!("list.underCost(string,{id})"),
            list(),
            vec![string(), max],
            under_cost,
        )?;
    }
    env.add_member_overload(
        "sortBy",
        "list.sortBy(string)",
        list(),
        vec![string()],
        sort_by_field,
    )?;
    env.add_member_overload(
        SORT_BY_KEYS,
        "list.@aigw_sortByKeys(list)",
        list(),
        vec![list()],
        sort_by_keys,
    )?;
    env.add_member_overload("random", "list.random()", list(), vec![], random)?;
    env.add_member_overload("randomize", "list.randomize()", list(), vec![], randomize)?;
    env.add_member_overload("get", "list.get(string)", list(), vec![string()], get_by_id)?;
    env.add_member_overload(
        "get",
        "list.get(string,string)",
        list(),
        vec![string(), string()],
        get_model,
    )?;
    let provider = || ObjKind::Provider.cel_type().to_owned();
    let model = || ObjKind::Model.cel_type().to_owned();
    env.add_member_overload(
        "getModel",
        "provider.getModel(string)",
        provider(),
        vec![string()],
        provider_get_model,
    )?;
    env.add_member_overload(
        "getModel",
        "null.getModel(string)",
        NULL_TYPE,
        vec![string()],
        null_get_model,
    )?;
    env.add_member_overload(
        "getMetadata",
        "model.getMetadata(string)",
        model(),
        vec![string()],
        get_metadata,
    )?;
    env.add_member_overload(
        "getMetadata",
        "provider.getMetadata(string)",
        provider(),
        vec![string()],
        get_metadata,
    )?;
    env.add_overload(HAS, "@aigw_has(dyn,string)", vec![DYN_TYPE, string()], has)?;
    env.add_overload(PATH, "@aigw_path(dyn,list)", vec![DYN_TYPE, list()], path)?;
    Ok(env)
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness

thread_local! {
    static RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds `random()` / `randomize()` for one evaluation on this thread; clears on drop.
pub(crate) struct SeededRng(());

impl SeededRng {
    pub(crate) fn new(seed: u64) -> SeededRng {
        RNG.with(|rng| *rng.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
        SeededRng(())
    }
}

impl Drop for SeededRng {
    fn drop(&mut self) {
        RNG.with(|rng| *rng.borrow_mut() = None);
    }
}

fn with_rng<R>(function: &str, f: impl FnOnce(&mut StdRng) -> R) -> Result<R, ExecutionError> {
    RNG.with(|rng| match rng.borrow_mut().as_mut() {
        Some(rng) => Ok(f(rng)),
        None => Err(ExecutionError::function_error(
            function,
            "no random seed for this evaluation",
        )),
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

/// The elements of the list `list`, each as a `dyn Val`.
fn elements<'b, 'v>(
    function: &str,
    list: &'b (dyn Val + 'v),
) -> Result<Vec<&'b (dyn Val + 'v)>, ExecutionError> {
    let iterable = list
        .as_iterable()
        .ok_or_else(|| ExecutionError::function_error(function, "applies to a list"))?;
    let mut out = Vec::new();
    let mut it = iterable.iter();
    while let Some(item) = it.next() {
        out.push(item);
    }
    Ok(out)
}

/// `item` as an object of one of `kinds`.
fn object<'a>(
    function: &str,
    item: &'a dyn Val,
    kinds: &[ObjKind],
) -> Result<&'a ObjVal, ExecutionError> {
    item.downcast_ref::<ObjVal>()
        .filter(|o| kinds.contains(&o.kind()))
        .ok_or_else(|| {
            let wanted: Vec<String> = kinds.iter().map(|k| k.name().to_owned()).collect();
            ExecutionError::function_error(
                function,
                format!(
                    "applies to a list of {}, got an element of type {}",
                    wanted.join(" or "),
                    item.get_type().name()
                ),
            )
        })
}

fn string_arg<'a>(function: &str, v: &'a dyn Val) -> Result<&'a str, ExecutionError> {
    v.downcast_ref::<CelString>()
        .map(|s| s.inner())
        .ok_or_else(|| {
            ExecutionError::function_error(
                function,
                format!("expected a string, got {}", v.get_type().name()),
            )
        })
}

/// The ids of `only(ids)` and friends: a list of strings, or one string.
fn id_args(function: &str, v: &dyn Val) -> Result<Vec<String>, ExecutionError> {
    if let Some(s) = v.downcast_ref::<CelString>() {
        return Ok(vec![s.inner().to_owned()]);
    }
    elements(function, v)?
        .into_iter()
        .map(|item| string_arg(function, item).map(str::to_owned))
        .collect()
}

fn matches_any(names: &[Box<str>], wanted: &[String]) -> bool {
    names
        .iter()
        .any(|n| wanted.iter().any(|w| n.eq_ignore_ascii_case(w)))
}

/// A new list of `items`: of objects without a box each when they all are objects.
fn owned_list<'b, 'v>(items: Vec<&(dyn Val + 'v)>) -> CowVal<'b, 'v> {
    let objects: Option<Vec<ObjVal>> = items
        .iter()
        .map(|i| i.downcast_ref::<ObjVal>().cloned())
        .collect();
    match objects {
        Some(objects) => CowVal::owned(List(objects)),
        None => {
            let boxed: Vec<Box<dyn Val + 'v>> =
                items.into_iter().map(|i| i.clone_as_boxed()).collect();
            CowVal::owned(CelList::from(boxed))
        }
    }
}

/// Keeps the objects of the receiver (`args[0]`) for which `keep` holds.
fn keep_objects<'b, 'v>(
    function: &str,
    args: &Args<'b, 'v>,
    kinds: &[ObjKind],
    keep: impl Fn(&ObjVal) -> bool,
) -> Ret<'b, 'v> {
    let mut kept = Vec::new();
    for item in elements(function, &*args[0])? {
        if keep(object(function, item, kinds)?) {
            kept.push(item);
        }
    }
    Ok(owned_list(kept))
}

const NAMED: &[ObjKind] = &[
    ObjKind::Model,
    ObjKind::Provider,
    ObjKind::Author,
    ObjKind::Key,
];
const MODELS: &[ObjKind] = &[ObjKind::Model];

// ---------------------------------------------------------------------------------------------
// The collection functions

fn only<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ids = id_args("only", &*args[1])?;
    keep_objects("only", &args, NAMED, |o| matches_any(&o.names().ids, &ids))
}

fn ignore<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ids = id_args("ignore", &*args[1])?;
    keep_objects("ignore", &args, NAMED, |o| {
        !matches_any(&o.names().ids, &ids)
    })
}

fn only_providers<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ids = id_args("onlyProviders", &*args[1])?;
    keep_objects("onlyProviders", &args, MODELS, |m| {
        matches_any(&m.names().providers, &ids)
    })
}

fn ignore_providers<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ids = id_args("ignoreProviders", &*args[1])?;
    keep_objects("ignoreProviders", &args, MODELS, |m| {
        !matches_any(&m.names().providers, &ids)
    })
}

fn only_authors<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ids = id_args("onlyAuthors", &*args[1])?;
    keep_objects("onlyAuthors", &args, MODELS, |m| {
        matches_any(&m.names().authors, &ids)
    })
}

fn ignore_authors<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let ids = id_args("ignoreAuthors", &*args[1])?;
    keep_objects("ignoreAuthors", &args, MODELS, |m| {
        !matches_any(&m.names().authors, &ids)
    })
}

fn in_region<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let region = vec![string_arg("inRegion", &*args[1])?.to_owned()];
    keep_objects("inRegion", &args, MODELS, |m| {
        matches_any(&m.names().regions, &region)
    })
}

fn in_country_code<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let cc = vec![string_arg("inCountryCode", &*args[1])?.to_owned()];
    keep_objects("inCountryCode", &args, MODELS, |m| {
        matches_any(&m.names().countries, &cc)
    })
}

fn number(v: &dyn Val) -> Option<f64> {
    if let Some(d) = v.downcast_ref::<CelDouble>() {
        Some(*d.inner())
    } else if let Some(i) = v.downcast_ref::<CelInt>() {
        Some(*i.inner() as f64)
    } else {
        v.downcast_ref::<CelUInt>().map(|u| *u.inner() as f64)
    }
}

/// `underCost(priceType, max)`: the models whose price of that type is at most `max`; a model
/// without that price is left out.
fn under_cost<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let price_type = string_arg("underCost", &*args[1])?;
    let slot = price_index(price_type).ok_or_else(|| {
        ExecutionError::function_error(
            "underCost",
            format!(
                "unknown price type '{price_type}'; expected one of: {}",
                PRICE_TYPES.join(", ")
            ),
        )
    })?;
    let max = number(&*args[2]).expect("the overloads take numbers");
    keep_objects("underCost", &args, MODELS, |m| {
        m.names().prices[slot].is_some_and(|p| p <= max)
    })
}

/// `sortBy('price')`: cheapest text input first, models without that price last; stable.
fn sort_by_field<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let field = string_arg("sortBy", &*args[1])?;
    if field != "price" {
        return Err(ExecutionError::function_error(
            "sortBy",
            format!("unknown sort field '{field}': only 'price' is supported (or sortBy(m, key))"),
        ));
    }
    let slot = price_index("text.input").expect("a documented price type");
    let mut keyed = Vec::new();
    for item in elements("sortBy", &*args[0])? {
        keyed.push((object("sortBy", item, MODELS)?.names().prices[slot], item));
    }
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    Ok(owned_list(
        keyed.into_iter().map(|(_, item)| item).collect(),
    ))
}

/// How two sort keys of `sortBy(m, key)` order: numbers by value whatever their type, strings
/// and bools by value, `null` after everything else.
fn compare_keys(a: &dyn Val, b: &dyn Val) -> Result<Ordering, ExecutionError> {
    let is_null = |v: &dyn Val| v.get_type().kind() == Kind::NullType;
    match (is_null(a), is_null(b)) {
        (true, true) => return Ok(Ordering::Equal),
        (true, false) => return Ok(Ordering::Greater),
        (false, true) => return Ok(Ordering::Less),
        (false, false) => {}
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return Ok(x.total_cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.downcast_ref::<CelString>(), b.downcast_ref::<CelString>()) {
        return Ok(x.inner().cmp(y.inner()));
    }
    if let (Some(x), Some(y)) = (a.downcast_ref::<CelBool>(), b.downcast_ref::<CelBool>()) {
        return Ok(x.inner().cmp(y.inner()));
    }
    Err(ExecutionError::function_error(
        "sortBy",
        format!(
            "cannot order sort keys of types {} and {}: keys must all be numbers, strings or bools (or null)",
            a.get_type().name(),
            b.get_type().name()
        ),
    ))
}

/// The expansion of `sortBy(m, key)`: the receiver ordered by the keys, ascending; stable.
fn sort_by_keys<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let items = elements("sortBy", &*args[0])?;
    let keys = elements("sortBy", &*args[1])?;
    if items.len() != keys.len() {
        return Err(ExecutionError::function_error(
            "sortBy",
            "internal error: one key per element expected",
        ));
    }
    // Check every key against the first so that the sort never meets an error.
    if let Some(first) = keys.first() {
        for key in &keys {
            compare_keys(*first, *key)?;
        }
    }
    let mut keyed: Vec<_> = keys.into_iter().zip(items).collect();
    keyed.sort_by(|(a, _), (b, _)| compare_keys(*a, *b).unwrap_or(Ordering::Equal));
    Ok(owned_list(
        keyed.into_iter().map(|(_, item)| item).collect(),
    ))
}

/// `random()`: one element, chosen with the evaluation's seeded generator; an error on an empty
/// list.
fn random<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let items = elements("random", &*args[0])?;
    if items.is_empty() {
        return Err(ExecutionError::function_error(
            "random",
            "the list is empty",
        ));
    }
    let pick = with_rng("random", |rng| rand::Rng::random_range(rng, 0..items.len()))?;
    Ok(CowVal::Owned(items[pick].clone_as_boxed()))
}

/// `randomize()`: the elements shuffled with the evaluation's seeded generator.
fn randomize<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let mut items = elements("randomize", &*args[0])?;
    with_rng("randomize", |rng| items.shuffle(rng))?;
    Ok(owned_list(items))
}

/// `ai.providers.get(id)` / `ai.authors.get(id)`: the first element whose id or alias matches,
/// or `null`.
fn get_by_id<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let id = vec![string_arg("get", &*args[1])?.to_owned()];
    for item in elements("get", &*args[0])? {
        let obj = object("get", item, NAMED)?;
        if obj.kind() == ObjKind::Model {
            return Err(ExecutionError::function_error(
                "get",
                "on models, get takes a provider id and a model id: ai.models.get('openai', 'gpt-4o')",
            ));
        }
        if matches_any(&obj.names().ids, &id) {
            return Ok(CowVal::Owned(item.clone_as_boxed()));
        }
    }
    Ok(CowVal::Borrowed(&NULL))
}

/// `ai.models.get(providerId, modelId)`: the first model of the receiver that matches both, or
/// `null`.
fn get_model<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let provider = vec![string_arg("get", &*args[1])?.to_owned()];
    let id = vec![string_arg("get", &*args[2])?.to_owned()];
    for item in elements("get", &*args[0])? {
        let m = object("get", item, MODELS)?;
        if matches_any(&m.names().providers, &provider) && matches_any(&m.names().ids, &id) {
            return Ok(CowVal::Owned(item.clone_as_boxed()));
        }
    }
    Ok(CowVal::Borrowed(&NULL))
}

/// `provider.getModel(id)`: the provider's model with that id or alias, or `null`.
fn provider_get_model<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let p = object("getModel", &*args[0], &[ObjKind::Provider])?;
    let id = vec![string_arg("getModel", &*args[1])?.to_owned()];
    Ok(
        match p.models().iter().find(|m| matches_any(&m.names().ids, &id)) {
            Some(m) => CowVal::owned(m.clone()),
            None => CowVal::Borrowed(&NULL),
        },
    )
}

/// `null.getModel(id)`: `null`, so that `ai.providers.get('x').getModel('y')` is `null` when
/// there is no provider `x`.
fn null_get_model<'b, 'v>(_: Args<'b, 'v>) -> Ret<'b, 'v> {
    Ok(CowVal::Borrowed(&NULL))
}

/// `m.getMetadata('a.b')`: the metadata value at that dotted path, or `null`.
fn get_metadata<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let obj = object(
        "getMetadata",
        &*args[0],
        &[ObjKind::Model, ObjKind::Provider],
    )?;
    let path = string_arg("getMetadata", &*args[1])?;
    let mut node = obj
        .field("metadata")
        .expect("models and providers have metadata");
    // A key may itself contain dots: try the whole path first.
    if let super::values::Data::Map(map) = node
        && let Some(v) = map.lookup(path)
    {
        return Ok(CowVal::Owned(v.as_val().clone_as_boxed()));
    }
    for part in path.split('.') {
        match node {
            super::values::Data::Map(map) => match map.lookup(part) {
                Some(v) => node = v,
                None => return Ok(CowVal::Borrowed(&NULL)),
            },
            _ => return Ok(CowVal::Borrowed(&NULL)),
        }
    }
    Ok(CowVal::Owned(node.as_val().clone_as_boxed()))
}

/// `x.a.b…` where `x` is a free-form map: `null` as soon as a key is missing or a value on the
/// way is `null`; other values are selected as CEL does.
fn path<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let mut fields = elements("_._", &*args[1])?.into_iter();
    let mut node: Box<dyn Val + 'v> = args[0].clone().into_owned();
    loop {
        let Some(field) = fields.next() else {
            return Ok(CowVal::Owned(node));
        };
        if node.get_type().kind() == Kind::NullType {
            return Ok(CowVal::Borrowed(&NULL));
        }
        let field = field
            .downcast_ref::<CelString>()
            .ok_or_else(|| ExecutionError::function_error("_._", "field names are strings"))?;
        node = select_path_step(node.as_ref(), field)?.into_owned();
    }
}

/// `v.field`, as the interpreter selects a field (without optionals, which the environment's
/// values never hold).
pub(crate) fn select_path_step<'b, 'v>(
    v: &'b (dyn Val + 'v),
    field: &CelString<'_>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let is_map = v.get_type().kind() == Kind::Map;
    let missing = || {
        if is_map {
            ExecutionError::no_such_key(field.inner())
        } else {
            ExecutionError::no_such_overload(
                "_._",
                vec![v.get_type().name().to_owned(), "string".to_owned()],
            )
        }
    };
    let indexer = v.as_indexer().ok_or_else(missing)?;
    indexer.get(field).map_err(|e| match e {
        ExecutionError::NoSuchOverload(_)
        | ExecutionError::ValuesNotComparable(..)
        | ExecutionError::UnsupportedKeyType(_)
        | ExecutionError::UnexpectedType { .. } => ExecutionError::no_such_overload(
            "_._",
            vec![v.get_type().name().to_owned(), "string".to_owned()],
        ),
        other => other,
    })
}

/// `has(x.f)`, see [`has_field`].
fn has<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let field = string_arg("has", &*args[1])?;
    Ok(CowVal::owned(CelBool::from(has_field(&*args[0], field)?)))
}

/// `has(x.f)`: whether the free-form map `x` has the key `f`; `false` on `null` (a missing
/// free-form key); for anything else, CEL's own answer (the field can be read, or reading it
/// fails for want of it).
pub(crate) fn has_field(target: &dyn Val, field: &str) -> Result<bool, ExecutionError> {
    if target.get_type().kind() == Kind::NullType {
        return Ok(false);
    }
    if let Some(map) = target.downcast_ref::<super::values::MapVal>()
        && map.is_free_form()
    {
        return Ok(map.lookup(field).is_some());
    }
    let indexer = target.as_indexer().ok_or_else(|| {
        ExecutionError::no_such_overload(
            "has",
            vec![target.get_type().name().to_owned(), "string".to_owned()],
        )
    })?;
    match indexer.get(&CelString::from(field)) {
        Ok(_) => Ok(true),
        Err(ExecutionError::NoSuchKey(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// The `sortBy(m, key)` macro

/// Expands `list.sortBy(m, key)`, as the lists extension of cel-go does, into
/// `cel.bind(input, list, input.@aigw_sortByKeys(input.map(m, key)))`, so `list` is evaluated
/// once.
fn sort_by_macro(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<IdedExpr>, ParseError> {
    let var = match &args[0].expr {
        Expr::Ident(name) => name.clone(),
        _ => return Err(helper.new_error(args[0].id, "sortBy: argument must be a simple name")),
    };
    let list = target.take().expect("sortBy is a receiver macro");
    let key = args.pop().expect("two arguments");
    args.clear();
    let input =
        |helper: &mut MacroExprHelper<'_>| helper.next_expr(Expr::Ident(SORT_BY_INPUT.to_owned()));
    let result = "@result".to_owned();
    // input.map(var, key)
    let step_items = helper.next_expr(Expr::List(ListExpr::new(vec![key])));
    let accu = helper.next_expr(Expr::Ident(result.clone()));
    let step = helper.next_expr(Expr::Call(CallExpr {
        func_name: operators::ADD.to_owned(),
        target: None,
        args: vec![accu, step_items],
    }));
    let keys = ComprehensionExpr {
        iter_range: input(helper),
        iter_var: var,
        iter_var2: None,
        accu_var: result.clone(),
        accu_init: helper.next_expr(Expr::List(ListExpr::new(Vec::new()))),
        loop_cond: helper.next_expr(Expr::Literal(LiteralValue::Boolean(true.into()))),
        loop_step: step,
        result: helper.next_expr(Expr::Ident(result)),
    };
    let keys = helper.next_expr(Expr::Comprehension(Box::new(keys)));
    let sorted = Expr::Call(CallExpr {
        func_name: SORT_BY_KEYS.to_owned(),
        target: Some(Box::new(input(helper))),
        args: vec![keys],
    });
    let bind = ComprehensionExpr {
        iter_range: helper.next_expr(Expr::List(ListExpr::new(Vec::new()))),
        iter_var: "#unused".to_owned(),
        iter_var2: None,
        accu_var: SORT_BY_INPUT.to_owned(),
        accu_init: list,
        loop_cond: helper.next_expr(Expr::Literal(LiteralValue::Boolean(false.into()))),
        loop_step: input(helper),
        result: helper.next_expr(sorted),
    };
    Ok(Some(helper.next_expr(Expr::Comprehension(Box::new(bind)))))
}
