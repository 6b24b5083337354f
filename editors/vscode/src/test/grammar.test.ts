// Checks, without VS Code, that the manifest, grammar and language configuration
// are well-formed and agree with each other.
import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";

const root = path.join(__dirname, "..", "..");
const read = (file: string) => JSON.parse(fs.readFileSync(path.join(root, file), "utf8"));

const pkg = read("package.json");
const language = pkg.contributes.languages[0];
const grammar = read(pkg.contributes.grammars[0].path);
const config = read(language.configuration);

assert.deepStrictEqual(language.extensions, [".qat"]);
assert.strictEqual(grammar.scopeName, pkg.contributes.grammars[0].scopeName);
assert.strictEqual(config.comments.lineComment, "//");

// Every pattern compiles as a JavaScript regular expression.
const patterns: RegExp[] = [];
const walk = (node: unknown): void => {
  if (Array.isArray(node)) node.forEach(walk);
  else if (node && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if ((key === "match" || key === "begin" || key === "end") && typeof value === "string") patterns.push(new RegExp(value));
      else walk(value);
    }
  }
};
walk(grammar);
assert.ok(patterns.length > 5);
const keywordPattern = grammar.patterns.find((p: { name?: string }) => p.name === "keyword.other.qat");
assert.ok(new RegExp(keywordPattern.match).test("let x = relu(y)"));
console.log(`ok: ${patterns.length} grammar patterns compile`);
