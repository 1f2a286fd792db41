//! A small element tree for SOAP messages, read with quick-xml's namespace-aware reader
//! and written with its writer.
//!
//! vim25 is polymorphic through `xsi:type`: a `<val>` or `<device>` says which type it
//! holds. The attribute's prefix is whatever the server bound to the XML Schema instance
//! namespace (vcsim writes `XMLSchema-instance:type`, vCenter `xsi:type`), so the reader
//! resolves it by namespace, and resolves the prefix of the type name too.

use std::borrow::Cow;
use std::io::Cursor;

use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};
use quick_xml::name::{Namespace, QName, ResolveResult};
use quick_xml::reader::NsReader;
use quick_xml::writer::Writer;
use vic_core::MoRef;

/// The XML Schema instance namespace, home of the `type` attribute.
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The XML Schema namespace (`xsd:string`, `xsd:int`).
pub const XSD: &str = "http://www.w3.org/2001/XMLSchema";
/// The vim25 namespace.
pub const VIM25: &str = "urn:vim25";
/// The SOAP 1.1 envelope namespace.
pub const SOAPENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// One element: its local name, namespace, resolved `xsi:type`, plain attributes, text
/// and child elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Namespace URI, when the element is in one.
    pub ns: Option<String>,
    /// The local name of its `xsi:type`, if it has one.
    pub xsi_type: Option<String>,
    /// Attributes that are not namespace declarations nor `xsi:type`, by local name.
    pub attrs: Vec<(String, String)>,
    /// Text content (concatenated, unescaped).
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

/// Malformed XML or a message of the wrong shape.
#[derive(Debug, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(pub String);

impl Element {
    /// An empty element named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ..Default::default()
        }
    }

    /// An element with an `xsi:type`.
    pub fn typed(name: impl Into<String>, xsi_type: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            xsi_type: Some(xsi_type.into()),
            ..Default::default()
        }
    }

    /// An element holding `text`.
    pub fn text(name: impl Into<String>, text: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            text: text.into(),
            ..Default::default()
        }
    }

    /// A managed object reference element: `<name type="Kind">value</name>`.
    pub fn moref(name: impl Into<String>, r: &MoRef) -> Self {
        Element {
            name: name.into(),
            attrs: vec![("type".into(), r.kind.clone())],
            text: r.value.clone(),
            ..Default::default()
        }
    }

    /// Appends a child (builder style).
    pub fn with(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    /// Appends a text child (builder style).
    pub fn with_text(self, name: &str, text: impl Into<String>) -> Self {
        self.with(Element::text(name, text))
    }

    /// Appends a text child when `text` is `Some`.
    pub fn with_opt(self, name: &str, text: Option<impl Into<String>>) -> Self {
        match text {
            Some(t) => self.with_text(name, t),
            None => self,
        }
    }

    /// Appends a managed object reference child.
    pub fn with_moref(self, name: &str, r: &MoRef) -> Self {
        self.with(Element::moref(name, r))
    }

    /// Appends children.
    pub fn with_all(mut self, children: impl IntoIterator<Item = Element>) -> Self {
        self.children.extend(children);
        self
    }

    /// Adds a plain attribute.
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.push((name.into(), value.into()));
        self
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The descendant at `path` (child names, one level each).
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, n| e.child(n))
    }

    /// The text of the child `name`, if present.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// A plain attribute's value.
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// This element read as a managed object reference, if it is one.
    pub fn as_moref(&self) -> Option<MoRef> {
        let kind = self.get_attr("type")?;
        Some(MoRef::new(kind, self.text.trim()))
    }

    /// The managed object reference in child `name`.
    pub fn moref_of(&self, name: &str) -> Option<MoRef> {
        self.child(name).and_then(Element::as_moref)
    }

    /// The type of this element: its `xsi:type`, else its name.
    pub fn type_name(&self) -> &str {
        self.xsi_type.as_deref().unwrap_or(&self.name)
    }

    /// Parses a document and returns its root element.
    pub fn parse(xml: &[u8]) -> Result<Element, XmlError> {
        let mut reader = NsReader::from_reader(Cursor::new(xml));
        let mut buf = Vec::new();
        let mut stack: Vec<Element> = Vec::new();
        let mut root = None;
        loop {
            let (ns, event) = reader
                .read_resolved_event_into(&mut buf)
                .map_err(|e| XmlError(e.to_string()))?;
            let ns = ns_string(&ns)?;
            match event {
                Event::Start(start) => {
                    let el = open(&reader, ns, &start)?;
                    stack.push(el);
                }
                Event::Empty(start) => {
                    let el = open(&reader, ns, &start)?;
                    close(&mut stack, &mut root, el)?;
                }
                Event::End(_) => {
                    let el = stack
                        .pop()
                        .ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                    close(&mut stack, &mut root, el)?;
                }
                Event::Text(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&t.xml10_content());
                    }
                }
                Event::CData(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let s: String = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = r.xml10_content();
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| XmlError(format!("unknown entity &{name};")))?
                                .to_string()
                        }
                        Err(e) => return Err(XmlError(e.to_string())),
                    };
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&s);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if !stack.is_empty() {
            return Err(XmlError("document ends inside an element".into()));
        }
        root.ok_or_else(|| XmlError("empty document".into()))
    }

    /// Writes this element (and its subtree) with `writer`. The root of a vim25 method
    /// carries `xmlns="urn:vim25"`; `xsi:type` is written with the `xsi` prefix, which
    /// the envelope binds.
    pub fn write<W: std::io::Write>(
        &self,
        writer: &mut Writer<W>,
        default_ns: Option<&str>,
    ) -> std::io::Result<()> {
        let mut start = BytesStart::new(self.name.as_str());
        if let Some(ns) = default_ns {
            start.push_attribute(("xmlns", ns));
        }
        if let Some(t) = &self.xsi_type {
            start.push_attribute(("xsi:type", t.as_str()));
        }
        for (k, v) in &self.attrs {
            start.push_attribute((k.as_str(), v.as_str()));
        }
        if self.children.is_empty() && self.text.is_empty() {
            return writer.write_event(Event::Empty(start));
        }
        writer.write_event(Event::Start(start.borrow()))?;
        if !self.text.is_empty() {
            writer.write_event(Event::Text(BytesText::new(&self.text)))?;
        }
        for c in &self.children {
            c.write(writer, None)?;
        }
        writer.write_event(Event::End(start.to_end()))
    }
}

