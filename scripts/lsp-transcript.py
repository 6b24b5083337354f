#!/usr/bin/env python3
"""A scripted editor session against `qatc lsp`: completion on an unfinished line,
signature help, a rename, a quick fix and inlay hints, printed as a transcript.

    python3 scripts/lsp-transcript.py [path/to/qatc]   (default: target/release/qatc)
"""
import json
import subprocess
import sys

QATC = sys.argv[1] if len(sys.argv) > 1 else "target/release/qatc"
URI = "file:///tmp/qatc-transcript/net.qat"
TEXT = """block conv_bn(x: tensor, filters: int) {
    let c = conv2d(x, filters = filters, kernel = 3)
    let b = batch_norm(c)
    output b
}

model M {
    input image: f32[1, 28, 28]
    let feat = conv_bn(image, filters = 8)
    let flat = flaten(feat)
    let logits = dense(flat, units = 10)
    output logits
}
"""

server = subprocess.Popen([QATC, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
next_id = 0


def send(message):
    body = json.dumps(message).encode()
    server.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    server.stdin.flush()


def receive():
    length = 0
    while True:
        line = server.stdout.readline().strip()
        if not line:
            break
        if line.startswith(b"Content-Length: "):
            length = int(line.split(b": ")[1])
    return json.loads(server.stdout.read(length))


def request(method, params):
    global next_id
    next_id += 1
    send({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params})
    while True:
        message = receive()
        if message.get("id") == next_id:
            return message.get("result", message.get("error"))


def notify(method, params):
    send({"jsonrpc": "2.0", "method": method, "params": params})


def diagnostics():
    while True:
        message = receive()
        if message.get("method") == "textDocument/publishDiagnostics":
            return message["params"]["diagnostics"]


def change(text, version):
    notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": version},
                                      "contentChanges": [{"text": text}]})
    return diagnostics()


def at(line, character):
    return {"textDocument": {"uri": URI}, "position": {"line": line, "character": character}}


def show(title, value):
    print(f"--- {title}")
    print(value if isinstance(value, str) else json.dumps(value, indent=1))


request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
notify("initialized", {})
notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "qat", "version": 1, "text": TEXT}})
found = diagnostics()
show("diagnostics on open", [(d["code"], d["message"].splitlines()[0], d.get("data")) for d in found])

# Quick fix for the did-you-mean (`flaten` -> `flatten`).
actions = request("textDocument/codeAction", {"textDocument": {"uri": URI}, "range": found[0]["range"],
                                                "context": {"diagnostics": found}})
show("codeAction", [(a["title"], a["edit"]["changes"][URI]) for a in actions])
text = TEXT.replace("flaten(", "flatten(")
show("diagnostics after applying it", change(text, 2))

# Typing a new line: `let y = con`, then `let y = conv2d(flat, fil`.
typing = text.replace("    output logits\n", "    let y = con\n    output logits\n")
change(typing, 3)
items = request("textDocument/completion", at(11, 15))
show("completion at `    let y = con|`", [i["label"] for i in items])
typing = text.replace("    output logits\n", "    let y = conv_bn(feat, fil\n    output logits\n")
change(typing, 4)
items = request("textDocument/completion", at(11, 29))
show("completion at `    let y = conv_bn(feat, fil|` (first entries)",
     [(i["label"], i.get("detail")) for i in items[:3]])
typing = text.replace("    output logits\n", "    let y = conv2d(feat, filters = 4, \n    output logits\n")
change(typing, 5)
items = request("textDocument/completion", at(11, 38))
show("completion at `    let y = conv2d(feat, filters = 4, |` (arguments)",
     [(i["label"], i.get("detail")) for i in items if i["kind"] == 5])
help = request("textDocument/signatureHelp", at(11, 38))
show("signatureHelp there", {"label": help["signatures"][0]["label"], "activeParameter": help.get("activeParameter")})

change(text, 6)
edit = request("textDocument/rename", {**at(9, 9), "newName": "flattened"})
show("rename `flat` -> `flattened`", edit)
hover = request("textDocument/hover", at(8, 9))
show("hover on `feat` (a block call)", hover["contents"]["value"])
hints = request("textDocument/inlayHint", {"textDocument": {"uri": URI},
                                           "range": {"start": {"line": 0, "character": 0}, "end": {"line": 13, "character": 0}}})
lines = text.splitlines()
show("inlay hints (rendered)", "\n".join(
    lines[h["position"]["line"]][:h["position"]["character"]] + h["label"] + lines[h["position"]["line"]][h["position"]["character"]:]
    for h in hints))
show("unknown method", request("textDocument/noSuchThing", {}))
request("shutdown", None)
notify("exit", None)
server.wait()
