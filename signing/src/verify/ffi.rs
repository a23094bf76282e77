//! The FFI boundary with libxml2 and libxmlsec1 (through the `xmlsec` crate's raw
//! bindings): parse a document, register an ID attribute, verify one `Signature` with
//! a keys manager that trusts only the given anchors.
//!
//! Every `unsafe` block of the crate is here. Each resource has an owner type whose
//! `Drop` frees it, so no early return leaks a document, a keys manager or a context.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::{null, null_mut};

use xmlsec::bindings as x;

thread_local! {
    /// Messages xmlsec reported during the current verification on this thread.
    static ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C" {
    // Present in libxmlsec1 (errors.h) but left out of the crate's generated bindings.
    fn xmlSecErrorsSetCallback(
        callback: Option<
            unsafe extern "C" fn(
                file: *const c_char,
                line: c_int,
                func: *const c_char,
                error_object: *const c_char,
                error_subject: *const c_char,
                reason: c_int,
                msg: *const c_char,
            ),
        >,
    );
}

unsafe extern "C" fn collect_error(
    _file: *const c_char,
    _line: c_int,
    func: *const c_char,
    _error_object: *const c_char,
    _error_subject: *const c_char,
    _reason: c_int,
    msg: *const c_char,
) {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: xmlsec passes NUL-terminated strings valid for the call.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let message = format!("{}: {}", text(func), text(msg));
    ERRORS.with(|e| e.borrow_mut().push(message));
}

/// Initialises xmlsec once (the crate guards it with a mutex) and routes its errors to
/// [`collect_error`] instead of stderr.
fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // Creating a context runs the crate's one-time global initialisation.
        drop(xmlsec::XmlSecSignatureContext::new());
        // SAFETY: sets a global function pointer; the callback is a plain extern fn.
        unsafe { xmlSecErrorsSetCallback(Some(collect_error)) };
    });
}

struct Doc(x::xmlDocPtr);
impl Drop for Doc {
    fn drop(&mut self) {
        // SAFETY: the pointer came from xmlReadMemory and is freed once, here.
        unsafe { x::xmlFreeDoc(self.0) }
    }
}

struct KeysMngr(x::xmlSecKeysMngrPtr);
impl Drop for KeysMngr {
    fn drop(&mut self) {
        // SAFETY: created by xmlSecKeysMngrCreate, destroyed once, after the context using it.
        unsafe { x::xmlSecKeysMngrDestroy(self.0) }
    }
}

struct DsigCtx(x::xmlSecDSigCtxPtr);
impl Drop for DsigCtx {
    fn drop(&mut self) {
        // SAFETY: created by xmlSecDSigCtxCreate, destroyed once.
        unsafe { x::xmlSecDSigCtxDestroy(self.0) }
    }
}

/// What to verify.
pub(crate) struct Verification<'a> {
    pub xml: &'a str,
    /// Register this attribute of the root element as an XML ID (SAML `ID`).
    pub root_id_attribute: Option<&'a str>,
    /// DER certificates trusted as anchors.
    pub anchors: &'a [Vec<u8>],
    /// DER certificates usable to build the chain, not trusted by themselves.
    pub intermediates: &'a [Vec<u8>],
    /// Leave `Manifest` references to the caller (their URIs are not resolvable here).
    pub ignore_manifests: bool,
}

/// Verifies the first XML-DSig `Signature` (the root itself, or its first descendant).
/// Returns `Ok(())` when libxmlsec1 says the signature and the signer's chain are valid.
pub(crate) fn verify(v: &Verification<'_>) -> Result<(), String> {
    init();
    ERRORS.with(|e| e.borrow_mut().clear());
    let result = verify_inner(v);
    let reasons = ERRORS.with(|e| std::mem::take(&mut *e.borrow_mut()));
    result.map_err(|message| {
        if reasons.is_empty() {
            message
        } else {
            format!("{message} ({})", reasons.join("; "))
        }
    })
}

fn verify_inner(v: &Verification<'_>) -> Result<(), String> {
    let len = c_int::try_from(v.xml.len()).map_err(|_| "document too large".to_string())?;
    // No network, no entity substitution, no DTD loading: only the options below.
    let options = x::xmlParserOption_XML_PARSE_NONET as c_int;
    // SAFETY: buffer and length describe `v.xml`, alive for the call; the result is owned by `Doc`.
    let doc = unsafe {
        x::xmlReadMemory(
            v.xml.as_ptr().cast(),
            len,
            null(),
            c"UTF-8".as_ptr(),
            options,
        )
    };
    if doc.is_null() {
        return Err("libxml2 could not parse the document".into());
    }
    let doc = Doc(doc);
    // SAFETY: `doc.0` is a valid document.
    let root = unsafe { x::xmlDocGetRootElement(doc.0) };
    if root.is_null() {
        return Err("the document has no root element".into());
    }
    if let Some(attr_name) = v.root_id_attribute {
        let name = CString::new(attr_name).map_err(|_| "bad attribute name".to_string())?;
        // SAFETY: `root` belongs to `doc`; `name` is NUL-terminated.
        let attr = unsafe { x::xmlHasProp(root, name.as_ptr().cast()) };
        if attr.is_null() {
            return Err(format!("the root element has no {attr_name} attribute"));
        }
        // SAFETY: `attr` is an attribute of `root`; its value is read through libxml2.
        let value = unsafe { x::xmlNodeListGetString(doc.0, (*attr).children, 1) };
        if value.is_null() {
            return Err(format!("the {attr_name} attribute is empty"));
        }
        // SAFETY: registers the attribute as an ID of `doc`; NULL means the value is already an ID.
        let id = unsafe { x::xmlAddID(null_mut(), doc.0, value, attr) };
        // SAFETY: `value` was allocated by libxml2 for us.
        unsafe { x::xmlFree.map(|free| free(value.cast())) };
        if id.is_null() {
            return Err(format!(
                "the {attr_name} value is not unique in the document"
            ));
        }
    }

    with_keys_manager(v.anchors, v.intermediates, |mngr| {
        verify_with(mngr, &doc, root, v)
    })
}

