// How the extension starts the language server; kept free of the `vscode` module so
// the tests start the server exactly as the extension does.
export const serverArgs = ["lsp"];
export const defaultServerPath = "qatc";
export const documentSelector = [{ scheme: "file", language: "qat" }];
