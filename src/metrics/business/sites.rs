//! The macro call sites, and the instance they target: the metrics-only default before
//! `init()`, the global instance after.

use std::fmt::Display;
use std::sync::{Arc, OnceLock};

use super::desc::Desc;
use super::handles::MetricKind;
use super::registry::BusinessMetrics;
use super::table::{Family, LabelRef};

/// The business metrics of the instance `init()` installed.
static GLOBAL: OnceLock<Arc<BusinessMetrics>> = OnceLock::new();

/// Makes `metrics` the target of the macros from now on (`init()`); `false` when an instance
/// was installed already.
pub(crate) fn install_global(metrics: Arc<BusinessMetrics>) -> bool {
    GLOBAL.set(metrics).is_ok()
}

/// The business metrics the macros use before `init()`, in the default instance's registry.
pub(crate) fn default_metrics() -> &'static Arc<BusinessMetrics> {
    &crate::metrics::default_handle().business
}

/// The call-site slot of the instance the macros use now (0: default, 1: global).
#[inline]
fn slot() -> usize {
    usize::from(GLOBAL.get().is_some())
}

/// Which instance the macros target now, and its slot index (0: default, 1: global).
#[inline]
pub(crate) fn target() -> (usize, &'static BusinessMetrics) {
    match GLOBAL.get() {
        Some(metrics) => (1, metrics),
        None => (0, default_metrics()),
    }
}

/// [`target`], as the shared table: for the crate's own families that live outside a macro
/// call site (the database metrics) and must keep their instance alive.
pub(crate) fn target_shared() -> (usize, &'static Arc<BusinessMetrics>) {
    match GLOBAL.get() {
        Some(metrics) => (1, metrics),
        None => (0, default_metrics()),
    }
}

/// Picks [`LabelRef::Str`] for text and [`LabelRef::Display`] for the rest (autoref
/// specialization: the macros call `(&Wrap(&value)).label_ref()` with both traits in scope).
#[doc(hidden)]
pub struct Wrap<'a, T: ?Sized>(pub &'a T);

/// The text case of [`Wrap`].
#[doc(hidden)]
pub trait ViaStr {
    /// The label value.
    fn label_ref(&self) -> LabelRef<'_>;
}

impl<T: AsRef<str> + ?Sized> ViaStr for Wrap<'_, T> {
    #[inline]
    fn label_ref(&self) -> LabelRef<'_> {
        LabelRef::Str(self.0.as_ref())
    }
}

/// The `Display` case of [`Wrap`].
#[doc(hidden)]
pub trait ViaDisplay {
    /// The label value.
    fn label_ref(&self) -> LabelRef<'_>;
}

impl<T: Display> ViaDisplay for &Wrap<'_, T> {
    #[inline]
    fn label_ref(&self) -> LabelRef<'_> {
        LabelRef::Display(self.0)
    }
}

/// A macro call site whose label values are all literals: the slot holds the series handle.
#[doc(hidden)]
pub struct StaticSite<K: MetricKind> {
    desc: Desc,
    values: &'static [&'static (dyn Display + Sync)],
    slots: [OnceLock<K::Handle>; 2],
}

impl<K: MetricKind> StaticSite<K> {
    /// A call site (in a `static`).
    pub const fn new(desc: Desc, values: &'static [&'static (dyn Display + Sync)]) -> Self {
        if values.len() != desc.labels.len() {
            panic!("label values do not match the label keys");
        }
        Self {
            desc,
            values,
            slots: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The handle of this call site's series in the current target instance.
    #[inline]
    pub fn get(&'static self) -> &'static K::Handle {
        self.slots[slot()].get_or_init(|| {
            let family = target().1.family::<K>(&self.desc, self.desc.name);
            let values: Vec<LabelRef<'_>> = self
                .values
                .iter()
                .map(|v| LabelRef::Display(*v as &dyn Display))
                .collect();
            family.map(|f| f.series(&values)).unwrap_or_default()
        })
    }
}

/// A macro call site with a literal name and run-time label values: the slot holds the family.
#[doc(hidden)]
pub struct DynSite<K: MetricKind> {
    desc: Desc,
    slots: [OnceLock<Option<Arc<Family<K>>>>; 2],
}

impl<K: MetricKind> DynSite<K> {
    /// A call site (in a `static`).
    pub const fn new(desc: Desc) -> Self {
        Self {
            desc,
            slots: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The handle of the series for `values` in the current target instance.
    #[inline]
    pub fn get(&'static self, values: &[LabelRef<'_>]) -> &'static K::Handle {
        let family =
            self.slots[slot()].get_or_init(|| target().1.family::<K>(&self.desc, self.desc.name));
        family
            .as_deref()
            .and_then(|f| f.series_ref(values))
            .unwrap_or_else(K::noop)
    }
}

/// A macro call with a run-time name: the family is looked up by name on every call.
#[doc(hidden)]
pub fn by_name<K: MetricKind>(desc: &Desc, name: &str, values: &[LabelRef<'_>]) -> K::Handle {
    let family = target().1.family::<K>(desc, name);
    family.map(|f| f.series(values)).unwrap_or_default()
}
