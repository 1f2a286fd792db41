//! The session renewal of datastore transfers, which vcsim cannot show (it serves
//! `/folder` without checking the session): a small fake SDK on a loopback port that
//! answers the service content and logins, and refuses `/folder` with 401 for every
//! session but the newest.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vic_core::DsPath;
use vic_vsphere::{Client, ClientOptions};

const SERVICE_CONTENT: &str = r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>
<rootFolder type="Folder">group-d1</rootFolder>
<propertyCollector type="PropertyCollector">propertyCollector</propertyCollector>
<sessionManager type="SessionManager">SessionManager</sessionManager>
<about><fullName>fake</fullName><apiType>VirtualCenter</apiType></about>
</returnval></RetrieveServiceContentResponse>"#;

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

#[derive(Default)]
struct Fake {
    /// The newest session; older ones are expired.
    session: AtomicU32,
    /// Paths of the GETs that were refused.
    refused: Mutex<Vec<String>>,
}

fn serve(fake: Arc<Fake>, mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
    );
    let mut length = 0usize;
    let mut cookie = String::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().unwrap(),
            "cookie" => cookie = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body = String::from_utf8_lossy(&body);
    let current = format!(
        "vmware_soap_session={}",
        fake.session.load(Ordering::SeqCst)
    );
    let (status, headers, text) = if method == "POST" && body.contains("<RetrieveServiceContent") {
        ("200 OK", String::new(), envelope(SERVICE_CONTENT))
    } else if method == "POST" && body.contains("<Login") {
        let n = fake.session.fetch_add(1, Ordering::SeqCst) + 1;
        (
            "200 OK",
            format!("Set-Cookie: vmware_soap_session={n}; HttpOnly\r\n"),
            envelope(&format!(
                r#"<LoginResponse xmlns="urn:vim25"><returnval><key>{n}</key></returnval></LoginResponse>"#
            )),
        )
    } else if path.starts_with("/folder/") && cookie == current {
        ("200 OK", String::new(), "content".to_string())
    } else {
        fake.refused.lock().unwrap().push(path.clone());
        ("401 Unauthorized", String::new(), String::new())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}Content-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .unwrap();
}

#[tokio::test]
async fn a_refused_transfer_logs_in_again_and_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Fake::default());
    let f = fake.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            serve(f.clone(), s.unwrap());
        }
    });
    let url = format!("http://u:p@{addr}/sdk");
    let client = Client::connect(&url, &ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(client.logins(), 1);
    let file = DsPath::new("ds1", "a/b.txt");
    assert_eq!(client.download("DC0", &file).await.unwrap(), b"content");
    assert_eq!(client.logins(), 1);
    // The session expires on the server: the next transfer is refused once, the
    // client logs in again and the transfer succeeds.
    fake.session.fetch_add(1, Ordering::SeqCst);
    assert_eq!(client.download("DC0", &file).await.unwrap(), b"content");
    assert_eq!(client.logins(), 2);
    assert_eq!(
        fake.refused.lock().unwrap().as_slice(),
        ["/folder/a/b.txt?dcPath=DC0&dsName=ds1"]
    );
}