fn ns_string(ns: &ResolveResult<'_>) -> Result<Option<String>, XmlError> {
    match ns {
        ResolveResult::Bound(Namespace(n)) => Ok(Some(n.to_string())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(XmlError(format!("undeclared namespace prefix {p}"))),
    }
}

/// Builds the element for a start tag: resolves attribute names and the `xsi:type`
/// value's prefix through the reader's namespace bindings.
fn open<R>(
    reader: &NsReader<R>,
    ns: Option<String>,
    start: &BytesStart<'_>,
) -> Result<Element, XmlError> {
    let local = start.local_name();
    let name = local.as_ref().to_string();
    let mut el = Element {
        name,
        ns,
        ..Default::default()
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError(e.to_string()))?;
        let key = attr.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let value: Cow<'_, str> = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| XmlError(e.to_string()))?;
        let (attr_ns, attr_local) = reader.resolver().resolve_attribute(key);
        let attr_local = attr_local.as_ref().to_string();
        match attr_ns {
            ResolveResult::Bound(Namespace(n)) if n == XSI => {
                if attr_local == "type" {
                    el.xsi_type = Some(resolve_type(reader, &value)?);
                }
            }
            ResolveResult::Bound(_) => {}
            ResolveResult::Unknown(p) => {
                return Err(XmlError(format!("undeclared namespace prefix {p}")));
            }
            ResolveResult::Unbound => el.attrs.push((attr_local, value.into_owned())),
        }
    }
    Ok(el)
}

/// The local part of an `xsi:type` value, after checking that its prefix is bound to
/// vim25 or XML Schema (or that it has none, which means the default namespace).
fn resolve_type<R>(reader: &NsReader<R>, value: &str) -> Result<String, XmlError> {
    let (ns, local) = reader.resolver().resolve_element(QName(value));
    let local = local.as_ref().to_string();
    match ns {
        ResolveResult::Bound(Namespace(n)) if n == VIM25 || n == XSD => Ok(local),
        ResolveResult::Bound(Namespace(n)) => {
            Err(XmlError(format!("xsi:type {value} is in namespace {n}")))
        }
        ResolveResult::Unbound => Ok(local),
        ResolveResult::Unknown(p) => Err(XmlError(format!(
            "xsi:type {value} uses the undeclared prefix {p}"
        ))),
    }
}

