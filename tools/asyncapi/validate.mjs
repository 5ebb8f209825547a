// Validate one AsyncAPI document with the reference parser (@asyncapi/parser).
// Usage: node validate.mjs [FILE]   (no FILE, or "-": read standard input)
// Exit 0 when valid (warnings are printed); 1 with every error diagnostic otherwise; 2 on misuse.
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
if (process.argv.length > 3) {
  console.error("usage: node validate.mjs [FILE|-]");
  process.exit(2);
}
const text = readFileSync(!path || path === "-" ? 0 : path, "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const where = (d) => (d.path && d.path.length ? "#/" + d.path.join("/") : "#");
let errors = 0;
for (const d of diagnostics) {
  const level = d.severity === DiagnosticSeverity.Error ? "error" : "warning";
  if (level === "error") errors += 1;
  console.log(`${level} ${d.code} ${where(d)}: ${d.message}`);
}
if (errors > 0 || !document) {
  console.log(`invalid: ${errors} error(s)`);
  process.exit(1);
}
console.log(`valid: AsyncAPI ${document.version()}, ${document.channels().length} channel(s), ${document.messages().length} message(s)`);
