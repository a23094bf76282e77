//! The FFI boundary with libxml2 and libxmlsec1 (through the `xmlsec` crate's raw
//! bindings): parse a document, register an ID attribute, verify one `Signature` with
//! the public key of the signer certificate the caller checked (never a key read from
//! `KeyInfo`), and process its `Manifest` references as any standard processor does,
//! with `urn:oid:` URIs served from the documents supplied for this verification (and
//! nothing else ever read).
//!
//! Every `unsafe` block of the crate is here. Each resource has an owner type whose
//! `Drop` frees it, so no early return leaks a document, a keys manager or a context.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::{null, null_mut};

use xmlsec::bindings as x;

thread_local! {
    /// Messages xmlsec reported during the current verification on this thread.
    static ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The first field of libxml2's `xmlURI` (uri.h), the only one read; the struct is
/// allocated and freed by libxml2, never here.
#[repr(C)]
struct XmlUriHead {
    scheme: *mut c_char,
}

unsafe extern "C" {
    // libxml2 (uri.h), left out of the crate's generated bindings.
    fn xmlParseURI(text: *const c_char) -> *mut XmlUriHead;
    fn xmlFreeURI(uri: *mut XmlUriHead);
    // Present in libxmlsec1 (io.h, parser.h) but left out of the crate's generated bindings.
    fn xmlSecIOCleanupCallbacks();
    fn xmlSecIORegisterCallbacks(
        match_func: x::xmlInputMatchCallback,
        open_func: x::xmlInputOpenCallback,
        read_func: x::xmlInputReadCallback,
        close_func: x::xmlInputCloseCallback,
    ) -> c_int;
    fn xmlSecParserSetDefaultOptions(options: c_int);
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

/// Initialises xmlsec once (the crate guards it with a mutex), routes its errors to
/// [`collect_error`] instead of stderr, and replaces its URI loaders (file, HTTP, FTP)
/// by [`serve_match`] and company: a Reference can only ever reach the documents
/// supplied to the current verification.
fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // Creating a context runs the crate's one-time global initialisation.
        drop(xmlsec::XmlSecSignatureContext::new());
        // SAFETY: set global function pointers and xmlsec's loader list once, before any
        // verification runs (inside `call_once`); the callbacks are plain extern fns.
        unsafe {
            xmlSecErrorsSetCallback(Some(collect_error));
            xmlSecIOCleanupCallbacks();
            // A failure leaves no loader at all: references then fail, nothing is read.
            let _ = xmlSecIORegisterCallbacks(
                Some(serve_match),
                Some(serve_open),
                Some(serve_read),
                Some(serve_close),
            );
            // Dereferenced XML documents are parsed with no network, no DTD loading and
            // no entity substitution (xmlsec's own default, stated here on purpose).
            xmlSecParserSetDefaultOptions(
                (x::xmlParserOption_XML_PARSE_NONET
                    | x::xmlParserOption_XML_PARSE_NODICT
                    | x::xmlParserOption_XML_PARSE_HUGE) as c_int,
            );
        }
    });
}

/// One document served to `urn:oid:` references: its URI and its bytes, borrowed from
/// the caller for the verification (see [`Serving`]).
struct Served {
    uri: String,
    data: *const u8,
    len: usize,
}

thread_local! {
    /// The documents of the verification running on this thread; `None` outside one.
    /// xmlsec calls the loaders on the verifying thread, so each thread sees its own.
    static SERVED: RefCell<Option<Vec<Served>>> = const { RefCell::new(None) };
}

/// While alive, this thread's loaders serve `documents`; the lifetime keeps the
/// borrowed bytes alive at least as long.
struct Serving<'a>(PhantomData<&'a [u8]>);

impl<'a> Serving<'a> {
    fn start(documents: &'a [(&'a str, &'a [u8])]) -> Self {
        let served = documents
            .iter()
            .map(|(unique_id, bytes)| Served {
                uri: format!("urn:oid:{unique_id}"),
                data: bytes.as_ptr(),
                len: bytes.len(),
            })
            .collect();
        SERVED.with(|s| *s.borrow_mut() = Some(served));
        Serving(PhantomData)
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        SERVED.with(|s| *s.borrow_mut() = None);
    }
}

/// An open `urn:oid:` resource: which served document (`None`: an unknown uniqueId,
/// served empty so that its Reference is a digest mismatch, not a processing error)
/// and how far it was read.
struct OpenDocument {
    index: Option<usize>,
    position: usize,
}

