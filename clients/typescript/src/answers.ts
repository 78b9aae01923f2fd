/** The 2xx answers the client reads, checked for the fields it reads before they are used. */

import { UnexpectedAnswer } from "./errors.js";
import type { Answer } from "./transport.js";
import type { WireChangesPage, WireStatePage, WireStateResponse, WireStateRow, WireWriteResponse } from "./wire.js";

type Fields = Record<string, unknown>;

/** The answer of a write of `count` items: success, summary and one result per item. */
export function writeAnswer(answer: Answer, count: number): WireWriteResponse {
  const body = object(answer, "the body");
  if (typeof body.success !== "boolean") unexpected(answer, "`success` is not a boolean");
  const summary = object(answer, "`summary`", body.summary);
  for (const name of ["total", "succeeded", "failed"]) {
    if (!isCount(summary[name])) unexpected(answer, `\`summary.${name}\` is not a count`);
  }
  if (!Array.isArray(body.results)) unexpected(answer, "`results` is not a list");
  if (body.results.length !== count) unexpected(answer, `${body.results.length} results for ${count} items`);
  body.results.forEach((result: unknown, n) => {
    const item = object(answer, `\`results[${n}]\``, result);
    if (!isCount(item.index) || item.index >= count) unexpected(answer, `\`results[${n}].index\` is not an index of the items sent`);
    if (item.status === "success") row(answer, `\`results[${n}].data\``, item.data);
    else if (item.status !== "error") unexpected(answer, `\`results[${n}].status\` is neither "success" nor "error"`);
  });
  return body as unknown as WireWriteResponse;
}

/** The answer of a get or a delete: `{"data": row}`. */
export function rowAnswer(answer: Answer): WireStateResponse {
  const body = object(answer, "the body");
  row(answer, "`data`", body.data);
  return body as unknown as WireStateResponse;
}

/** A page of /state: rows and the next cursor (null on the last page). */
export function statePage(answer: Answer): WireStatePage {
  const body = object(answer, "the body");
  if (!Array.isArray(body.data)) unexpected(answer, "`data` is not a list");
  body.data.forEach((item: unknown, n) => row(answer, `\`data[${n}]\``, item));
  if (body.nextCursor !== null && typeof body.nextCursor !== "string") unexpected(answer, "`nextCursor` is neither a string nor null");
  return body as unknown as WireStatePage;
}

/** A page of /changes: changes, each with its seq, and where to resume. */
export function changesPage(answer: Answer): WireChangesPage {
  const body = object(answer, "the body");
  if (!Array.isArray(body.data)) unexpected(answer, "`data` is not a list");
  body.data.forEach((item: unknown, n) => {
    if (!isCount(object(answer, `\`data[${n}]\``, item).seq)) unexpected(answer, `\`data[${n}].seq\` is not a count`);
  });
  if (!isCount(body.nextAfter)) unexpected(answer, "`nextAfter` is not a count");
  return body as unknown as WireChangesPage;
}

function row(answer: Answer, what: string, value: unknown): WireStateRow {
  const fields = object(answer, what, value);
  if (!isCount(fields.version)) unexpected(answer, `${what}.version is not a count`);
  object(answer, `${what}.state`, fields.state);
  return fields as unknown as WireStateRow;
}

function object(answer: Answer, what: string, value: unknown = answer.body): Fields {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Fields;
  if (value === answer.body) unexpected(answer, typeof value === "string" || value === undefined ? "the body is not JSON" : "the body is not a JSON object");
  return unexpected(answer, `${what} is not an object`);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

function unexpected(answer: Answer, problem: string): never {
  throw new UnexpectedAnswer(`unexpected HTTP ${answer.status} answer: ${problem} (is something other than botstate answering?)`, {
    status: answer.status,
    body: answer.body,
  });
}
