//! The checks a request passes before it reaches the model thread: bounds, blank texts, ids.
//! A failed check is a 4xx naming the field.

use crate::api::Limits;
use crate::error::ApiError;

pub(crate) fn check_query(query: &str, limits: &Limits) -> Result<(), ApiError> {
    if let Some(why) = gear_data::blank_reason(query) {
        return Err(ApiError::validation(format!("`query` {why}")));
    }
    let n = query.chars().count();
    if n > limits.max_query_chars {
        return Err(ApiError::too_large(format!(
            "`query` is {n} characters; the limit is {}",
            limits.max_query_chars
        )));
    }
    Ok(())
}

/// A request's list of texts (`inputs`, `texts`, `input`): not empty (422), at most
/// `max_inputs` (413), and every text holding something the model reads (422 naming it).
pub(crate) fn check_texts(field: &str, texts: &[String], limits: &Limits) -> Result<(), ApiError> {
    if texts.is_empty() {
        return Err(ApiError::validation(format!("`{field}` is empty")));
    }
    if texts.len() > limits.max_inputs {
        return Err(ApiError::too_large(format!(
            "{} {field}; at most {} per request",
            texts.len(),
            limits.max_inputs
        )));
    }
    match texts
        .iter()
        .enumerate()
        .find_map(|(i, t)| gear_data::blank_reason(t).map(|why| (i, why)))
    {
        Some((i, why)) => Err(ApiError::validation(format!("{field}[{i}] {why}"))),
        None => Ok(()),
    }
}

/// TEI's `truncation_direction`: `Right` (any case) is what the encoders do; `Left` is refused
/// rather than ignored.
pub(crate) fn check_direction(direction: Option<&str>) -> Result<(), ApiError> {
    match direction {
        Some(d) if !d.eq_ignore_ascii_case("right") => Err(ApiError::validation(format!(
            "`truncation_direction` `{d}`: only `Right` is available"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn check_range(
    field: &str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<usize, ApiError> {
    if value < min || value > max {
        return Err(ApiError::validation(format!(
            "`{field}` must be in {min}..={max}, got {value}"
        )));
    }
    Ok(value)
}

pub(crate) fn check_doc_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::validation("`doc_id` is empty"));
    }
    Ok(())
}
