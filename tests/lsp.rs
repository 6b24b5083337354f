//! Speaks JSON-RPC to a real `qatc lsp` over stdio, as an editor would.

mod common;

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
        let mut child = Command::new(common::qatc_bin())
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

    /// The whole response message (`result` or `error`).
    fn request_message(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let message = self.receive();
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let message = self.request_message(method, params);
        assert!(message["error"].is_null(), "{method}: {message}");
        message["result"].clone()
    }

    /// Starts a server and opens `text` at `uri`; returns the published diagnostics.
    fn open(uri: &str, text: &str) -> (Client, Vec<Value>) {
        let mut c = Client::start();
        c.initialize();
        let diagnostics = c.open_another(uri, text);
        (c, diagnostics)
    }

    fn initialize(&mut self) -> Value {
        let init = self.request(
            "initialize",
            json!({"processId": null, "rootUri": null, "capabilities": {}}),
        );
        self.notify("initialized", json!({}));
        init
    }

    fn open_another(&mut self, uri: &str, text: &str) -> Vec<Value> {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "qat", "version": 1, "text": text}}),
        );
        self.diagnostics()
    }

    /// The next `publishDiagnostics`: its document and diagnostics.
    fn publication(&mut self) -> (String, Vec<Value>) {
        loop {
            let message = self.receive();
            if message["method"] == "textDocument/publishDiagnostics" {
                let params = &message["params"];
                return (
                    params["uri"].as_str().unwrap().to_string(),
                    params["diagnostics"].as_array().unwrap().clone(),
                );
            }
        }
    }

    fn close(mut self) {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        assert!(self.child.wait().unwrap().success());
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn diagnostics(&mut self) -> Vec<Value> {
        self.publication().1
    }
}

fn position(line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": URI}, "position": {"line": line, "character": character}})
}

/// The labels of a completion answer.
fn labels(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap().to_string())
        .collect()
}

/// The text after applying a list of LSP text edits (single-line ranges, as ours are).
fn apply(text: &str, edits: &[Value]) -> String {
    let offset = |p: &Value| {
        let line = p["line"].as_u64().unwrap() as usize;
        let start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
        start + p["character"].as_u64().unwrap() as usize
    };
    let mut edits: Vec<(usize, usize, &str)> = edits
        .iter()
        .map(|e| {
            (
                offset(&e["range"]["start"]),
                offset(&e["range"]["end"]),
                e["newText"].as_str().unwrap(),
            )
        })
        .collect();
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_string();
    for (start, end, new) in edits {
        out.replace_range(start..end, new);
    }
    out
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

#[test]
fn unknown_methods_answer_method_not_found_and_bad_params_invalid_params() {
    let (mut c, _) = Client::open(URI, BROKEN);
    let answer = c.request_message("textDocument/noSuchThing", json!({}));
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    let answer = c.request_message("textDocument/hover", json!({"nonsense": 1}));
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    c.close();
}

const BLOCKS: &str = "block conv_bn(x: tensor, filters: int) {\n    let c = conv2d(x, filters = filters, kernel = 3)\n    let b = batch_norm(c)\n    output b\n}\n\nmodel M {\n    input image: f32[1, 28, 28]\n    let feat = conv_bn(image, filters = 8)\n    let flat = flatten(feat)\n    let logits = dense(flat, units = 10)\n    output logits\n}\n";

#[test]
fn completion_on_unfinished_lines_offers_bindings_ops_blocks_and_arguments() {
    // The line being typed does not parse, so the model drops out of the AST.
    let typing = BLOCKS.replace(
        "    output logits\n",
        "    let y = con\n    output logits\n",
    );
    let (mut c, diagnostics) = Client::open(URI, &typing);
    assert!(!diagnostics.is_empty(), "the unfinished line is an error");
    let items = c.request("textDocument/completion", position(11, 15));
    let got = labels(&items);
    for want in [
        "image", "feat", "flat", "logits", "conv2d", "conv_bn", "relu",
    ] {
        assert!(
            got.contains(&want.to_string()),
            "{want} missing from {got:?}"
        );
    }
    assert!(
        !got.contains(&"y".to_string()),
        "the name being defined is not in scope yet"
    );
    assert!(
        !got.contains(&"c".to_string()),
        "the block's names stay in the block"
    );

    // In an unclosed op call: its arguments, with their defaults, not those already given.
    let typing = BLOCKS.replace(
        "    output logits\n",
        "    let y = conv2d(feat, kernel = 3, fil\n    output logits\n",
    );
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": typing}]}),
    );
    c.diagnostics();
    let items = c.request("textDocument/completion", position(11, 40));
    let got = labels(&items);
    assert!(got.contains(&"filters".to_string()), "{got:?}");
    assert!(
        !got.contains(&"kernel".to_string()),
        "kernel is given: {got:?}"
    );
    let stride = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["label"] == "stride")
        .unwrap();
    assert!(
        stride["detail"].as_str().unwrap().contains("default: 1"),
        "{stride}"
    );
    assert_eq!(stride["insertText"], "stride = ");
    let filters = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["label"] == "filters")
        .unwrap();
    assert!(
        filters["detail"].as_str().unwrap().contains("required"),
        "{filters}"
    );

    // In an unclosed block call: the block's parameters.
    let typing = BLOCKS.replace(
        "    output logits\n",
        "    let y = conv_bn(feat, fi\n    output logits\n",
    );
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 3}, "contentChanges": [{"text": typing}]}),
    );
    c.diagnostics();
    let got = labels(&c.request("textDocument/completion", position(11, 28)));
    assert!(got.contains(&"filters".to_string()), "{got:?}");
    assert!(
        !got.contains(&"x".to_string()),
        "x is given by position: {got:?}"
    );
    c.close();
}

