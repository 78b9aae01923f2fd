/** The items of a write as JSON, each checked and serialized once, before anything is sent. */

import type { StateUpdate } from "./types.js";

/**
 * Each item as the JSON text the server gets (only the fields it knows). Throws a TypeError that
 * names `states[i]` (the caller's index) and the member for a value JSON cannot carry as it is: a
 * BigInt, a circular reference, or a number that is not finite (JSON.stringify would send NaN and
 * Infinity as null, which a merge reads as "remove").
 */
export function serializeItems(states: readonly StateUpdate[]): string[] {
  return states.map((item, index) => serializeItem(item, `states[${index}]`));
}

function serializeItem(item: StateUpdate, root: string): string {
  // Where each object met so far sits, to name the member a bad value is in (one walk: JSON.stringify's).
  const paths = new Map<object, string>();
  const replacer = function (this: unknown, key: string, value: unknown): unknown {
    const holder = this as object;
    const at = key === "" && !paths.has(holder) ? root : member(paths.get(holder) ?? root, holder, key);
    if (typeof value === "bigint") throw new TypeError(`${at} is a BigInt, which JSON cannot carry: convert it to a number or a string`);
    const number = value instanceof Number ? value.valueOf() : value;
    if (typeof number === "number" && !Number.isFinite(number)) {
      throw new TypeError(`${at} is ${String(number)}, which JSON cannot carry (it would be sent as null)`);
    }
    if (typeof value === "object" && value !== null) {
      const seen = paths.get(value);
      if (seen === undefined) paths.set(value, at);
      else if (at.startsWith(`${seen}.`) || at.startsWith(`${seen}[`)) {
        throw new TypeError(`${at} refers back to ${seen}: a circular structure cannot be sent as JSON`);
      }
    }
    return value;
  };
  try {
    return JSON.stringify(wireItem(item), replacer);
  } catch (error) {
    if (error instanceof TypeError && error.message.startsWith(root)) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new TypeError(`${root} cannot be sent as JSON: ${reason}`, { cause: error });
  }
}

function member(parent: string, holder: object, key: string): string {
  if (Array.isArray(holder)) return `${parent}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${parent}.${key}` : `${parent}[${JSON.stringify(key)}]`;
}

/** Only the fields the server knows, whatever else the caller's objects carry. */
function wireItem(item: StateUpdate) {
  const { accountId, tickerId, state, expectedVersion } = item;
  return expectedVersion === undefined ? { accountId, tickerId, state } : { accountId, tickerId, state, expectedVersion };
}

/** The body of one write request from items serialized by serializeItems. */
export function writeBody(items: readonly string[]): string {
  return `{"states":[${items.join(",")}]}`;
}
