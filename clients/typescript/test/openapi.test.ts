import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import openapiTS, { astToString } from "openapi-typescript";
import { packageRoot, pairs, recordingFetch, startServer, type Server } from "./harness.js";

const run = promisify(execFile);
const generated = path.join(packageRoot, "generated");
const checkFile = path.join(packageRoot, "typecheck", "openapi.ts");

let server: Server;
let document: Record<string, any>;
before(async () => {
  server = await startServer({ settings: { BOTSTATE_MAX_STATES: "250" }, accounts: 30, tickers: 20 });
  document = (await (await fetch(`${server.url}/openapi.json`)).json()) as Record<string, any>;
});
after(() => server?.stop());

/** Incompatible changes to the document, each of which the check must catch, and the check that fails. */
const incompatible: Array<[string, (doc: Record<string, any>) => void, RegExp]> = [
  ["a row's version becomes a string", (doc) => (doc.components.schemas.StateRow.properties.version.type = "string"), /Mismatch<"StateRow"/],
  ["results lose their index", (doc) => {
    const result = doc.components.schemas.ItemResult;
    delete result.properties.index;
    result.required = result.required.filter((name: string) => name !== "index");
  }, /Mismatch<"ItemResult"/],
  ["writes stop taking an Idempotency-Key", (doc) => {
    const post = doc.paths["/api/bots/{slug}/state"].post;
    post.parameters = post.parameters.filter((p: { in: string }) => p.in !== "header");
  }, /Mismatch<"POST \/state headers"/],
  ["the write path moves", (doc) => {
    doc.paths["/api/bots/{slug}/states"] = doc.paths["/api/bots/{slug}/state"];
    delete doc.paths["/api/bots/{slug}/state"];
  }, /Property '\/api\/bots\/\{slug\}\/state' does not exist on type 'paths'/],
];

/** generated/openapi.d.ts (what typecheck/openapi.ts imports) from `doc`, as openapi-typescript writes it. */
async function generate(doc: unknown, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "openapi.json"), JSON.stringify(doc, null, 2));
  // A member with a default is optional in a request body; the generator's default makes it required.
  const ast = await openapiTS(doc as Parameters<typeof openapiTS>[0], { defaultNonNullable: false });
  await writeFile(path.join(dir, "openapi.d.ts"), astToString(ast));
}

test("the client's wire types match the live server's /openapi.json, and the check catches incompatible changes", async () => {
  // One tsc run: typecheck/openapi.ts against the live document, and a copy of it against each changed one.
  await generate(document, generated);
  const source = await readFile(checkFile, "utf8");
  const copies = await Promise.all(
    incompatible.map(async ([, change], n) => {
      const doc = structuredClone(document);
      change(doc);
      const dir = path.join(generated, `changed-${n}`);
      await generate(doc, dir);
      const copy = path.join(dir, "check.ts");
      await writeFile(copy, source.replace('"../generated/openapi.js"', '"./openapi.js"').replace('"../src/wire.js"', '"../../src/wire.js"'));
      return copy;
    }),
  );
  const config = path.join(generated, "tsconfig.json");
  await writeFile(config, JSON.stringify({ extends: "../tsconfig.openapi.json", files: [checkFile, ...copies] }));
  const tsc = path.join(packageRoot, "node_modules", "typescript", "bin", "tsc");
  const output = await run(process.execPath, [tsc, "-p", config, "--pretty", "false"], { cwd: packageRoot }).then(
    ({ stdout }) => stdout,
    (error: { stdout?: string }) => error.stdout ?? String(error),
  );
  const errorsIn = (file: string) => output.split("\n").filter((line) => line.startsWith(path.relative(packageRoot, file))).join("\n");

  assert.equal(errorsIn(checkFile), "", `the live document:\n${output}`);
  incompatible.forEach(([name, , expected], n) => {
    const errors = errorsIn(copies[n]!);
    assert.notEqual(errors, "", `${name}: the check passed`);
    assert.match(errors, expected, `${name}:\n${errors}`);
  });
  await Promise.all(incompatible.map((_, n) => rm(path.join(generated, `changed-${n}`), { recursive: true, force: true })));
});

test("writes are split to the maxItems the document gives (BOTSTATE_MAX_STATES=250), indices remapped", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  assert.equal(await client.maxItems(), 250);
  const items = pairs(server, 600).map((pair, i) => ({ ...pair, state: { i } }));
  const result = await client.merge(items);
  assert.deepEqual(result.summary, { total: 600, succeeded: 600, failed: 0 });
  assert.deepEqual(result.results.map((r) => r.index), items.map((_, i) => i));
  assert.deepEqual(sent.filter((s) => s.method === "PATCH").length, 3);
  assert.equal(sent.filter((s) => s.url.endsWith("/openapi.json")).length, 1, "read once per client");
});

test("without a readable document the limit falls back to 1000", async () => {
  assert.equal(await server.client({ baseUrl: "http://127.0.0.1:9" }).maxItems(), 1000);
});
