//! Redaction of Sentry events and breadcrumbs (run in `before_send` and `before_breadcrumb`):
//! sensitive tags, extra data, context fields, breadcrumb data and request headers become
//! `[REDACTED]`, sensitive query parameters in URL-like strings too, and the request's query
//! string, cookies and body are removed.

use ::sentry::Breadcrumb;
use ::sentry::protocol::{Context, Event, Level, Value};

use crate::core::redact::{REDACTED, Redactor};

/// The `tracing-fields` context `sentry-tracing` puts an event's fields in.
const FIELDS_CONTEXT: &str = "Rust Tracing Fields";

pub(super) fn redact_event(r: &Redactor, mut event: Event<'static>) -> Event<'static> {
    let critical = matches!(
        event.contexts.get(FIELDS_CONTEXT),
        Some(Context::Other(fields)) if fields.get("critical") == Some(&Value::Bool(true))
    );
    if critical {
        event.level = Level::Fatal;
    }
    for (key, value) in event.tags.iter_mut() {
        if r.is_sensitive(key) {
            *value = REDACTED.into();
        } else {
            scrub_query(r, value);
        }
    }
    redact_entries(r, event.extra.iter_mut());
    for (_, context) in event.contexts.iter_mut() {
        if let Context::Other(fields) = context {
            redact_entries(r, fields.iter_mut());
        }
    }
    if let Some(message) = &mut event.message {
        scrub_query(r, message);
    }
    for exception in event.exception.values.iter_mut() {
        if let Some(value) = &mut exception.value {
            scrub_query(r, value);
        }
    }
    if let Some(request) = &mut event.request {
        if let Some(url) = &mut request.url {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
        }
        request.query_string = None;
        request.cookies = None;
        request.data = None;
        for (name, value) in request.headers.iter_mut() {
            if r.is_sensitive(name) {
                *value = REDACTED.into();
            } else {
                scrub_query(r, value);
            }
        }
        for (name, value) in request.env.iter_mut() {
            if r.is_sensitive(name) {
                *value = REDACTED.into();
            }
        }
    }
    for crumb in event.breadcrumbs.values.iter_mut() {
        redact_breadcrumb(r, crumb);
    }
    event
}

pub(super) fn redact_breadcrumb(r: &Redactor, crumb: &mut Breadcrumb) {
    if let Some(message) = &mut crumb.message {
        scrub_query(r, message);
    }
    redact_entries(r, crumb.data.iter_mut());
}

fn redact_entries<'a>(r: &Redactor, entries: impl Iterator<Item = (&'a String, &'a mut Value)>) {
    for (key, value) in entries {
        if r.is_sensitive(key) {
            *value = Value::String(REDACTED.into());
        } else {
            redact_value(r, value);
        }
    }
}

fn redact_value(r: &Redactor, value: &mut Value) {
    match value {
        Value::Object(map) => redact_entries(r, map.iter_mut()),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(r, v)),
        Value::String(s) => scrub_query(r, s),
        _ => {}
    }
}

/// Replaces the values of sensitive parameters of a query string in `text` (`?token=…`).
fn scrub_query(r: &Redactor, text: &mut String) {
    let Some(q) = text.find('?') else { return };
    if !text[q..].contains('=') {
        return;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..=q]);
    let mut rest = &text[q + 1..];
    loop {
        let end = rest
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        let (pair, tail) = rest.split_at(end);
        match pair.split_once('=') {
            Some((name, _)) if r.is_sensitive(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
        match tail.chars().next() {
            Some('&') => {
                out.push('&');
                rest = &tail[1..];
            }
            _ => {
                out.push_str(tail);
                break;
            }
        }
    }
    *text = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_of_sensitive_parameters_are_scrubbed() {
        let r = Redactor::new(crate::core::redact::DEFAULT_SENSITIVE);
        let mut s = "GET /a?token=abc&x=1&api_key=zz#frag done".to_string();
        scrub_query(&r, &mut s);
        assert_eq!(
            s,
            "GET /a?token=[REDACTED]&x=1&api_key=[REDACTED]#frag done"
        );
        let mut plain = "no query here".to_string();
        scrub_query(&r, &mut plain);
        assert_eq!(plain, "no query here");
    }
}
