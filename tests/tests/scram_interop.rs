//! SCRAM-SHA-256 against an independent implementation: a Python peer built on the
//! standard library's PBKDF2 and HMAC (`tests/py/scram_peer.py`). Our server accepts its
//! client and refuses a wrong password; our client completes an exchange with its server
//! and verifies its signature.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

use switchboard_broker::auth::{
    ScramClient, ScramCredential, ScramCredentials, ScramError, ScramServer,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/scram_peer.py");

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(mode: &str, user: &str, password: &str) -> Peer {
        let mut child = Command::new("python3")
            .args([SCRIPT, mode, user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Peer {
            child,
            stdin,
            stdout,
        }
    }

    fn read(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        assert!(!line.is_empty(), "the Python peer ended early");
        line.trim_end().to_owned()
    }

    fn write(&mut self, msg: &[u8]) {
        self.stdin.write_all(msg).expect("write");
        self.stdin.write_all(b"\n").expect("write");
        self.stdin.flush().expect("flush");
    }

    fn finish(mut self) {
        let status = self.child.wait().expect("python3 ends");
        assert!(status.success(), "the Python peer failed");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct OneUser(ScramCredential);

impl ScramCredentials for OneUser {
    fn scram_credential(&self, user: &str) -> Option<ScramCredential> {
        (user == "alice").then(|| self.0.clone())
    }
    fn mock_credential(&self, _user: &str) -> ScramCredential {
        ScramCredential {
            salt: vec![7; 16],
            iterations: 4096,
            stored_key: [0; 32],
            server_key: [0; 32],
        }
    }
}

fn run_python_client(
    creds: Arc<OneUser>,
    user: &str,
    password: &str,
) -> (String, Result<String, ScramError>) {
    let mut py = Peer::start("client", user, password);
    let mut server = ScramServer::new(creds).expect("server");
    let first = server.start(py.read().as_bytes()).expect("start");
    py.write(&first);
    let result = server.finish(py.read().as_bytes());
    match &result {
        Ok((last, _)) => py.write(last),
        Err(e) => py.write(format!("e={}", e.server_error_value()).as_bytes()),
    }
    let verdict = py.read();
    py.finish();
    (verdict, result.map(|(_, u)| u))
}

#[test]
fn our_server_accepts_an_independent_client_and_refuses_a_wrong_password() {
    let creds = Arc::new(OneUser(
        ScramCredential::new(b"correct horse", 4096).expect("credential"),
    ));
    let (verdict, user) = run_python_client(creds.clone(), "alice", "correct horse");
    assert_eq!(user, Ok("alice".to_owned()));
    assert_eq!(
        verdict, "verified",
        "the Python client verified our signature"
    );
    let (verdict, user) = run_python_client(creds, "alice", "battery staple");
    assert_eq!(user, Err(ScramError::InvalidProof));
    assert_eq!(verdict, "refused: e=invalid-proof");
}

#[test]
fn our_client_completes_an_exchange_with_an_independent_server() {
    let mut py = Peer::start("server", "bob", "pencil");
    let mut client = ScramClient::new("bob", b"pencil").expect("client");
    py.write(&client.client_first());
    let fin = client
        .client_final(py.read().as_bytes())
        .expect("client final");
    py.write(&fin);
    client
        .verify_server(py.read().as_bytes())
        .expect("the Python server's signature verifies");
    py.finish();

    let mut py = Peer::start("server", "bob", "pencil");
    let mut client = ScramClient::new("bob", b"wrong").expect("client");
    py.write(&client.client_first());
    let fin = client
        .client_final(py.read().as_bytes())
        .expect("client final");
    py.write(&fin);
    assert_eq!(
        client.verify_server(py.read().as_bytes()),
        Err(ScramError::ServerError("invalid-proof".into()))
    );
    py.finish();
}
