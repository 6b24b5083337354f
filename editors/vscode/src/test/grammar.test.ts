// Checks, without VS Code, that the manifest, grammar and language configuration agree,
// and that the grammar colours real lines the way a reader expects (tokenized by
// vscode-textmate with the Oniguruma engine, as VS Code does).
import { test } from "node:test";
import * as assert from "assert";
import * as cp from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as oniguruma from "vscode-oniguruma";
import * as textmate from "vscode-textmate";
import { extensionRoot, qatcBinary } from "./qatc";

const read = (file: string) => JSON.parse(fs.readFileSync(path.join(extensionRoot, file), "utf8"));
const pkg = read("package.json");
const language = pkg.contributes.languages[0];
const grammarPath: string = pkg.contributes.grammars[0].path;
const grammarJson = read(grammarPath);

test("manifest, grammar and language configuration agree", () => {
  assert.deepStrictEqual(language.extensions, [".qat"]);
  assert.strictEqual(grammarJson.scopeName, pkg.contributes.grammars[0].scopeName);
  assert.strictEqual(read(language.configuration).comments.lineComment, "//");
  for (const script of ["compile", "vscode:prepublish", "test"]) assert.ok(pkg.scripts[script], `script ${script}`);
});

async function loadGrammar(): Promise<textmate.IGrammar> {
  const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new textmate.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns: string[]) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s: string) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async () =>
      textmate.parseRawGrammar(fs.readFileSync(path.join(extensionRoot, grammarPath), "utf8"), grammarPath),
  });
  const grammar = await registry.loadGrammar(grammarJson.scopeName);
  assert.ok(grammar);
  return grammar;
}

// The innermost scope of each named piece of text on a line.
function scopesOf(grammar: textmate.IGrammar, line: string): Map<string, string> {
  const { tokens } = grammar.tokenizeLine(line, textmate.INITIAL);
  const scopes = new Map<string, string>();
  for (const t of tokens) {
    const text = line.slice(t.startIndex, t.endIndex).trim();
    if (text && !scopes.has(text)) scopes.set(text, t.scopes[t.scopes.length - 1]);
  }
  return scopes;
}

test("bindings, ops, blocks and named arguments get distinct colours", async () => {
  const grammar = await loadGrammar();
  const binding = scopesOf(grammar, "    let x = relu(y)");
  assert.strictEqual(binding.get("let"), "keyword.other.qat");
  assert.strictEqual(binding.get("x"), "variable.other.definition.qat");
  assert.strictEqual(binding.get("relu"), "support.function.op.qat");

  const call = scopesOf(grammar, "    let a, b = split(x, filters = 8, padding = same)");
  assert.strictEqual(call.get("a"), "variable.other.definition.qat");
  assert.strictEqual(call.get("b"), "variable.other.definition.qat");
  assert.strictEqual(call.get("split"), "entity.name.function.block.call.qat");
  assert.strictEqual(call.get("filters"), "variable.parameter.qat");
  assert.strictEqual(call.get("same"), "constant.language.qat");

  const block = scopesOf(grammar, "block split(x: tensor, n: int) {");
  assert.strictEqual(block.get("split"), "entity.name.function.block.qat");
  const input = scopesOf(grammar, "    input image: f32[1, 28, 28]");
  assert.strictEqual(input.get("image"), "variable.other.definition.qat");
  const comment = scopesOf(grammar, "    // let x = relu(y)");
  assert.strictEqual(comment.get("// let x = relu(y)"), "comment.line.double-slash.qat");
});

test("the grammar's op list is qatc's", { skip: qatcBinary() ? false : "no qatc executable" }, () => {
  const listing = cp.execFileSync(qatcBinary()!, ["explain", "ops"], { encoding: "utf8" });
  const fromQatc = [...listing.matchAll(/^([a-z_0-9]+)\(/gm)].map((m) => m[1]).sort();
  const opPattern = grammarJson.patterns.find(
    (p: { captures?: Record<string, { name: string }> }) => p.captures?.["1"]?.name === "support.function.op.qat",
  );
  const fromGrammar = /\\b\(([^)]*)\)/.exec(opPattern.match)![1].split("|").sort();
  assert.ok(fromQatc.length > 5);
  assert.deepStrictEqual(fromGrammar, fromQatc);
});
