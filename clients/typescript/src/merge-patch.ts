/** RFC 7396 JSON Merge Patch: the patch that turns one state into another. */

import type { JsonObject } from "./wire.js";

/** The merge patch from `before` to `after`: changed members, null for removed ones, objects recursively. */
export function diff(before: JsonObject, after: JsonObject): JsonObject {
  const patch: JsonObject = {};
  for (const key of Object.keys(before)) {
    if (!Object.hasOwn(after, key)) patch[key] = null;
  }
  for (const [key, value] of Object.entries(after)) {
    const old = before[key];
    if (isPlainObject(old) && isPlainObject(value)) {
      const inner = diff(old, value);
      if (Object.keys(inner).length > 0) patch[key] = inner;
    } else if (!Object.hasOwn(before, key) || !deepEqual(old, value)) {
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

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
