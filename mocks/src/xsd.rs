//! XSD validation with libxml2 (the same engine as `xmllint --schema`). libxml2's
//! validation contexts are not `Send`, so each thread keeps its own, by schema path,
//! loaded on first use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libxml::parser::Parser;
use libxml::schemas::{SchemaParserContext, SchemaValidationContext};

use crate::MockError;

/// Loads (compiles) the schema at `path`.
pub fn load(path: &Path) -> Result<SchemaValidationContext, MockError> {
    let text = path.to_str().ok_or_else(|| MockError::Schema {
        path: path.to_path_buf(),
        message: "path is not UTF-8".into(),
    })?;
    if !path.is_file() {
        return Err(MockError::Schema {
            path: path.to_path_buf(),
            message: "not found (is ../shared/spec present?)".into(),
        });
    }
    let mut parser = SchemaParserContext::from_file(text);
    SchemaValidationContext::from_parser(&mut parser).map_err(|errors| MockError::Schema {
        path: path.to_path_buf(),
        message: messages(&errors),
    })
}

fn messages(errors: &[libxml::error::StructuredError]) -> String {
    errors
        .iter()
        .filter_map(|e| e.message.as_deref().map(str::trim).map(str::to_string))
        .collect::<Vec<_>>()
        .join("; ")
}

thread_local! {
    static SCHEMAS: RefCell<HashMap<PathBuf, SchemaValidationContext>> = RefCell::new(HashMap::new());
}

/// Validates the XML document `xml` against the schema at `schema`; the error lists
/// libxml2's messages.
pub fn validate(schema: &Path, xml: &str) -> Result<(), String> {
    let doc = Parser::default()
        .parse_string(xml)
        .map_err(|e| format!("libxml2 cannot parse it: {e:?}"))?;
    SCHEMAS.with(|cell| {
        let mut map = cell.borrow_mut();
        if !map.contains_key(schema) {
            let compiled = load(schema).map_err(|e| e.to_string())?;
            map.insert(schema.to_path_buf(), compiled);
        }
        let ctx = map
            .get_mut(schema)
            .ok_or_else(|| "schema unavailable".to_string())?;
        ctx.validate_document(&doc).map_err(|e| messages(&e))
    })
}
