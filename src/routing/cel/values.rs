//! CEL values for the views, built once and shared (`Arc`) by every evaluation.
//!
//! Everything here is immutable and `Send + Sync`. A field access borrows the stored value, so
//! an evaluation copies nothing but the few values it creates (lists returned by functions, the
//! loop variable of a macro).

#[cfg(test)]
use super::schema::FieldTy;
use super::schema::{ObjKind, PRICE_TYPES};
use super::views::{
    AuthorView, Datacenter, ErrorRate, KeyMetrics, KeyView, Latency, MetricsScope, ModelMetrics,
    ModelView, Pricing, ProviderView, Quota, TokenUsage,
};
use cel::ExecutionError;
use cel::common::traits::{self, Adder, Container, Indexer, Iterable, Sizer};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelNull, CelString, CelUInt, Kind, LIST_TYPE, MAP_TYPE,
    Type,
};
use cel::common::value::{CowVal, StaticVal, Val};
use std::any::Any;
use std::sync::Arc;

/// `null`, borrowed by missing free-form keys and unknown optional fields.
pub(crate) static NULL: CelNull = CelNull;

/// One stored value.
#[derive(Clone, Debug)]
pub(crate) enum Data {
    Null,
    Bool(CelBool),
    Int(CelInt),
    UInt(CelUInt),
    Double(CelDouble),
    Str(CelString<'static>),
    List(OwnedList),
    Map(MapVal),
    Obj(ObjVal),
}

impl Data {
    /// The value as CEL sees it: the built-in types for scalars, so every overload applies.
    pub(crate) fn as_val(&self) -> &(dyn Val + 'static) {
        match self {
            Data::Null => &NULL,
            Data::Bool(v) => v,
            Data::Int(v) => v,
            Data::UInt(v) => v,
            Data::Double(v) => v,
            Data::Str(v) => v,
            Data::List(v) => v,
            Data::Map(v) => v,
            Data::Obj(v) => v,
        }
    }

    fn str(s: &str) -> Data {
        Data::Str(CelString::from(s.to_owned()))
    }

    fn int(n: u64) -> Data {
        Data::Int(CelInt::from(i64::try_from(n).unwrap_or(i64::MAX)))
    }

    fn opt_int(n: Option<u64>) -> Data {
        n.map_or(Data::Null, Data::int)
    }

    fn opt_i64(n: Option<i64>) -> Data {
        n.map_or(Data::Null, |n| Data::Int(CelInt::from(n)))
    }

    fn opt_str(s: &Option<String>) -> Data {
        s.as_deref().map_or(Data::Null, Data::str)
    }

    fn double(x: f64) -> Data {
        Data::Double(CelDouble::from(x))
    }

    fn strs(items: &[String]) -> Data {
        Data::List(List(items.iter().map(|s| Data::str(s)).collect()))
    }

    fn bool(b: bool) -> Data {
        Data::Bool(CelBool::from(b))
    }

