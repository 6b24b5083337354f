// Starts `qatc lsp` for .qat files: diagnostics, hover, go to definition,
// completion, document symbols and formatting all come from the server.
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";
import { defaultServerPath, documentSelector, serverArgs } from "./server";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const command = vscode.workspace.getConfiguration("qat").get<string>("server.path", defaultServerPath);
  const serverOptions: ServerOptions = { command, args: serverArgs };
  const clientOptions: LanguageClientOptions = { documentSelector };
  client = new LanguageClient("qat", "qat language server", serverOptions, clientOptions);
  context.subscriptions.push(client);
  await client.start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