#[test]
fn signature_help_marks_the_argument_being_typed() {
    let typing = BLOCKS.replace(
        "    output logits\n",
        "    let y = conv2d(feat, filters = 4, kernel = \n    output logits\n",
    );
    let (mut c, _) = Client::open(URI, &typing);
    let help = c.request("textDocument/signatureHelp", position(11, 47));
    let signature = &help["signatures"][0];
    let label = signature["label"].as_str().unwrap();
    assert!(
        label.starts_with("conv2d(x, filters, kernel, stride = 1"),
        "{label}"
    );
    let active = help["activeParameter"].as_u64().unwrap() as usize;
    let range = &signature["parameters"][active]["label"];
    let (start, end) = (
        range[0].as_u64().unwrap() as usize,
        range[1].as_u64().unwrap() as usize,
    );
    assert_eq!(&label[start..end], "kernel");
    // After the last comma: the first named argument not given yet.
    let typing = BLOCKS.replace(
        "    output logits\n",
        "    let y = conv2d(feat, filters = 4, \n    output logits\n",
    );
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": typing}]}),
    );
    c.diagnostics();
    let help = c.request("textDocument/signatureHelp", position(11, 38));
    assert_eq!(help["activeParameter"], 2, "kernel: {help}");

    // A block call's first (positional) parameter.
    let typing = BLOCKS.replace(
        "    output logits\n",
        "    let y = conv_bn(\n    output logits\n",
    );
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 3}, "contentChanges": [{"text": typing}]}),
    );
    c.diagnostics();
    let help = c.request("textDocument/signatureHelp", position(11, 20));
    assert_eq!(
        help["signatures"][0]["label"],
        "conv_bn(x: tensor, filters: int)"
    );
    assert_eq!(help["activeParameter"], 0);
    c.close();
}

