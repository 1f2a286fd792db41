//! Tests of the XML layer against request and response pairs captured from vcsim
//! (`testdata/vim25-soap-samples.txt`).

use crate::client::ObjectContent;
use crate::fault::Fault;
use crate::xml::{Element, SOAPENV, VIM25, envelope};
use vic_core::MoRef;

const SAMPLES: &str = include_str!("../testdata/vim25-soap-samples.txt");

/// The XML documents of the section titled `title`: (request, response).
fn section(title: &str) -> (String, String) {
    let start = SAMPLES
        .find(&format!("### {title}"))
        .unwrap_or_else(|| panic!("no sample {title}"));
    let rest = &SAMPLES[start..];
    let end = rest[4..].find("\n###").map(|e| e + 4).unwrap_or(rest.len());
    let sec = &rest[..end];
    let docs: Vec<String> = sec
        .split("<?xml")
        .skip(1)
        .map(|d| {
            let body = format!("<?xml{d}");
            let stop = body
                .find("</soapenv:Envelope>")
                .map(|i| i + "</soapenv:Envelope>".len());
            body[..stop.unwrap_or(body.len())].to_string()
        })
        .collect();
    (docs[0].clone(), docs[1].clone())
}

fn body(doc: &str) -> Element {
    let env = Element::parse(doc.as_bytes()).expect("parse sample");
    assert_eq!(env.ns.as_deref(), Some(SOAPENV));
    env.child("Body").expect("body").children[0].clone()
}

#[test]
fn service_content_and_login_requests_match_what_vcsim_was_sent() {
    let (req, resp) = section("RetrieveServiceContent");
    let ours = envelope(
        &Element::new("RetrieveServiceContent")
            .with_moref("_this", &MoRef::new("ServiceInstance", "ServiceInstance")),
    );
    // The same element tree as the captured request.
    assert_eq!(body(&String::from_utf8(ours).unwrap()), body(&req));
    let rv = body(&resp);
    assert_eq!(rv.ns.as_deref(), Some(VIM25));
    let rv = rv.child("returnval").unwrap();
    assert_eq!(
        rv.moref_of("rootFolder"),
        Some(MoRef::new("Folder", "group-d1"))
    );
    assert_eq!(
        rv.at(&["about", "apiType"]).map(|e| e.text.as_str()),
        Some("VirtualCenter")
    );

    let (req, resp) = section("Login (any user");
    let ours = envelope(
        &Element::new("Login")
            .with_moref("_this", &MoRef::new("SessionManager", "SessionManager"))
            .with_text("userName", "user")
            .with_text("password", "pass"),
    );
    assert_eq!(body(&String::from_utf8(ours).unwrap()), body(&req));
    assert_eq!(
        body(&resp).at(&["returnval", "key"]).unwrap().text,
        "465e9f10-c5db-46ff-8afa-b611c7722b31"
    );
}

#[test]
fn not_authenticated_arrives_in_missing_set() {
    let (_, resp) = section("RetrievePropertiesEx BEFORE Login");
    let rv = body(&resp);
    let objs: Vec<ObjectContent> = rv
        .child("returnval")
        .unwrap()
        .children_named("objects")
        .map(ObjectContent::parse)
        .collect();
    assert_eq!(objs.len(), 1);
    let (path, fault) = &objs[0].missing[0];
    assert_eq!(path, "childEntity");
    // vcsim binds the instance namespace to the prefix `XMLSchema-instance`.
    assert!(fault.is_not_authenticated(), "{fault:?}");
}

#[test]
fn property_values_tasks_and_faults() {
    let (_, resp) = section("RetrievePropertiesEx with session cookie");
    let o = ObjectContent::parse(body(&resp).at(&["returnval", "objects"]).unwrap());
    let val = o.get("childEntity").unwrap();
    assert_eq!(
        val.xsi_type.as_deref(),
        Some("ArrayOfManagedObjectReference")
    );
    assert_eq!(
        val.children[0].as_moref(),
        Some(MoRef::new("Datacenter", "datacenter-2"))
    );

    let (_, resp) = section("PowerOffVM_Task");
    assert_eq!(
        body(&resp).child("returnval").unwrap().as_moref(),
        Some(MoRef::new("Task", "task-104"))
    );
    let (_, resp) = section("RetrievePropertiesEx Task");
    let o = ObjectContent::parse(body(&resp).at(&["returnval", "objects"]).unwrap());
    assert_eq!(o.text("info.state"), Some("success"));
    assert_eq!(
        o.get("info.state").unwrap().xsi_type.as_deref(),
        Some("TaskInfoState")
    );

    let (_, resp) = section("Unimplemented method");
    let f = Fault::from_soap(&body(&resp));
    assert_eq!(f.kind, "MethodNotFound");
    let e: vic_core::Error = crate::fault::Error::Fault {
        method: "RegisterExtension".into(),
        fault: Box::new(f),
    }
    .into();
    assert!(matches!(e, vic_core::Error::NotSupported(_)), "{e:?}");

    let (_, resp) = section("Login with WRONG password");
    let f = Fault::from_soap(&body(&resp));
    assert_eq!(f.kind, "InvalidLogin");
    assert_eq!(f.message, "Login failure");
}
