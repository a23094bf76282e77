//! The mock DMP's knowledge of the DMP operations, read from the official WSDL annex
//! (`../shared/spec/dmp/wsdl`) at start rather than from Passerelle's own tables: for
//! each operation, the WS-Addressing Actions it is called with, the element its SOAP Body
//! must hold and the XSD that declares it, and the element and Action of its answer.
//!
//! Accepted Actions, per WS-Addressing 1.0 Metadata and what WSDL-first stacks (CXF)
//! do: the input's explicit `wsaw:Action` when the WSDL gives one; otherwise both the
//! binding's `soapAction` (when not empty) and the default Action
//! `<targetNamespace>:<portType>:<input name>` (the spelling of the official examples,
//! e.g. `urn:si-dmp-habilitations:HabilitationsEndPoint:setAuthorization`).
//!
//! The annex v2.01.04's `PatientsSpecific.wsdl` declares only `patientList`; the DMP
//! also serves `createPatientAccess`, `patientOTPUpdate` and `updatePatientAccess`
//! (TD1.5). Those come from a supplement schema, `fixtures/dmp/schemas/
//! PatientsSpecific-access-supplement.xsd`, built from the types the WSDL still carries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use passerelle_signing::xml::{self, Element, Scope};

use crate::MockError;

const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// The WSDL files of the annex and the service path that serves each (domain.md §4).
pub const WSDL_FILES: [(&str, &str); 7] = [
    ("XDS.b_DocumentRegistry.wsdl", "registry"),
    ("XDS.b_DocumentRepository.wsdl", "repository"),
    ("GestionDossierPatientPartage.wsdl", "patients"),
    ("PDQSupplier.wsdl", "patients"),
    ("Habilitations.wsdl", "habilitations"),
    ("PatientsSpecific.wsdl", "PatientSpecific"),
    ("patientCertif.wsdl", "patientCertif"),
];

/// The supplement's operations: name, request element, response element.
const SUPPLEMENT: [(&str, &str, &str); 3] = [
    (
        "createPatientAccess",
        "createPatientAccess",
        "createPatientAccessResponse",
    ),
    (
        "patientOTPUpdate",
        "patientOTPUpdate",
        "patientOTPUpdateResponse",
    ),
    (
        "updatePatientAccess",
        "updatePatientAccess",
        "updatePatientAccessResponse",
    ),
];
const SUPPLEMENT_NS: &str = "urn:si-dmp-patients";
const SUPPLEMENT_PORT: &str = "PatientSpecificEndPoint";

/// An element name: namespace URI and local name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QName {
    pub ns: String,
    pub local: String,
}

impl std::fmt::Display for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}{}", self.ns, self.local)
    }
}

/// One operation of one service.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Service path (`registry`, `patients`, ...).
    pub service: String,
    /// WSDL operation name.
    pub name: String,
    /// Accepted WS-Addressing Actions.
    pub actions: Vec<String>,
    /// The SOAP Body's element.
    pub input: QName,
    /// XSD file declaring `input`.
    pub input_schema: PathBuf,
    /// The answer's element and the XSD declaring it.
    pub output: Option<(QName, PathBuf)>,
    /// The answer's Action.
    pub output_action: String,
}

/// Every operation of the annex.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub operations: Vec<Operation>,
}