    /// A JSON value: numbers become `int` when they are whole and fit, `uint` when only that
    /// fits, `double` otherwise; objects are free-form maps.
    pub(crate) fn json(v: &serde_json::Value) -> Data {
        use serde_json::Value as J;
        match v {
            J::Null => Data::Null,
            J::Bool(b) => Data::bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Data::Int(CelInt::from(i))
                } else if let Some(u) = n.as_u64() {
                    Data::UInt(CelUInt::from(u))
                } else {
                    Data::double(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Data::str(s),
            J::Array(items) => Data::List(List(items.iter().map(Data::json).collect())),
            J::Object(map) => Data::Map(MapVal::free(
                map.iter()
                    .map(|(k, v)| (k.clone(), Data::json(v)))
                    .collect(),
            )),
        }
    }

    /// Whether the value matches the static type the schema gives it (tests).
    #[cfg(test)]
    pub(crate) fn fits(&self, ty: FieldTy) -> bool {
        match (ty, self) {
            (FieldTy::Str, Data::Str(_)) | (FieldTy::NullStr, Data::Str(_) | Data::Null) => true,
            (FieldTy::Bool, Data::Bool(_)) | (FieldTy::Int, Data::Int(_)) => true,
            (FieldTy::NullInt, Data::Int(_) | Data::Null) | (FieldTy::Double, Data::Double(_)) => {
                true
            }
            (FieldTy::StrList, Data::List(l)) => l.items().all(|d| matches!(d, Data::Str(_))),
            (FieldTy::Obj(k), Data::Obj(o)) => o.kind() == k,
            (FieldTy::ObjList(k), Data::List(l)) => l
                .items()
                .all(|d| matches!(d, Data::Obj(o) if o.kind() == k)),
            (FieldTy::Free, Data::Map(m)) => m.lenient,
            (FieldTy::ObjMap(k), Data::Map(m)) => {
                !m.lenient
                    && m.entries
                        .iter()
                        .all(|(_, d)| matches!(d, Data::Obj(o) if o.kind() == k))
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lists

/// The elements of a CEL `list`, however they are stored.
pub(crate) trait Seq {
    fn len(&self) -> usize;
    fn at(&self, i: usize) -> Option<&(dyn Val + 'static)>;
}

impl Seq for Arc<[Data]> {
    fn len(&self) -> usize {
        <[Data]>::len(self)
    }

    fn at(&self, i: usize) -> Option<&(dyn Val + 'static)> {
        self.get(i).map(Data::as_val)
    }
}

impl Seq for Vec<ObjVal> {
    fn len(&self) -> usize {
        <[ObjVal]>::len(self)
    }

    fn at(&self, i: usize) -> Option<&(dyn Val + 'static)> {
        self.get(i).map(|o| o as &dyn Val)
    }
}

/// A selection of the universe's objects (`ai.models` for one request), borrowed rather than
/// copied.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Selection<'a> {
    /// Every object of the slice, in order.
    All(&'a [ObjVal]),
    /// The objects at these positions of the slice, in this order.
    Picked(&'a [ObjVal], &'a [usize]),
}

impl Seq for Selection<'_> {
    fn len(&self) -> usize {
        match self {
            Selection::All(items) => items.len(),
            Selection::Picked(_, picked) => picked.len(),
        }
    }

    fn at(&self, i: usize) -> Option<&(dyn Val + 'static)> {
        match self {
            Selection::All(items) => items.get(i).map(|o| o as &dyn Val),
            Selection::Picked(items, picked) => picked
                .get(i)
                .and_then(|&p| items.get(p))
                .map(|o| o as &dyn Val),
        }
    }
}

/// A CEL `list` value over some [`Seq`].
#[derive(Clone, Debug)]
pub(crate) struct List<S>(pub(crate) S);

/// A stored list.
pub(crate) type OwnedList = List<Arc<[Data]>>;

impl<S: Seq> List<S> {
    fn iter_vals(&self) -> impl std::iter::Iterator<Item = &(dyn Val + 'static)> + '_ {
        (0..self.0.len()).filter_map(|i| self.0.at(i))
    }
}

impl OwnedList {
    /// The stored items (tests).
    #[cfg(test)]
    fn items(&self) -> impl std::iter::Iterator<Item = &Data> {
        self.0.iter()
    }
}

struct ListIter<'b, S> {
    list: &'b S,
    next: usize,
}

impl<'b, 'v, S: Seq> traits::Iterator<'b, 'v> for ListIter<'b, S> {
    fn next(&mut self) -> Option<&'b (dyn Val + 'v)> {
        let list: &'b S = self.list;
        let item = list.at(self.next)?;
        self.next += 1;
        Some(item)
    }
}

impl<S: Seq + Clone + std::fmt::Debug + Send + Sync> Val for List<S> {
    fn get_type(&self) -> &Type {
        &LIST_TYPE
    }

    fn cel_type() -> &'static Type {
        &LIST_TYPE
    }

    fn as_adder<'b, 'v>(&'b self) -> Option<&'b (dyn Adder + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_iterable<'b, 'v>(&'b self) -> Option<&'b (dyn Iterable + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        if other.get_type().kind() != Kind::List {
            return false;
        }
        let (Some(sizer), Some(iterable)) = (other.as_sizer(), other.as_iterable()) else {
            return false;
        };
        if usize::try_from(*sizer.size().inner()) != Ok(self.0.len()) {
            return false;
        }
        let mut theirs = iterable.iter();
        self.iter_vals()
            .all(|mine| theirs.next().is_some_and(|t| mine.equals(t)))
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(self.clone())
    }
}

impl<S: Seq> Adder for List<S> {
    fn add<'b, 'v>(&'b self, rhs: &(dyn Val + 'v)) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let rhs_items = rhs.as_iterable().ok_or_else(|| {
            ExecutionError::no_such_overload(
                "_+_",
                vec!["list".to_owned(), rhs.get_type().name().to_owned()],
            )
        })?;
        let mut out: Vec<Box<dyn Val + 'v>> =
            self.iter_vals().map(|v| v.clone_as_boxed()).collect();
        let mut it = rhs_items.iter();
        while let Some(item) = it.next() {
            out.push(item.clone_as_boxed());
        }
        Ok(CowVal::owned(CelList::from(out)))
    }
}

impl<S: Seq> Container for List<S> {
    fn contains(&self, value: &dyn Val) -> Result<bool, ExecutionError> {
        Ok(self.iter_vals().any(|item| item.equals(value)))
    }
}

impl<S: Seq> Sizer for List<S> {
    fn size(&self) -> CelInt {
        CelInt::from(self.0.len() as i64)
    }
}

impl<S: Seq> Iterable for List<S> {
    fn iter<'b, 'v>(&'b self) -> Box<dyn traits::Iterator<'b, 'v> + 'b>
    where
        Self: 'v,
    {
        Box::new(ListIter {
            list: &self.0,
            next: 0,
        })
    }
}

/// The position `idx` names in a list of `len` items.
fn list_position(idx: &dyn Val, len: usize) -> Result<usize, ExecutionError> {
    let pos = if let Some(i) = idx.downcast_ref::<CelInt>() {
        usize::try_from(*i.inner()).ok()
    } else if let Some(u) = idx.downcast_ref::<CelUInt>() {
        usize::try_from(*u.inner()).ok()
    } else if let Some(d) = idx.downcast_ref::<CelDouble>() {
        let d = *d.inner();
        (d.fract() == 0.0 && d >= 0.0).then_some(d as usize)
    } else {
        return Err(ExecutionError::UnexpectedType {
            got: idx.get_type().name().to_owned(),
            want: "int".to_owned(),
        });
    };
    match pos {
        Some(p) if p < len => Ok(p),
        _ => Err(ExecutionError::function_error(
            "_[_]",
            format!("index out of range: the list has {len} element(s)"),
        )),
    }
}

impl<S: Seq> Indexer for List<S> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let pos = list_position(idx, self.0.len())?;
        Ok(CowVal::Borrowed(self.0.at(pos).expect("position checked")))
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

// ---------------------------------------------------------------------------------------------
// Maps

/// A CEL `map` with string keys: free-form (metadata, pricing; a missing key reads as `null`)
/// or strict (`m.metrics.api_keys`; a missing key is an error, as ngrok documents).
#[derive(Clone, Debug)]
pub(crate) struct MapVal {
    entries: Arc<[(CelString<'static>, Data)]>,
    lenient: bool,
}

impl MapVal {
    pub(crate) fn free(entries: Vec<(String, Data)>) -> MapVal {
        MapVal::new(entries, true)
    }

    fn strict(entries: Vec<(String, Data)>) -> MapVal {
        MapVal::new(entries, false)
    }

    fn new(entries: Vec<(String, Data)>, lenient: bool) -> MapVal {
        MapVal {
            entries: entries
                .into_iter()
                .map(|(k, v)| (CelString::from(k), v))
                .collect(),
            lenient,
        }
    }

    /// The value at `key`.
    pub(crate) fn lookup(&self, key: &str) -> Option<&Data> {
        self.entries
            .iter()
            .find(|(k, _)| k.inner() == key)
            .map(|(_, v)| v)
    }

    /// Whether missing keys read as `null`.
    pub(crate) fn is_free_form(&self) -> bool {
        self.lenient
    }
}

impl Val for MapVal {
    fn get_type(&self) -> &Type {
        &MAP_TYPE
    }

    fn cel_type() -> &'static Type {
        &MAP_TYPE
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_iterable<'b, 'v>(&'b self) -> Option<&'b (dyn Iterable + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        if other.get_type().kind() != Kind::Map {
            return false;
        }
        let (Some(sizer), Some(indexer)) = (other.as_sizer(), other.as_indexer()) else {
            return false;
        };
        usize::try_from(*sizer.size().inner()) == Ok(self.entries.len())
            && self.entries.iter().all(|(k, v)| {
                indexer
                    .get(k)
                    .is_ok_and(|theirs| v.as_val().equals(&*theirs))
            })
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

impl StaticVal for MapVal {}

impl Container for MapVal {
    fn contains(&self, value: &dyn Val) -> Result<bool, ExecutionError> {
        Ok(value
            .downcast_ref::<CelString>()
            .is_some_and(|k| self.lookup(k.inner()).is_some()))
    }
}

impl Sizer for MapVal {
    fn size(&self) -> CelInt {
        CelInt::from(self.entries.len() as i64)
    }
}

struct KeyIter<'b> {
    entries: &'b [(CelString<'static>, Data)],
    next: usize,
}

impl<'b, 'v> traits::Iterator<'b, 'v> for KeyIter<'b> {
    fn next(&mut self) -> Option<&'b (dyn Val + 'v)> {
        let (k, _) = self.entries.get(self.next)?;
        self.next += 1;
        Some(k)
    }
}

impl Iterable for MapVal {
    fn iter<'b, 'v>(&'b self) -> Box<dyn traits::Iterator<'b, 'v> + 'b>
    where
        Self: 'v,
    {
        Box::new(KeyIter {
            entries: &self.entries,
            next: 0,
        })
    }
}

impl Indexer for MapVal {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let Some(key) = idx.downcast_ref::<CelString>() else {
            return if self.lenient {
                Ok(CowVal::Borrowed(&NULL))
            } else {
                Err(ExecutionError::UnexpectedType {
                    got: idx.get_type().name().to_owned(),
                    want: "string".to_owned(),
                })
            };
        };
        match self.lookup(key.inner()) {
            Some(v) => Ok(CowVal::Borrowed(v.as_val())),
            None if self.lenient => Ok(CowVal::Borrowed(&NULL)),
            None => Err(ExecutionError::no_such_key(key.inner())),
        }
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

// ---------------------------------------------------------------------------------------------
// Objects

/// What the collection functions match on, precomputed.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Id and aliases.
    pub(crate) ids: Box<[Box<str>]>,
    /// Models: provider id and aliases.
    pub(crate) providers: Box<[Box<str>]>,
    /// Models: author id and aliases.
    pub(crate) authors: Box<[Box<str>]>,
    /// Models: datacenter regions.
    pub(crate) regions: Box<[Box<str>]>,
    /// Models: datacenter country codes.
    pub(crate) countries: Box<[Box<str>]>,
    /// Models: the price of each of [`PRICE_TYPES`].
    pub(crate) prices: [Option<f64>; PRICE_TYPES.len()],
    /// Providers: their models, for `getModel`.
    pub(crate) models: Vec<ObjVal>,
}

/// A structured value: a model, provider, key, metrics scope, …. The fields follow the header
/// in the same allocation, so reading one touches a single block of memory.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Obj<V: ?Sized> {
    kind: ObjKind,
    /// Position in the universe (models, providers, authors) or key list.
    index: usize,
    /// Only for models, providers, authors and keys.
    names: Option<Box<Names>>,
    /// The fields, in [`ObjKind::fields`] order.
    values: V,
}

/// A shared [`Obj`]; the CEL value of a model, provider, ….
#[derive(Clone, Debug)]
pub(crate) struct ObjVal(Arc<Obj<[Data]>>);

static NO_NAMES: std::sync::LazyLock<Names> = std::sync::LazyLock::new(Names::default);

impl ObjVal {
    fn new<const N: usize>(
        kind: ObjKind,
        index: usize,
        values: [Data; N],
        names: Option<Names>,
    ) -> ObjVal {
        debug_assert_eq!(N, kind.fields().len(), "{kind:?}");
        let obj: Arc<Obj<[Data; N]>> = Arc::new(Obj {
            kind,
            index,
            names: names.map(Box::new),
            values,
        });
        ObjVal(obj)
    }

    fn plain<const N: usize>(kind: ObjKind, values: [Data; N]) -> Data {
        Data::Obj(ObjVal::new(kind, 0, values, None))
    }

    pub(crate) fn kind(&self) -> ObjKind {
        self.0.kind
    }

    pub(crate) fn index(&self) -> usize {
        self.0.index
    }

    pub(crate) fn names(&self) -> &Names {
        self.0.names.as_deref().unwrap_or(&NO_NAMES)
    }

    /// A field by name.
    #[inline]
    pub(crate) fn field(&self, name: &str) -> Option<&Data> {
        self.kind().field_index(name).map(|i| &self.0.values[i])
    }

    /// The field at `slot`, a position from [`ObjKind::slots`].
    #[inline]
    pub(crate) fn field_at(&self, slots: &[u8; super::schema::KINDS]) -> Option<&Data> {
        self.0.values.get(usize::from(slots[self.kind().ordinal()]))
    }

    /// A provider's models.
    pub(crate) fn models(&self) -> &[ObjVal] {
        &self.names().models
    }

    /// The fields in order (tests).
    #[cfg(test)]
    pub(crate) fn values(&self) -> &[Data] {
        &self.0.values
    }
}

impl Val for ObjVal {
    fn get_type(&self) -> &Type {
        self.kind().cel_type()
    }

    fn cel_type() -> &'static Type {
        // Every kind has a type of its own; `add_overload!` is never used with `ObjVal`.
        ObjKind::Model.cel_type()
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other
            .downcast_ref::<ObjVal>()
            .is_some_and(|o| Arc::ptr_eq(&self.0, &o.0))
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

impl StaticVal for ObjVal {}

impl Indexer for ObjVal {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let Some(name) = idx.downcast_ref::<CelString>() else {
            return Err(ExecutionError::UnexpectedType {
                got: idx.get_type().name().to_owned(),
                want: "string".to_owned(),
            });
        };
        match self.field(name.inner()) {
            Some(v) => Ok(CowVal::Borrowed(v.as_val())),
            None => Err(ExecutionError::no_such_key(name.inner())),
        }
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion from the views

fn boxed(items: impl IntoIterator<Item = impl AsRef<str>>) -> Box<[Box<str>]> {
    items.into_iter().map(|s| s.as_ref().into()).collect()
}

fn with_aliases(id: &str, aliases: &[String]) -> Box<[Box<str>]> {
    boxed(std::iter::once(id).chain(aliases.iter().map(String::as_str)))
}

fn metadata(map: &serde_json::Map<String, serde_json::Value>) -> Data {
    Data::Map(MapVal::free(
        map.iter()
            .map(|(k, v)| (k.clone(), Data::json(v)))
            .collect(),
    ))
}

/// The nested form of the dotted price keys, plus the `input` / `output` shorthands.
fn pricing(p: &Pricing) -> Data {
    let mut root = serde_json::Map::new();
    for (key, price) in &p.0 {
        let mut node = &mut root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_owned(), serde_json::json!(price));
            } else {
                let child = node
                    .entry(part.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if !child.is_object() {
                    *child = serde_json::Value::Object(Default::default());
                }
                node = child.as_object_mut().expect("just made an object");
            }
        }
    }
    for (short, long) in [("input", "text.input"), ("output", "text.output")] {
        if let Some(price) = p.0.get(long) {
            root.entry(short.to_owned())
                .or_insert_with(|| serde_json::json!(price));
        }
    }
    metadata(&root)
}

/// All-zero metrics objects are shared: most models have no traffic yet.
fn shared(kind: ObjKind, is_default: bool, build: impl FnOnce() -> Data) -> Data {
    use std::sync::LazyLock;
    static LATENCY: LazyLock<Data> = LazyLock::new(|| latency_obj(&Latency::default()));
    static ERROR_RATE: LazyLock<Data> = LazyLock::new(|| error_rate_obj(&ErrorRate::default()));
    static TOKEN: LazyLock<Data> = LazyLock::new(|| token_obj(&TokenUsage::default()));
    static QUOTA: LazyLock<Data> = LazyLock::new(|| quota_obj(&Quota::default()));
    static SCOPE: LazyLock<Data> = LazyLock::new(|| scope_obj(&MetricsScope::default()));
    static METRICS: LazyLock<Data> = LazyLock::new(|| metrics_obj(&ModelMetrics::default()));
    if !is_default {
        return build();
    }
    match kind {
        ObjKind::Latency => LATENCY.clone(),
        ObjKind::ErrorRate => ERROR_RATE.clone(),
        ObjKind::Token => TOKEN.clone(),
        ObjKind::Quota => QUOTA.clone(),
        ObjKind::Scope => SCOPE.clone(),
        ObjKind::Metrics => METRICS.clone(),
        _ => build(),
    }
}

fn latency(l: &Latency) -> Data {
    shared(ObjKind::Latency, *l == Latency::default(), || {
        latency_obj(l)
    })
}

fn latency_obj(l: &Latency) -> Data {
    ObjVal::plain(
        ObjKind::Latency,
        [
            Data::int(l.gateway_ms_avg),
            Data::int(l.gateway_ms_p95),
            Data::int(l.upstream_ms_avg),
            Data::int(l.upstream_ms_p95),
            Data::int(l.time_to_first_token_ms_avg),
            Data::int(l.time_to_first_token_ms_p95),
            Data::int(l.time_per_output_token_ms_avg),
            Data::int(l.time_per_output_token_ms_p95),
        ],
    )
}

fn error_rate(e: &ErrorRate) -> Data {
    shared(ObjKind::ErrorRate, *e == ErrorRate::default(), || {
        error_rate_obj(e)
    })
}

fn error_rate_obj(e: &ErrorRate) -> Data {
    ObjVal::plain(
        ObjKind::ErrorRate,
        [
            Data::double(e.total),
            Data::double(e.timeout),
            Data::double(e.rate_limit),
            Data::double(e.client),
            Data::double(e.server),
        ],
    )
}

fn token(t: &TokenUsage) -> Data {
    shared(ObjKind::Token, *t == TokenUsage::default(), || token_obj(t))
}

fn token_obj(t: &TokenUsage) -> Data {
    ObjVal::plain(
        ObjKind::Token,
        [
            Data::int(t.provider_input),
            Data::int(t.provider_output),
            Data::int(t.estimated_input),
            Data::int(t.estimated_output),
        ],
    )
}

fn quota(q: &Quota) -> Data {
    shared(ObjKind::Quota, *q == Quota::default(), || quota_obj(q))
}

fn quota_obj(q: &Quota) -> Data {
    ObjVal::plain(
        ObjKind::Quota,
        [
            Data::opt_i64(q.remaining_requests),
            Data::opt_i64(q.remaining_tokens),
            Data::opt_i64(q.limit_requests),
            Data::opt_i64(q.limit_tokens),
        ],
    )
}

fn scope_values(s: &MetricsScope) -> [Data; 8] {
    [
        Data::str(&s.provider),
        Data::str(&s.model),
        Data::int(s.request_count),
        Data::int(s.start_time),
        Data::int(s.end_time),
        latency(&s.latency),
        error_rate(&s.error_rate),
        token(&s.token),
    ]
}

fn scope(s: &MetricsScope) -> Data {
    shared(ObjKind::Scope, *s == MetricsScope::default(), || {
        scope_obj(s)
    })
}

fn scope_obj(s: &MetricsScope) -> Data {
    ObjVal::plain(ObjKind::Scope, scope_values(s))
}

fn key_scope(k: &KeyMetrics) -> Data {
    let [
        provider,
        model,
        requests,
        start,
        end,
        latency,
        errors,
        token,
    ] = scope_values(&k.scope);
    ObjVal::plain(
        ObjKind::KeyScope,
        [
            provider,
            model,
            requests,
            start,
            end,
            latency,
            errors,
            token,
            quota(&k.quota),
        ],
    )
}

fn metrics(m: &ModelMetrics) -> Data {
    shared(ObjKind::Metrics, *m == ModelMetrics::default(), || {
        metrics_obj(m)
    })
}

fn metrics_obj(m: &ModelMetrics) -> Data {
    ObjVal::plain(
        ObjKind::Metrics,
        [
            scope(&m.global),
            scope(&m.region),
            scope(&m.account),
            scope(&m.endpoint),
            Data::Map(MapVal::strict(
                m.api_keys
                    .iter()
                    .map(|(id, k)| (id.clone(), key_scope(k)))
                    .collect(),
            )),
        ],
    )
}

fn datacenter(d: &Datacenter) -> Data {
    ObjVal::plain(
        ObjKind::Datacenter,
        [Data::str(&d.country_code), Data::str(&d.region)],
    )
}

/// The CEL value of a model; `index` is its position in the universe.
pub(crate) fn model(m: &ModelView, index: usize) -> ObjVal {
    let mut prices = [None; PRICE_TYPES.len()];
    for (slot, price_type) in prices.iter_mut().zip(PRICE_TYPES) {
        *slot = m.pricing.0.get(price_type).copied();
    }
    let names = Names {
        ids: with_aliases(&m.id, &m.id_aliases),
        providers: with_aliases(&m.provider_id, &m.provider_id_aliases),
        authors: with_aliases(&m.author_id, &m.author_id_aliases),
        regions: boxed(m.datacenters.iter().map(|d| &d.region)),
        countries: boxed(m.datacenters.iter().map(|d| &d.country_code)),
        prices,
        models: Vec::new(),
    };
    let values = [
        Data::str(&m.id),
        Data::strs(&m.id_aliases),
        Data::str(&m.provider_id),
        Data::strs(&m.provider_id_aliases),
        Data::str(&m.author_id),
        Data::strs(&m.author_id_aliases),
        Data::str(&m.display_name),
        Data::str(&m.description),
        Data::bool(m.known),
        Data::bool(m.custom),
        metadata(&m.metadata),
        Data::strs(&m.input_modalities),
        Data::strs(&m.output_modalities),
        Data::strs(&m.supported_features),
        Data::opt_int(m.max_context_window),
        Data::opt_int(m.max_output_tokens),
        Data::opt_int(m.parameter_count),
        Data::opt_str(&m.quantization),
        Data::opt_str(&m.data_training_policy),
        Data::opt_int(m.data_retention_days),
        Data::opt_str(&m.data_retention_policy),
        pricing(&m.pricing),
        Data::List(List(m.datacenters.iter().map(datacenter).collect())),
        metrics(&m.metrics),
        ObjVal::plain(
            ObjKind::Live,
            [
                Data::str(&m.aigw.health),
                Data::bool(m.aigw.installed),
                Data::int(m.aigw.in_flight),
                Data::int(m.aigw.queued),
            ],
        ),
    ];
    ObjVal::new(ObjKind::Model, index, values, Some(names))
}

/// The CEL value of a provider, with its models (those of `models` it serves) for `getModel`.
pub(crate) fn provider(p: &ProviderView, index: usize, models: &[ObjVal]) -> ObjVal {
    let ids = with_aliases(&p.id, &p.id_aliases);
    let mine: Vec<ObjVal> = models
        .iter()
        .filter(|m| {
            m.names()
                .providers
                .iter()
                .any(|pid| ids.iter().any(|id| id.eq_ignore_ascii_case(pid)))
        })
        .cloned()
        .collect();
    let names = Names {
        ids,
        models: mine,
        ..Names::default()
    };
    let values = [
        Data::str(&p.id),
        Data::strs(&p.id_aliases),
        Data::str(&p.display_name),
        Data::str(&p.description),
        Data::str(&p.website),
        metadata(&p.metadata),
    ];
    ObjVal::new(ObjKind::Provider, index, values, Some(names))
}

/// The CEL value of an author.
pub(crate) fn author(a: &AuthorView, index: usize) -> ObjVal {
    let names = Names {
        ids: with_aliases(&a.id, &a.id_aliases),
        ..Names::default()
    };
    let values = [
        Data::str(&a.id),
        Data::strs(&a.id_aliases),
        Data::str(&a.display_name),
    ];
    ObjVal::new(ObjKind::Author, index, values, Some(names))
}

/// The CEL value of an API key; `index` is its position in the key list.
pub(crate) fn key(k: &KeyView, index: usize) -> ObjVal {
    let names = Names {
        ids: boxed([&k.id]),
        ..Names::default()
    };
    let values = [
        Data::str(&k.id),
        Data::str(&k.value),
        quota(&k.quota),
        error_rate(&k.error_rate),
    ];
    ObjVal::new(ObjKind::Key, index, values, Some(names))
}
