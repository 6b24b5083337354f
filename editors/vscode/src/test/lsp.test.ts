// Drives `qatc lsp` the way the extension does: the server started with the extension's
// arguments, spoken to through vscode-languageserver-protocol, the protocol library
// under vscode-languageclient (VS Code itself is not needed).
import { test } from "node:test";
import * as assert from "assert";
import * as cp from "child_process";
import {
  CompletionItem,
  CompletionRequest,
  createProtocolConnection,
  DefinitionRequest,
  DidChangeTextDocumentNotification,
  DidOpenTextDocumentNotification,
  DocumentSymbol,
  DocumentSymbolRequest,
  ExitNotification,
  HoverRequest,
  InitializedNotification,
  InitializeRequest,
  Location,
  MarkupContent,
  PublishDiagnosticsNotification,
  PublishDiagnosticsParams,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-languageserver-protocol/node";
import { qatcBinary, skipReason } from "./qatc";
import { serverArgs } from "../server";

const uri = "file:///tmp/qatc-vscode-test/net.qat";
const broken = [
  "model M {",
  "    input image: f32[1, 28, 28]",
  "    let x = conv2d(image, filter = 8, kernel = 3)",
  "    let f = flatten(x)",
  "    let logits = dense(f, units = 10)",
  "    output logits",
  "}",
  "",
].join("\n");

test("the extension's server answers diagnostics, hover, definition, completion and symbols", { skip: skipReason() ?? false }, async () => {
  const server = cp.spawn(qatcBinary()!, serverArgs, { stdio: ["pipe", "pipe", "inherit"] });
  const connection = createProtocolConnection(new StreamMessageReader(server.stdout!), new StreamMessageWriter(server.stdin!));
  const published: PublishDiagnosticsParams[] = [];
  let waiting: (() => void) | undefined;
  connection.onNotification(PublishDiagnosticsNotification.type, (p) => {
    published.push(p);
    waiting?.();
  });
  const nextDiagnostics = async () => {
    while (published.length === 0) await new Promise<void>((resolve) => (waiting = resolve));
    return published.shift()!;
  };
  connection.listen();
  try {
    const init = await connection.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      rootUri: null,
      capabilities: {},
    });
    assert.ok(init.capabilities.hoverProvider);
    assert.ok(init.capabilities.completionProvider);
    await connection.sendNotification(InitializedNotification.type, {});

    await connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: "qat", version: 1, text: broken },
    });
    const first = await nextDiagnostics();
    assert.strictEqual(first.diagnostics.length, 1, JSON.stringify(first.diagnostics));
    assert.strictEqual(first.diagnostics[0].code, "E0004");
    assert.deepStrictEqual(first.diagnostics[0].range, { start: { line: 2, character: 26 }, end: { line: 2, character: 32 } });

    await connection.sendNotification(DidChangeTextDocumentNotification.type, {
      textDocument: { uri, version: 2 },
      contentChanges: [{ text: broken.replace("filter =", "filters =") }],
    });
    assert.deepStrictEqual((await nextDiagnostics()).diagnostics, []);

    const hover = await connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 3, character: 20 } });
    const hoverText = (hover!.contents as MarkupContent).value;
    assert.match(hoverText, /\[8, 26, 26\]/);

    const definition = (await connection.sendRequest(DefinitionRequest.type, {
      textDocument: { uri },
      position: { line: 3, character: 20 },
    })) as Location;
    assert.deepStrictEqual(definition.range.start, { line: 2, character: 8 });

    const items = (await connection.sendRequest(CompletionRequest.type, {
      textDocument: { uri },
      position: { line: 2, character: 26 },
    })) as CompletionItem[];
    const labels = items.map((i) => i.label);
    for (const want of ["kernel", "image", "relu6"]) assert.ok(labels.includes(want), `${want} missing from ${labels}`);

    const symbols = (await connection.sendRequest(DocumentSymbolRequest.type, { textDocument: { uri } })) as DocumentSymbol[];
    assert.strictEqual(symbols[0].name, "M");

    await connection.sendRequest(ShutdownRequest.type);
    const exited = new Promise<number | null>((resolve) => server.on("exit", resolve));
    await connection.sendNotification(ExitNotification.type);
    assert.strictEqual(await exited, 0);
  } finally {
    connection.dispose();
    server.kill();
  }
});