impl Catalog {
    /// Reads the WSDLs of `wsdl_dir`; the schemas embedded in them are written to
    /// `scratch` (an XSD file each) so that libxml2 can compile them.
    pub fn load(wsdl_dir: &Path, supplement: &Path, scratch: &Path) -> Result<Self, MockError> {
        std::fs::create_dir_all(scratch).map_err(|e| MockError::File {
            path: scratch.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut operations = Vec::new();
        for (file, service) in WSDL_FILES {
            let path = wsdl_dir.join(file);
            operations.extend(read_wsdl(&path, service, scratch)?);
        }
        for (name, input, output) in SUPPLEMENT {
            operations.push(Operation {
                service: "PatientSpecific".into(),
                name: name.into(),
                actions: vec![format!("{SUPPLEMENT_NS}:{SUPPLEMENT_PORT}:{name}")],
                input: QName {
                    ns: SUPPLEMENT_NS.into(),
                    local: input.into(),
                },
                input_schema: supplement.to_path_buf(),
                output: Some((
                    QName {
                        ns: SUPPLEMENT_NS.into(),
                        local: output.into(),
                    },
                    supplement.to_path_buf(),
                )),
                output_action: format!("{SUPPLEMENT_NS}:{SUPPLEMENT_PORT}:{output}"),
            });
        }
        Ok(Self { operations })
    }

    /// Service paths that have operations.
    pub fn services(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.operations.iter().map(|o| o.service.as_str()).collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// The operation `action` names on `service`.
    pub fn find(&self, service: &str, action: &str) -> Option<&Operation> {
        self.operations
            .iter()
            .find(|o| o.service == service && o.actions.iter().any(|a| a == action))
    }
}

fn file_error(path: &Path, message: impl Into<String>) -> MockError {
    MockError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn is(e: &Element, scope: &Scope, ns: &str, local: &str) -> bool {
    e.local == local && xml::namespace_of(e, scope).as_deref() == Some(ns)
}

/// Children of `e` named `(ns, local)`, with the scope they sit in.
fn children<'e>(e: &'e Element, scope: &Scope, ns: &str, local: &str) -> Vec<(&'e Element, Scope)> {
    let inner = xml::scope_of(e, scope);
    e.elements()
        .filter(|c| is(c, &inner, ns, local))
        .map(|c| (c, inner.clone()))
        .collect()
}

/// `prefix:local` resolved where `e` sits.
fn qname(value: &str, e: &Element, scope: &Scope) -> Option<QName> {
    let inner = xml::scope_of(e, scope);
    let (prefix, local) = match value.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, value),
    };
    Some(QName {
        ns: xml::resolve(&inner, prefix)?.to_string(),
        local: local.to_string(),
    })
}

/// An attribute by local name, whatever its prefix (`wsaw:Action`, `wsam:Action`).
fn any_attribute<'e>(e: &'e Element, local: &str) -> Option<&'e str> {
    e.attributes
        .iter()
        .find(|a| a.local == local)
        .map(|a| a.value.as_ref())
}

fn read_xml(path: &Path) -> Result<Element, MockError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
    xml::parse(text.trim_start_matches('\u{feff}')).map_err(|e| file_error(path, e.to_string()))
}