fn uri_of(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: xmlsec passes a NUL-terminated URI valid for the call.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Accepts `urn:oid:` URIs during a verification, nothing else, ever.
unsafe extern "C" fn serve_match(uri: *const c_char) -> c_int {
    let serving = SERVED.with(|s| s.try_borrow().is_ok_and(|s| s.is_some()));
    c_int::from(serving && uri_of(uri).is_some_and(|u| u.starts_with("urn:oid:")))
}

unsafe extern "C" fn serve_open(uri: *const c_char) -> *mut c_void {
    let Some(uri) = uri_of(uri).filter(|u| u.starts_with("urn:oid:")) else {
        return null_mut();
    };
    let index = SERVED.with(|s| {
        s.try_borrow()
            .ok()
            .and_then(|s| s.as_ref().and_then(|d| d.iter().position(|d| d.uri == uri)))
    });
    Box::into_raw(Box::new(OpenDocument { index, position: 0 })).cast()
}

unsafe extern "C" fn serve_read(context: *mut c_void, buffer: *mut c_char, len: c_int) -> c_int {
    if context.is_null() || buffer.is_null() {
        return -1;
    }
    // SAFETY: `context` is the `OpenDocument` made by `serve_open`, not yet closed;
    // xmlsec uses it from this thread only.
    let open = unsafe { &mut *context.cast::<OpenDocument>() };
    let Some(index) = open.index else {
        return 0;
    };
    let want = usize::try_from(len).unwrap_or(0);
    SERVED.with(|s| {
        let Ok(s) = s.try_borrow() else { return -1 };
        let Some(doc) = s.as_ref().and_then(|d| d.get(index)) else {
            return -1;
        };
        let n = want.min(doc.len.saturating_sub(open.position));
        // SAFETY: `doc.data`/`doc.len` describe a slice the live `Serving` guard borrows
        // (SERVED holds it only while the guard lives); `position + n <= len`; `buffer`
        // has room for `len >= n` bytes (xmlsec's contract) and does not overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(doc.data.add(open.position), buffer.cast::<u8>(), n);
        }
        open.position += n;
        c_int::try_from(n).unwrap_or(-1)
    })
}

unsafe extern "C" fn serve_close(context: *mut c_void) -> c_int {
    if !context.is_null() {
        // SAFETY: made by `Box::into_raw` in `serve_open`; xmlsec closes it once.
        drop(unsafe { Box::from_raw(context.cast::<OpenDocument>()) });
    }
    0
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

struct Key(x::xmlSecKeyPtr);
impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: created by xmlSecOpenSSLAppKeyLoadMemory, kept in `SIGNER_KEYS` only,
        // destroyed once (a context owns duplicates of its value, never this key).
        unsafe { x::xmlSecKeyDestroy(self.0) }
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
    /// The signer's certificate (DER), as read from `KeyInfo/X509Data` by the caller and
    /// checked against the anchors there: the only key libxmlsec1 verifies with is this
    /// certificate's public key (`KeyInfo` itself is never read by libxmlsec1).
    pub signer_certificate: &'a [u8],
    /// `None`: `Manifest` references are not processed (a VIHF has none). `Some`: they
    /// are, `urn:oid:<uniqueId>` served from these (uniqueId, bytes), any other
    /// `urn:oid:` served empty, every other URI refused.
    pub manifest_documents: Option<&'a [(&'a str, &'a [u8])]>,
}

/// One `Manifest` Reference as libxmlsec1 processed it, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestReference {
    pub uri: String,
    /// The recomputed digest matched `DigestValue`.
    pub verified: bool,
}

/// Why libxmlsec1 refused or could not process the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub message: String,
    /// The `Manifest` Reference libxmlsec1 was processing when it gave up, if any.
    pub manifest_uri: Option<String>,
}

/// Verifies the first XML-DSig `Signature` (the root itself, or its first descendant).
/// Returns the manifest references' outcomes when libxmlsec1 says the signature is
/// valid (a failing manifest reference does not invalidate it: the caller decides).
pub(crate) fn verify(v: &Verification<'_>) -> Result<Vec<ManifestReference>, Failure> {
    init();
    ERRORS.with(|e| e.borrow_mut().clear());
    let _serving = v.manifest_documents.map(Serving::start);
    let result = verify_inner(v);
    let reasons = ERRORS.with(|e| std::mem::take(&mut *e.borrow_mut()));
    result.map_err(|mut failure| {
        if !reasons.is_empty() {
            failure.message = format!("{} ({})", failure.message, reasons.join("; "));
        }
        failure
    })
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            manifest_uri: None,
        }
    }
}