#[test]
fn hover_on_a_block_call_binding_shows_the_block_and_the_shapes() {
    let (mut c, diagnostics) = Client::open(URI, BLOCKS);
    assert_eq!(diagnostics, Vec::<Value>::new());
    // `feat` in `let feat = conv_bn(image, filters = 8)`.
    let hover = c.request("textDocument/hover", position(8, 9));
    let text = hover["contents"]["value"].as_str().unwrap();
    for part in [
        "feat: f32[8, 26, 26]",
        "block conv_bn(x: tensor, filters: int)",
        "image: f32[1, 28, 28]",
        "filters = 8",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert!(
        !text.contains("batch_norm"),
        "not the block's last op: {text}"
    );
    c.close();
}

#[test]
fn inlay_hints_show_each_bindings_shape_and_quantization() {
    let (mut c, _) = Client::open(URI, BLOCKS);
    let hints = c.request(
        "textDocument/inlayHint",
        json!({"textDocument": {"uri": URI}, "range": {"start": {"line": 6, "character": 0}, "end": {"line": 13, "character": 0}}}),
    );
    let hints: Vec<(u64, u64, String)> = hints
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["position"]["line"].as_u64().unwrap(),
                h["position"]["character"].as_u64().unwrap(),
                h["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        hints,
        vec![
            (8, 12, ": [8, 26, 26] A8".to_string()),
            (9, 12, ": [5408] A8".to_string()),
            (10, 14, ": [10] W8A8".to_string()),
        ]
    );
    c.close();
}

/// A client with BLOCKS split in two open: `lib.qat` (the block) and the model at URI
/// importing it, both checked clean.
fn library_and_importer() -> (Client, &'static str, &'static str, String) {
    let lib_uri = "file:///tmp/qatc-lsp-test/lib.qat";
    let lib = &BLOCKS[..BLOCKS.find("model").unwrap()];
    let main = format!(
        "use \"lib.qat\"\n{}",
        &BLOCKS[BLOCKS.find("model").unwrap()..]
    );
    let mut c = Client::start();
    c.initialize();
    assert_eq!(c.open_another(lib_uri, lib), Vec::<Value>::new());
    assert_eq!(c.open_another(URI, &main), Vec::<Value>::new());
    (c, lib_uri, lib, main)
}

#[test]
fn rename_and_references_cover_bindings_and_blocks_across_importers() {
    let (mut c, lib_uri, lib, main) = library_and_importer();

    // `flat`: defined on line 4, used on line 5.
    let refs = c.request(
        "textDocument/references",
        json!({"textDocument": {"uri": URI}, "position": {"line": 5, "character": 24}, "context": {"includeDeclaration": true}}),
    );
    let lines: Vec<u64> = refs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["range"]["start"]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 5]);

    let edit = c.request(
        "textDocument/rename",
        json!({"textDocument": {"uri": URI}, "position": {"line": 4, "character": 9}, "newName": "flattened"}),
    );
    let renamed = apply(&main, edit["changes"][URI].as_array().unwrap());
    assert!(
        renamed.contains(
            "let flattened = flatten(feat)\n    let logits = dense(flattened, units = 10)"
        ),
        "{renamed}"
    );

    // The block, from a call in the importer: its definition and every call, in both files.
    let edit = c.request(
        "textDocument/rename",
        json!({"textDocument": {"uri": URI}, "position": {"line": 3, "character": 16}, "newName": "stem"}),
    );
    let in_lib = apply(lib, edit["changes"][lib_uri].as_array().unwrap());
    assert!(in_lib.starts_with("block stem(x: tensor"), "{in_lib}");
    let in_main = apply(&main, edit["changes"][URI].as_array().unwrap());
    assert!(
        in_main.contains("let feat = stem(image, filters = 8)"),
        "{in_main}"
    );

    // A block parameter, from a named argument in the importer.
    let edit = c.request(
        "textDocument/rename",
        json!({"textDocument": {"uri": URI}, "position": {"line": 3, "character": 31}, "newName": "width"}),
    );
    let in_lib = apply(lib, edit["changes"][lib_uri].as_array().unwrap());
    assert!(
        in_lib.starts_with("block conv_bn(x: tensor, width: int)"),
        "{in_lib}"
    );
    assert!(
        in_lib.contains("conv2d(x, filters = width, kernel = 3)"),
        "{in_lib}"
    );
    let in_main = apply(&main, edit["changes"][URI].as_array().unwrap());
    assert!(in_main.contains("conv_bn(image, width = 8)"), "{in_main}");

    // Invalid names are refused, built-in ops cannot be renamed.
    let answer = c.request_message(
        "textDocument/rename",
        json!({"textDocument": {"uri": URI}, "position": {"line": 4, "character": 9}, "newName": "relu"}),
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("built-in op"),
        "{answer}"
    );
    let answer = c.request_message(
        "textDocument/prepareRename",
        json!({"textDocument": {"uri": URI}, "position": {"line": 4, "character": 17}}),
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be renamed"),
        "{answer}"
    );
    c.close();
}

#[test]
fn editing_an_imported_file_rechecks_the_files_that_import_it() {
    let (mut c, lib_uri, lib, _) = library_and_importer();
    // The block loses its `filters` parameter: the importer's call now passes an unknown one.
    let changed = lib
        .replace(", filters: int", "")
        .replace("filters = filters", "filters = 4");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": lib_uri, "version": 2}, "contentChanges": [{"text": changed}]}),
    );
    let (uri, lib_diagnostics) = c.publication();
    assert_eq!((uri.as_str(), lib_diagnostics.len()), (lib_uri, 0));
    let (uri, main_diagnostics) = c.publication();
    assert_eq!(uri, URI);
    assert_eq!(main_diagnostics.len(), 1, "{main_diagnostics:?}");
    assert_eq!(main_diagnostics[0]["code"], "E0004");
    // Saving it back re-checks the importer again.
    c.notify(
        "textDocument/didSave",
        json!({"textDocument": {"uri": lib_uri}, "text": lib}),
    );
    assert_eq!(c.publication().0, lib_uri);
    assert_eq!(c.publication(), (URI.to_string(), Vec::new()));
    c.close();
}