/// Where each global element is declared: embedded schemas (written to `scratch`) and
/// the files they import or include.
fn element_schemas(
    root: &Element,
    wsdl_path: &Path,
    scratch: &Path,
) -> Result<BTreeMap<QName, PathBuf>, MockError> {
    let dir = wsdl_path.parent().unwrap_or(Path::new("."));
    let stem = wsdl_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("wsdl");
    let mut out = BTreeMap::new();
    let top = Scope::new();
    for (types, types_scope) in children(root, &top, WSDL_NS, "types") {
        for (i, (schema, schema_scope)) in children(types, &types_scope, XSD_NS, "schema")
            .into_iter()
            .enumerate()
        {
            let mut copy = schema.clone();
            let tns = schema
                .attribute("targetNamespace")
                .unwrap_or("")
                .to_string();
            // Imports and includes resolve against the WSDL's folder.
            let mut referenced = Vec::new();
            for node in &mut copy.children {
                if let xml::Node::Element(c) = node
                    && (c.local == "import" || c.local == "include")
                {
                    let ns = if c.local == "include" {
                        tns.clone()
                    } else {
                        c.attribute("namespace").unwrap_or("").to_string()
                    };
                    for a in &mut c.attributes {
                        if a.prefix.is_none() && a.local == "schemaLocation" {
                            let full = dir.join(a.value.as_ref());
                            a.value = full.to_string_lossy().into_owned().into();
                            referenced.push((full, ns.clone()));
                        }
                    }
                }
            }
            let declared = declared_elements(&copy);
            if !declared.is_empty() {
                let file = scratch.join(format!("{stem}-{i}.xsd"));
                let text = passerelle_soap::envelope::standalone(&copy, &schema_scope);
                std::fs::write(&file, text).map_err(|e| file_error(&file, e.to_string()))?;
                for local in declared {
                    out.insert(
                        QName {
                            ns: tns.clone(),
                            local,
                        },
                        file.clone(),
                    );
                }
            }
            for (file, ns) in referenced {
                let xsd = read_xml(&file)?;
                for local in declared_elements(&xsd) {
                    out.entry(QName {
                        ns: ns.clone(),
                        local,
                    })
                    .or_insert_with(|| file.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Names of the global `xs:element`s of a schema.
fn declared_elements(schema: &Element) -> Vec<String> {
    schema
        .elements()
        .filter(|e| e.local == "element")
        .filter_map(|e| e.attribute("name").map(str::to_string))
        .collect()
}

fn read_wsdl(path: &Path, service: &str, scratch: &Path) -> Result<Vec<Operation>, MockError> {
    let root = read_xml(path)?;
    let top = Scope::new();
    let tns = root.attribute("targetNamespace").unwrap_or("").to_string();
    let schemas = element_schemas(&root, path, scratch)?;
    // message name -> element of its (single) part
    let mut messages = BTreeMap::new();
    for (m, scope) in children(&root, &top, WSDL_NS, "message") {
        let part = children(m, &scope, WSDL_NS, "part").into_iter().next();
        if let (Some(name), Some((part, part_scope))) = (m.attribute("name"), part)
            && let Some(element) = part
                .attribute("element")
                .and_then(|v| qname(v, part, &part_scope))
        {
            messages.insert(name.to_string(), element);
        }
    }
    // operation name -> soapAction (from every binding)
    let mut soap_actions: BTreeMap<String, String> = BTreeMap::new();
    for (b, scope) in children(&root, &top, WSDL_NS, "binding") {
        for (op, op_scope) in children(b, &scope, WSDL_NS, "operation") {
            let inner = xml::scope_of(op, &op_scope);
            let action = op
                .elements()
                .find(|e| {
                    e.local == "operation"
                        && xml::namespace_of(e, &inner).as_deref() != Some(WSDL_NS)
                })
                .and_then(|e| e.attribute("soapAction"))
                .unwrap_or("");
            if let Some(name) = op.attribute("name") {
                soap_actions.insert(name.to_string(), action.to_string());
            }
        }
    }
    let delimiter = if tns.starts_with("urn:") { ":" } else { "/" };
    let local_name = |q: &str| q.rsplit(':').next().unwrap_or(q).to_string();
    let mut out = Vec::new();
    for (port, scope) in children(&root, &top, WSDL_NS, "portType") {
        let port_name = port.attribute("name").unwrap_or("");
        for (op, op_scope) in children(port, &scope, WSDL_NS, "operation") {
            let name = op.attribute("name").unwrap_or("").to_string();
            let Some((input, _)) = children(op, &op_scope, WSDL_NS, "input").into_iter().next()
            else {
                continue;
            };
            let output = children(op, &op_scope, WSDL_NS, "output")
                .into_iter()
                .next();
            let message = |e: &Element| {
                e.attribute("message")
                    .map(local_name)
                    .and_then(|m| messages.get(&m).cloned())
            };
            let Some(input_element) = message(input) else {
                return Err(file_error(
                    path,
                    format!("operation {name}: input message has no element part"),
                ));
            };
            let input_name = input
                .attribute("name")
                .map_or_else(|| format!("{name}Request"), str::to_string);
            let mut actions = Vec::new();
            match any_attribute(input, "Action") {
                Some(explicit) => actions.push(explicit.to_string()),
                None => {
                    actions.push(format!(
                        "{tns}{delimiter}{port_name}{delimiter}{input_name}"
                    ));
                    if let Some(sa) = soap_actions.get(&name).filter(|s| !s.is_empty()) {
                        actions.push(sa.clone());
                    }
                }
            }
            let input_schema = schemas.get(&input_element).cloned().ok_or_else(|| {
                file_error(
                    path,
                    format!("operation {name}: no schema declares {input_element}"),
                )
            })?;
            let (output, output_action) = match output {
                Some((o, _)) => {
                    let element = message(o);
                    let output_name = o
                        .attribute("name")
                        .map_or_else(|| format!("{name}Response"), str::to_string);
                    let action = any_attribute(o, "Action").map_or_else(
                        || format!("{tns}{delimiter}{port_name}{delimiter}{output_name}"),
                        str::to_string,
                    );
                    let output = element.and_then(|e| schemas.get(&e).cloned().map(|s| (e, s)));
                    (output, action)
                }
                None => (None, String::new()),
            };
            out.push(Operation {
                service: service.to_string(),
                name,
                actions,
                input: input_element,
                input_schema,
                output,
                output_action,
            });
        }
    }
    Ok(out)
}