thread_local! {
    /// Keys managers already built on this thread, by their certificates' digest. Building
    /// one costs tens of milliseconds (libxmlsec1's X509 store also loads the system CA
    /// bundle), so each thread builds one per trust set and reuses it.
    static MANAGERS: RefCell<Vec<([u8; 32], KeysMngr)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's keys manager for `anchors` and `intermediates`.
fn with_keys_manager<R>(
    anchors: &[Vec<u8>],
    intermediates: &[Vec<u8>],
    f: impl FnOnce(x::xmlSecKeysMngrPtr) -> Result<R, String>,
) -> Result<R, String> {
    let mut hasher = openssl::sha::Sha256::new();
    for der in anchors {
        hasher.update(b"A");
        hasher.update(der);
    }
    for der in intermediates {
        hasher.update(b"I");
        hasher.update(der);
    }
    let key = hasher.finish();
    let mngr = MANAGERS.with(|m| {
        let found = m
            .borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, mngr)| mngr.0);
        match found {
            Some(ptr) => Ok(ptr),
            None => {
                let mngr = keys_manager(anchors, intermediates)?;
                let ptr = mngr.0;
                m.borrow_mut().push((key, mngr));
                Ok::<_, String>(ptr)
            }
        }
    })?;
    f(mngr)
}

fn keys_manager(anchors: &[Vec<u8>], intermediates: &[Vec<u8>]) -> Result<KeysMngr, String> {
    // SAFETY: plain constructor; owned by `KeysMngr`.
    let mngr = KeysMngr(unsafe { x::xmlSecKeysMngrCreate() });
    if mngr.0.is_null() {
        return Err("xmlsec could not create a keys manager".into());
    }
    // SAFETY: `mngr.0` is a fresh keys manager.
    if unsafe { x::xmlSecOpenSSLAppDefaultKeysMngrInit(mngr.0) } < 0 {
        return Err("xmlsec could not initialise the keys manager".into());
    }
    for (certs, kind) in [
        (anchors, x::xmlSecKeyDataTypeTrusted),
        (intermediates, x::xmlSecKeyDataTypeNone),
    ] {
        for der in certs {
            let size = u32::try_from(der.len()).map_err(|_| "certificate too large".to_string())?;
            // SAFETY: `der` is alive for the call; xmlsec copies the certificate.
            let rc = unsafe {
                x::xmlSecOpenSSLAppKeysMngrCertLoadMemory(
                    mngr.0,
                    der.as_ptr(),
                    size,
                    x::xmlSecKeyDataFormat_xmlSecKeyDataFormatDer,
                    kind,
                )
            };
            if rc < 0 {
                return Err("xmlsec refused a trust certificate".into());
            }
        }
    }
    Ok(mngr)
}

/// Verifies the signature under `root`; `_doc` owns `root` and outlives the call.
fn verify_with(
    mngr: x::xmlSecKeysMngrPtr,
    _doc: &Doc,
    root: x::xmlNodePtr,
    v: &Verification<'_>,
) -> Result<(), String> {
    // SAFETY: `mngr` is alive in this thread's cache for the whole call; the context is
    // destroyed (by `DsigCtx`) before this function returns.
    let ctx = DsigCtx(unsafe { x::xmlSecDSigCtxCreate(mngr) });
    if ctx.0.is_null() {
        return Err("xmlsec could not create a signature context".into());
    }
    // SAFETY: `ctx.0` is valid; only plain fields are set.
    unsafe {
        // References may only point inside the document: no file or network fetches.
        (*ctx.0).enabledReferenceUris = x::xmlSecTransformUriTypeSameDocument as _;
        if v.ignore_manifests {
            (*ctx.0).flags |= x::XMLSEC_DSIG_FLAGS_IGNORE_MANIFESTS;
        }
        // The signer's chain is checked by the caller against the given anchors only
        // (libxmlsec1's store would also trust the system's web-PKI roots).
        (*ctx.0).keyInfoReadCtx.flags |= x::XMLSEC_KEYINFO_FLAGS_X509DATA_DONT_VERIFY_CERTS;
    }
    let dsig_ns = c"http://www.w3.org/2000/09/xmldsig#";
    // SAFETY: `root` is valid; the name/ns literals are NUL-terminated.
    let node = unsafe {
        let is_signature = !(*root).name.is_null()
            && CStr::from_ptr((*root).name.cast()) == c"Signature"
            && !(*root).ns.is_null()
            && !(*(*root).ns).href.is_null()
            && CStr::from_ptr((*(*root).ns).href.cast()) == dsig_ns;
        if is_signature {
            root
        } else {
            x::xmlSecFindNode(root, c"Signature".as_ptr().cast(), dsig_ns.as_ptr().cast())
        }
    };
    if node.is_null() {
        return Err("no XML-DSig Signature element".into());
    }
    // SAFETY: `node` belongs to `doc`; `ctx` is configured above.
    let rc = unsafe { x::xmlSecDSigCtxVerify(ctx.0, node) };
    if rc < 0 {
        return Err("libxmlsec1 could not process the signature".into());
    }
    // SAFETY: reading a plain field of a valid context.
    let status = unsafe { (*ctx.0).status };
    if status == x::xmlSecDSigStatus_xmlSecDSigStatusSucceeded {
        Ok(())
    } else {
        Err("libxmlsec1: the signature does not verify".into())
    }
}