fn close(
    stack: &mut [Element],
    root: &mut Option<Element>,
    mut el: Element,
) -> Result<(), XmlError> {
    // Indentation between child elements is not content.
    if !el.children.is_empty() && el.text.trim().is_empty() {
        el.text.clear();
    }
    match stack.last_mut() {
        Some(parent) => {
            parent.children.push(el);
            Ok(())
        }
        None if root.is_none() => {
            *root = Some(el);
            Ok(())
        }
        None => Err(XmlError("more than one root element".into())),
    }
}

/// The SOAP envelope around one vim25 method call, as bytes to POST.
pub fn envelope(method: &Element) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    let write = |w: &mut Writer<Vec<u8>>| -> std::io::Result<()> {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let mut env = BytesStart::new("soapenv:Envelope");
        env.push_attribute(("xmlns:soapenv", SOAPENV));
        env.push_attribute(("xmlns:xsd", XSD));
        env.push_attribute(("xmlns:xsi", XSI));
        w.write_event(Event::Start(env.borrow()))?;
        let body = BytesStart::new("soapenv:Body");
        w.write_event(Event::Start(body.borrow()))?;
        method.write(w, Some(VIM25))?;
        w.write_event(Event::End(body.to_end()))?;
        w.write_event(Event::End(env.to_end()))
    };
    // Writing into a Vec cannot fail.
    let _ = write(&mut w);
    w.into_inner()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn xsi_type_is_resolved_by_namespace_not_prefix() {
        let doc = br#"<r xmlns="urn:vim25" xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" xmlns:q="http://www.w3.org/2001/XMLSchema" xmlns:bogus="urn:other">
            <a XMLSchema-instance:type="ArrayOfManagedObjectReference"/>
            <b xmlns:zz="http://www.w3.org/2001/XMLSchema-instance" zz:type="q:string">x &amp; y &#65;</b>
            <c bogus:type="NotAType" type="Folder">group-d1</c>
        </r>"#;
        let root = Element::parse(doc).unwrap();
        assert_eq!(root.ns.as_deref(), Some(VIM25));
        assert_eq!(
            root.child("a").unwrap().xsi_type.as_deref(),
            Some("ArrayOfManagedObjectReference")
        );
        let b = root.child("b").unwrap();
        assert_eq!(b.xsi_type.as_deref(), Some("string"));
        assert_eq!(b.text, "x & y A");
        let c = root.child("c").unwrap();
        assert_eq!(
            c.xsi_type, None,
            "a `type` in another namespace is no xsi:type"
        );
        assert_eq!(c.as_moref(), Some(MoRef::new("Folder", "group-d1")));
        // A type name whose prefix names a foreign namespace is refused.
        let bad = br#"<r xmlns:x="http://www.w3.org/2001/XMLSchema-instance" xmlns:o="urn:other"><d x:type="o:Thing"/></r>"#;
        assert!(Element::parse(bad).is_err());
        // So is an undeclared prefix.
        assert!(Element::parse(br#"<r><d p:x="1"/></r>"#).is_err());
    }

    #[test]
    fn writes_and_reads_back() {
        let m = Element::new("CreateFolder")
            .with_moref("_this", &MoRef::new("Folder", "group-v3"))
            .with_text("name", "a <b> & \"c\"")
            .with(Element::typed("val", "OptionValue").with_text("key", "k"));
        let bytes = envelope(&m);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#"<CreateFolder xmlns="urn:vim25">"#),
            "{text}"
        );
        assert!(text.contains(r#"<val xsi:type="OptionValue">"#), "{text}");
        let env = Element::parse(&bytes).unwrap();
        assert_eq!(env.name, "Envelope");
        assert_eq!(env.ns.as_deref(), Some(SOAPENV));
        let back = env.at(&["Body", "CreateFolder"]).unwrap();
        assert_eq!(back.ns.as_deref(), Some(VIM25));
        assert_eq!(back.text_of("name"), Some("a <b> & \"c\""));
        assert_eq!(
            back.moref_of("_this"),
            Some(MoRef::new("Folder", "group-v3"))
        );
        assert_eq!(
            back.child("val").unwrap().xsi_type.as_deref(),
            Some("OptionValue")
        );
    }
}
