/** RFC 7396 JSON Merge Patch: the patch that turns one state into another. */

import type { JsonObject } from "./wire.js";

/**
 * The merge patch from `before` to `after`: changed members, null for removed ones, objects
 * recursively. A member set to undefined is a removed one (JSON has no undefined: it would be dropped).
 */
export function diff(before: JsonObject, after: JsonObject): JsonObject {
  const patch: JsonObject = {};
  for (const key of Object.keys(before)) {
    if (before[key] !== undefined && !has(after, key)) patch[key] = null;
  }
  for (const [key, value] of Object.entries(after)) {
    if (value === undefined) continue;
    const old = before[key];
    if (isPlainObject(old) && isPlainObject(value)) {
      const inner = diff(old, value);
      if (Object.keys(inner).length > 0) patch[key] = inner;
    } else if (!has(before, key) || !deepEqual(old, value)) {
      patch[key] = value;
    }
  }
  return patch;
}

/** True when the value holds a null anywhere: a merge patch cannot store one (null removes). */
export function containsNull(value: unknown): boolean {
  if (value === null) return true;
  if (Array.isArray(value)) return value.some(containsNull);
  if (isPlainObject(value)) return Object.values(value).some(containsNull);
  return false;
}

/** JSON equality: members set to undefined count as absent, as JSON.stringify drops them. */
function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = presentKeys(a);
    return keys.length === presentKeys(b).length && keys.every((k) => has(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

/** True when `object` has `key` with a value JSON keeps (not undefined). */
function has(object: JsonObject, key: string): boolean {
  return Object.hasOwn(object, key) && object[key] !== undefined;
}

function presentKeys(object: JsonObject): string[] {
  return Object.keys(object).filter((key) => object[key] !== undefined);
}

function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
