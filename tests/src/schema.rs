//! The JSON Schema's verdict on every plugin configuration the harness hands Envoy: it must
//! agree with the parser's (see `eisodos_schema`), so no integration test's configuration
//! escapes the schema agreement, accepted or rejected.

use eisodos_core::balancer::Balancer;

/// Whether the schema and the parser agree on `config`.
///
/// # Errors
/// When they disagree (or the schema does not load), saying how.
pub fn agrees(config: &str) -> Result<(), String> {
    let schema = eisodos_schema::shared()?;
    let parser = Balancer::configure(config.as_bytes(), "eisodos", 0)
        .map(drop)
        .map_err(|err| err.to_string());
    let mut tally = eisodos_schema::Tally::default();
    let agreement = eisodos_schema::judge(schema, config.as_bytes(), parser);
    tally.add("the plugin configuration", config.as_bytes(), agreement);
    match tally.disagreements.pop() {
        None => Ok(()),
        Some(disagreement) => Err(format!(
            "the schema (schema/eisodos.schema.json) and the parser disagree on {disagreement}\n\
             (fix the one that is wrong, or list a rule the schema cannot express in \
             eisodos_schema::EXCEPTIONS)"
        )),
    }
}
