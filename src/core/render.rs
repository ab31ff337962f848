//! How field values are written, in log lines and span attributes alike.

use super::redact::Redactor;

/// Settings the span context layer, the JSON formatter and the span recorder share: which
/// names are redacted, how long a value may be, and whether lines are JSON.
pub(crate) struct RenderSettings {
    pub(crate) redactor: Redactor,
    pub(crate) value_cap: usize,
    /// Whether to pre-render span fields as JSON (off in `pretty` mode).
    pub(crate) json: bool,
}