fn verify_inner(v: &Verification<'_>) -> Result<Vec<ManifestReference>, Failure> {
    let len = c_int::try_from(v.xml.len())
        .map_err(|_| Failure::from("document too large".to_string()))?;
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
        return Err(Failure::from(
            "libxml2 could not parse the document".to_string(),
        ));
    }
    let doc = Doc(doc);
    // SAFETY: `doc.0` is a valid document.
    let root = unsafe { x::xmlDocGetRootElement(doc.0) };
    if root.is_null() {
        return Err(Failure::from(
            "the document has no root element".to_string(),
        ));
    }
    if let Some(attr_name) = v.root_id_attribute {
        let name =
            CString::new(attr_name).map_err(|_| Failure::from("bad attribute name".to_string()))?;
        // SAFETY: `root` belongs to `doc`; `name` is NUL-terminated.
        let attr = unsafe { x::xmlHasProp(root, name.as_ptr().cast()) };
        if attr.is_null() {
            return Err(format!("the root element has no {attr_name} attribute").into());
        }
        // SAFETY: `attr` is an attribute of `root`; its value is read through libxml2.
        let value = unsafe { x::xmlNodeListGetString(doc.0, (*attr).children, 1) };
        if value.is_null() {
            return Err(format!("the {attr_name} attribute is empty").into());
        }
        // SAFETY: registers the attribute as an ID of `doc`; NULL means the value is already an ID.
        let id = unsafe { x::xmlAddID(null_mut(), doc.0, value, attr) };
        // SAFETY: `value` was allocated by libxml2 for us.
        unsafe { x::xmlFree.map(|free| free(value.cast())) };
        if id.is_null() {
            return Err(format!("the {attr_name} value is not unique in the document").into());
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

/// Signer keys this thread has already loaded, by their certificate's digest, newest
/// last, at most this many.
const SIGNER_KEYS_KEPT: usize = 16;

thread_local! {
    /// Loading a key from a certificate costs a DER decode and an OpenSSL 3 decoder
    /// context: 15 % of the mock DMP's samples under load (perf), for the same few
    /// signer certificates every time.
    static SIGNER_KEYS: RefCell<Vec<([u8; 32], Key)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's keys manager for `anchors` and `intermediates`.
fn with_keys_manager<R>(
    anchors: &[Vec<u8>],
    intermediates: &[Vec<u8>],
    f: impl FnOnce(x::xmlSecKeysMngrPtr) -> Result<R, Failure>,
) -> Result<R, Failure> {
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

/// Reference transforms allowed in a lot signature: the canonicalizations and the
/// digests. Anything else (XSLT, XPath) is refused rather than run on untrusted input.
fn allow_lot_transforms(ctx: x::xmlSecDSigCtxPtr) -> Result<(), Failure> {
    // SAFETY: the klass getters return static descriptors; `ctx` is a valid context.
    unsafe {
        for id in [
            x::xmlSecTransformInclC14NGetKlass(),
            x::xmlSecTransformInclC14NWithCommentsGetKlass(),
            x::xmlSecTransformInclC14N11GetKlass(),
            x::xmlSecTransformInclC14N11WithCommentsGetKlass(),
            x::xmlSecTransformExclC14NGetKlass(),
            x::xmlSecTransformExclC14NWithCommentsGetKlass(),
            x::xmlSecOpenSSLTransformSha1GetKlass(),
            x::xmlSecOpenSSLTransformSha224GetKlass(),
            x::xmlSecOpenSSLTransformSha256GetKlass(),
            x::xmlSecOpenSSLTransformSha384GetKlass(),
            x::xmlSecOpenSSLTransformSha512GetKlass(),
        ] {
            if x::xmlSecDSigCtxEnableReferenceTransform(ctx, id) < 0 {
                return Err(Failure::from(
                    "xmlsec could not restrict the reference transforms".to_string(),
                ));
            }
        }
    }
    Ok(())
}

/// The manifest references libxmlsec1 processed (or started to), in document order.
fn manifest_references(ctx: &DsigCtx) -> Vec<(String, x::xmlSecDSigStatus)> {
    let mut out = Vec::new();
    // SAFETY: `ctx.0` is a valid context; the list holds `xmlSecDSigReferenceCtx`
    // pointers owned by it, read (not kept) while it lives.
    unsafe {
        let list = &raw mut (*ctx.0).manifestReferences;
        for i in 0..x::xmlSecPtrListGetSize(list) {
            let item = x::xmlSecPtrListGetItem(list, i).cast::<x::xmlSecDSigReferenceCtx>();
            if item.is_null() {
                continue;
            }
            let uri = if (*item).uri.is_null() {
                String::new()
            } else {
                CStr::from_ptr((*item).uri.cast())
                    .to_string_lossy()
                    .into_owned()
            };
            out.push((uri, (*item).status));
        }
    }
    out
}

/// Makes the signer certificate's public key the context's verification key, so that
/// libxmlsec1 never takes a key from `KeyInfo` (where a `KeyValue` placed before
/// `X509Data` would otherwise win over the certificate the caller checks). As a second
/// line, should the key ever be left unset, `KeyInfo` reading is restricted to
/// `X509Data` and any other child stops it.
fn use_signer_key(ctx: &DsigCtx, certificate_der: &[u8]) -> Result<(), Failure> {
    let key = signer_key(certificate_der)?;
    // SAFETY: `ctx.0` is a valid context with no key yet; it takes ownership of `key`
    // (`xmlSecDSigCtxDestroy` destroys `signKey`). The enabled key data list belongs to
    // the context and holds static klass descriptors.
    unsafe {
        (*ctx.0).signKey = key;
        (*ctx.0).keyInfoReadCtx.flags |= x::XMLSEC_KEYINFO_FLAGS_STOP_ON_UNKNOWN_CHILD;
        let enabled = &raw mut (*ctx.0).keyInfoReadCtx.enabledKeyData;
        if x::xmlSecPtrListAdd(
            enabled,
            x::xmlSecOpenSSLKeyDataX509GetKlass().cast_mut().cast(),
        ) < 0
        {
            return Err(Failure::from(
                "xmlsec could not restrict KeyInfo to X509Data".to_string(),
            ));
        }
    }
    Ok(())
}

/// A new key holding the public key of `certificate_der` (its own reference to the
/// OpenSSL key of this thread's loaded copy), for one context to own.
fn signer_key(certificate_der: &[u8]) -> Result<x::xmlSecKeyPtr, Failure> {
    let digest = openssl::sha::sha256(certificate_der);
    SIGNER_KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        let at = match keys.iter().position(|(d, _)| *d == digest) {
            Some(at) => at,
            None => {
                let loaded = load_certificate_key(certificate_der)?;
                if keys.len() >= SIGNER_KEYS_KEPT {
                    keys.remove(0);
                }
                keys.push((digest, loaded));
                keys.len() - 1
            }
        };
        let cached = keys[at].1.0;
        // SAFETY: `cached` is a live key of this thread's cache (not destroyed while the
        // borrow is held). Duplicating its value takes a reference on the OpenSSL key
        // (EVP_PKEY_up_ref), and the new key owns that value once set; on a failure each
        // piece made here is destroyed once.
        unsafe {
            let held = x::xmlSecKeyGetValue(cached);
            let value = if held.is_null() {
                null_mut()
            } else {
                x::xmlSecKeyDataDuplicate(held)
            };
            if value.is_null() {
                return Err(Failure::from(
                    "xmlsec could not copy the signer certificate's key".to_string(),
                ));
            }
            let key = x::xmlSecKeyCreate();
            if key.is_null() {
                x::xmlSecKeyDataDestroy(value);
                return Err(Failure::from("xmlsec could not create a key".to_string()));
            }
            if x::xmlSecKeySetValue(key, value) < 0 {
                x::xmlSecKeyDataDestroy(value);
                x::xmlSecKeyDestroy(key);
                return Err(Failure::from(
                    "xmlsec could not set the signer certificate's key".to_string(),
                ));
            }
            Ok(key)
        }
    })
}

/// The key of a DER certificate, loaded by libxmlsec1.
fn load_certificate_key(certificate_der: &[u8]) -> Result<Key, Failure> {
    let size = u32::try_from(certificate_der.len())
        .map_err(|_| Failure::from("signer certificate too large".to_string()))?;
    // SAFETY: `certificate_der` is alive for the call and xmlsec copies it; no password
    // or callback is used for a certificate. The key returned is owned by `Key`.
    let key = unsafe {
        x::xmlSecOpenSSLAppKeyLoadMemory(
            certificate_der.as_ptr(),
            size,
            x::xmlSecKeyDataFormat_xmlSecKeyDataFormatCertDer,
            null(),
            null_mut(),
            null_mut(),
        )
    };
    if key.is_null() {
        return Err(Failure::from(
            "xmlsec could not load the key of the signer certificate".to_string(),
        ));
    }
    Ok(Key(key))
}

/// Verifies the signature under `root`; `_doc` owns `root` and outlives the call.
fn verify_with(
    mngr: x::xmlSecKeysMngrPtr,
    _doc: &Doc,
    root: x::xmlNodePtr,
    v: &Verification<'_>,
) -> Result<Vec<ManifestReference>, Failure> {
    // SAFETY: `mngr` is alive in this thread's cache for the whole call; the context is
    // destroyed (by `DsigCtx`) before this function returns.
    let ctx = DsigCtx(unsafe { x::xmlSecDSigCtxCreate(mngr) });
    if ctx.0.is_null() {
        return Err(Failure::from(
            "xmlsec could not create a signature context".to_string(),
        ));
    }
    use_signer_key(&ctx, v.signer_certificate)?;
    // SAFETY: `ctx.0` is valid; only plain fields are set.
    unsafe {
        if v.manifest_documents.is_some() {
            // `urn:oid:` counts as a remote URI for xmlsec; the loaders installed by
            // `init` serve those from the supplied documents and refuse every other.
            (*ctx.0).enabledReferenceUris =
                (x::xmlSecTransformUriTypeSameDocument | x::xmlSecTransformUriTypeRemote) as _;
        } else {
            // References may only point inside the document.
            (*ctx.0).enabledReferenceUris = x::xmlSecTransformUriTypeSameDocument as _;
            (*ctx.0).flags |= x::XMLSEC_DSIG_FLAGS_IGNORE_MANIFESTS;
        }
        // The signer's chain is checked by the caller against the given anchors only
        // (libxmlsec1's store would also trust the system's web-PKI roots).
        (*ctx.0).keyInfoReadCtx.flags |= x::XMLSEC_KEYINFO_FLAGS_X509DATA_DONT_VERIFY_CERTS;
    }
    if v.manifest_documents.is_some() {
        allow_lot_transforms(ctx.0)?;
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
        return Err(Failure::from("no XML-DSig Signature element".to_string()));
    }
    // SAFETY: `node` belongs to `doc`; `ctx` is configured above.
    let rc = unsafe { x::xmlSecDSigCtxVerify(ctx.0, node) };
    let references = manifest_references(&ctx);
    if rc < 0 {
        // Manifests are processed first, one reference after the other: one left
        // without a status is the one that stopped the processing.
        let manifest_uri = references
            .last()
            .filter(|(_, status)| *status == x::xmlSecDSigStatus_xmlSecDSigStatusUnknown)
            .map(|(uri, _)| uri.clone());
        return Err(Failure {
            message: "libxmlsec1 could not process the signature".into(),
            manifest_uri,
        });
    }
    // SAFETY: reading a plain field of a valid context.
    let status = unsafe { (*ctx.0).status };
    if status != x::xmlSecDSigStatus_xmlSecDSigStatusSucceeded {
        return Err(Failure::from(
            "libxmlsec1: the signature does not verify".to_string(),
        ));
    }
    Ok(references
        .into_iter()
        .map(|(uri, status)| ManifestReference {
            uri,
            verified: status == x::xmlSecDSigStatus_xmlSecDSigStatusSucceeded,
        })
        .collect())
}

/// Whether libxml2 reads `name` as an absolute URI: `xmlParseURI` accepts it and finds a
/// scheme. Its Canonical XML asks exactly this of every namespace name it meets, and
/// fails the whole canonicalisation (so the signature) otherwise.
pub(crate) fn is_absolute_uri(name: &str) -> bool {
    let Ok(text) = CString::new(name) else {
        return false;
    };
    // SAFETY: `text` is a NUL-terminated string that outlives the call; xmlParseURI
    // returns null or a URI it allocated, whose first field is `scheme` (null or a
    // NUL-terminated string it owns), read before the URI is freed, once, with
    // xmlFreeURI.
    unsafe {
        let uri = xmlParseURI(text.as_ptr());
        if uri.is_null() {
            return false;
        }
        let scheme = (*uri).scheme;
        let absolute = !scheme.is_null() && *scheme != 0;
        xmlFreeURI(uri);
        absolute
    }
}
