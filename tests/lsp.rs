//! Speaks JSON-RPC to a real `qatc lsp` over stdio, as an editor would.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qatc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("qatc lsp starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn receive(&mut self) -> Value {
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = n.parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let message = self.receive();
            if message["id"] == json!(id) {
                return message["result"].clone();
            }
        }
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn diagnostics(&mut self) -> Vec<Value> {
        loop {
            let message = self.receive();
            if message["method"] == "textDocument/publishDiagnostics" {
                return message["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }
}

const URI: &str = "file:///tmp/qatc-lsp-test/net.qat";
const BROKEN: &str = "model M {\n    input image: f32[1, 28, 28]\n    let x = conv2d(image, filter = 8, kernel = 3)\n    let f = flatten(x)\n    let logits = dense(f, units = 10)\n    output logits\n}\n";

#[test]
fn language_server_publishes_diagnostics_and_answers_hover_and_completion() {
    let mut c = Client::start();
    let init = c.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    assert!(init["capabilities"]["hoverProvider"].as_bool().unwrap());
    c.notify("initialized", json!({}));

    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": URI, "languageId": "qat", "version": 1, "text": BROKEN}}),
    );
    let diagnostics = c.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["code"], "E0004");
    // `filter` on line 2 (0-based), characters 26..32.
    assert_eq!(
        diagnostics[0]["range"],
        json!({"start": {"line": 2, "character": 26}, "end": {"line": 2, "character": 32}})
    );

    let fixed = BROKEN.replace("filter =", "filters =");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": fixed}]}),
    );
    assert_eq!(c.diagnostics(), Vec::<Value>::new());

    // Hover on `x` in `flatten(x)`: its shape and quantization.
    let hover = c.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": URI}, "position": {"line": 3, "character": 20}}),
    );
    let text = hover["contents"]["value"].as_str().unwrap();
    assert!(text.contains("[8, 26, 26]"), "{text}");
    assert!(text.contains("int8"), "{text}");
    // Hover on the model's name: its summary.
    let hover = c.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": URI}, "position": {"line": 0, "character": 6}}),
    );
    let text = hover["contents"]["value"].as_str().unwrap();
    for part in [
        "model `M`",
        "params",
        "MACs",
        "int8 bytes",
        "[8, 26, 26]",
        "total",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // Hover on the op name: its documentation.
    let hover = c.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": URI}, "position": {"line": 2, "character": 14}}),
    );
    assert!(hover["contents"]["value"]
        .as_str()
        .unwrap()
        .contains("filters"));

    // Go to definition of `x` leads to its `let`.
    let def = c.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": URI}, "position": {"line": 3, "character": 20}}),
    );
    assert_eq!(def["range"]["start"], json!({"line": 2, "character": 8}));

    // Completion inside `conv2d(`: argument names, names in scope and ops.
    let items = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": URI}, "position": {"line": 2, "character": 26}}),
    );
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    for want in ["kernel", "groups", "image", "relu6"] {
        assert!(labels.contains(&want), "{want} missing from {labels:?}");
    }

    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": URI}}),
    );
    assert_eq!(symbols[0]["name"], "M");
    let formatting = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": URI}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    assert_eq!(formatting, json!([]), "the document is already formatted");

    c.request("shutdown", Value::Null);
    c.notify("exit", Value::Null);
    assert!(c.child.wait().unwrap().success());
}
