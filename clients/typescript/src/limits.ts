/** The server's maximum items per write, read from its OpenAPI document. */

/** Used only when the document cannot be read or does not say. */
export const FALLBACK_MAX_ITEMS = 1000;

const WRITE_PATH = "/api/bots/{slug}/state";

/**
 * `maxItems` of the `states` array in the write body: walks paths → POST → requestBody → its
 * JSON schema (following local $refs) → properties.states. Undefined when any step is missing.
 */
export function maxItemsOf(document: unknown): number | undefined {
  const root = document;
  const resolve = (node: unknown): unknown => {
    for (let hops = 0; hops < 10 && isObject(node) && typeof node.$ref === "string"; hops++) {
      node = pointer(root, node.$ref);
    }
    return node;
  };
  const step = (node: unknown, key: string): unknown => {
    const resolved = resolve(node);
    return isObject(resolved) ? resolved[key] : undefined;
  };
  let node: unknown = root;
  for (const key of ["paths", WRITE_PATH, "post", "requestBody", "content", "application/json", "schema", "properties", "states", "maxItems"]) {
    node = step(node, key);
  }
  return typeof node === "number" && Number.isInteger(node) && node >= 1 ? node : undefined;
}

/** The value at a local JSON pointer such as "#/components/schemas/StateUpdates". */
function pointer(root: unknown, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  let node = root;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    node = isObject(node) ? node[key] : undefined;
  }
  return node;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