#[test]
fn quick_fixes_replace_misspelled_names_and_add_missing_arguments() {
    let (mut c, diagnostics) = Client::open(URI, BROKEN);
    // The did-you-mean travels as the diagnostic's data.
    assert_eq!(
        diagnostics[0]["data"]["replacement"], "filters",
        "{:?}",
        diagnostics[0]
    );
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": URI}, "range": diagnostics[0]["range"], "context": {"diagnostics": diagnostics}}),
    );
    let action = &actions[0];
    assert_eq!(action["kind"], "quickfix");
    assert_eq!(action["title"], "replace with `filters`");
    let fixed = apply(BROKEN, action["edit"]["changes"][URI].as_array().unwrap());
    assert_eq!(fixed, BROKEN.replace("filter =", "filters ="));

    // A missing required argument: the fix adds it with a valid value.
    let missing = fixed.replace("dense(f, units = 10)", "dense(f)");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": missing}]}),
    );
    let diagnostics = c.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    // Without the client's copy of the diagnostic: the server's own are used.
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": URI}, "range": diagnostics[0]["range"], "context": {"diagnostics": []}}),
    );
    assert_eq!(actions[0]["title"], "add `units = 1`");
    let fixed = apply(
        &missing,
        actions[0]["edit"]["changes"][URI].as_array().unwrap(),
    );
    assert!(fixed.contains("dense(f, units = 1)"), "{fixed}");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 3}, "contentChanges": [{"text": fixed}]}),
    );
    assert_eq!(c.diagnostics(), Vec::<Value>::new());

    // A misspelled annotation: the fix keeps the `@`.
    let annotated = fixed.replace("    let f = flatten(x)", "    @flaot let f = flatten(x)");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 4}, "contentChanges": [{"text": annotated}]}),
    );
    let diagnostics = c.diagnostics();
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": URI}, "range": diagnostics[0]["range"], "context": {"diagnostics": diagnostics}}),
    );
    let fixed = apply(
        &annotated,
        actions[0]["edit"]["changes"][URI].as_array().unwrap(),
    );
    assert!(fixed.contains("    @float let f = flatten(x)"), "{fixed}");
    c.close();
}

#[test]
fn quick_fixes_turn_a_pytorch_style_line_into_qatc() {
    const PORTED: &str = "model Ported {\n    input image: f32[3, 8, 8]\n    let c = conv2d(image, in_channels = 3, out_channels = 4, kernel_size = 3, padding = 1)\n    let g = GlobalAveragePooling2D(c)\n    let f = Linear(g, out_features = 10)\n    output f\n}\n";
    let (mut c, mut diagnostics) = Client::open(URI, PORTED);
    // One error per foreign word, none of them a follow-on ("needs the argument").
    assert_eq!(diagnostics.len(), 6, "{diagnostics:?}");
    let mut text = PORTED.to_string();
    // Each round applies the first quick fix; the foreign words give way one by one.
    for version in 2.. {
        if diagnostics.is_empty() {
            break;
        }
        assert!(version < 20, "quick fixes do not converge: {text}");
        let actions = c.request(
            "textDocument/codeAction",
            json!({"textDocument": {"uri": URI}, "range": diagnostics[0]["range"], "context": {"diagnostics": diagnostics}}),
        );
        text = apply(
            &text,
            actions[0]["edit"]["changes"][URI].as_array().unwrap(),
        );
        c.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": URI, "version": version}, "contentChanges": [{"text": text}]}),
        );
        diagnostics = c.diagnostics();
    }
    assert!(
        text.contains("let c = conv2d(image, filters = 4, kernel = 3, padding = same)"),
        "{text}"
    );
    assert!(text.contains("let g = global_avg_pool(c)"), "{text}");
    assert!(text.contains("let f = dense(g, units = 10)"), "{text}");
    c.close();
}

#[test]
fn the_outline_shows_the_names_bound_in_both_branches_of_an_if() {
    const IF: &str = "block down(x: tensor, stride: int = 1) {\n    if stride != 1 {\n        let pooled = max_pool2d(x, size = 2)\n        let y = pooled\n    } else {\n        let y = x\n    }\n    output y\n}\n\nmodel M {\n    input image: f32[1, 28, 28]\n    let d = down(image, stride = 2)\n    let f = flatten(d)\n    let logits = dense(f, units = 10)\n    output logits\n}\n";
    let (mut c, diagnostics) = Client::open(URI, IF);
    assert_eq!(diagnostics, Vec::<Value>::new());
    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": URI}}),
    );
    let block = &symbols[0];
    assert_eq!(block["name"], "down");
    let names = |s: &Value| -> Vec<String> {
        s["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(block), ["if"], "{block}");
    let branch = &block["children"][0];
    assert_eq!(branch["detail"], "stride != 1");
    assert_eq!(names(branch), ["pooled", "y", "else"]);
    assert_eq!(names(&branch["children"][2]), ["y"]);
    c.close();
}
