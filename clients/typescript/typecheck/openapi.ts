/**
 * The client's wire types (src/wire.ts) against the types openapi-typescript generates from a live
 * server's /openapi.json: test/openapi.test.ts writes generated/openapi.d.ts, then runs tsc on this
 * file. Each check compiles only if the types agree: both ways for bodies, client to server for what
 * the client sends, server to client for what it reads. A failing check names itself and both types.
 */

import type { components, paths } from "../generated/openapi.js";
import type * as W from "../src/wire.js";

type S = components["schemas"];
type Collection = paths["/api/bots/{slug}/state"];
type Row = paths["/api/bots/{slug}/state/{accountId}/{tickerId}"];
type Changes = paths["/api/bots/{slug}/changes"]["get"];
type Json<Answer> = Answer extends { content: { "application/json": infer Body } } ? Body : never;
type Header<Answer> = Answer extends { headers: infer H } ? H : never;

export type Checks = [
  // Schemas, both ways.
  Check<Both<"StateUpdate", W.WireStateUpdate, S["StateUpdate"]>>,
  Check<Both<"StateUpdates", W.WireStateUpdates, S["StateUpdates"]>>,
  Check<Both<"StateRow", W.WireStateRow, S["StateRow"]>>,
  Check<Both<"Summary", W.WireSummary, S["Summary"]>>,
  Check<Both<"ItemResult", W.WireItemResult, S["ItemResult"]>>,
  Check<Both<"WriteResponse", W.WireWriteResponse, S["WriteResponse"]>>,
  Check<Both<"StateResponse", W.WireStateResponse, S["StateResponse"]>>,
  Check<Both<"StatePage", W.WireStatePage, S["StatePage"]>>,
  Check<Both<"Change", W.WireChange, S["Change"]>>,
  Check<Both<"ChangesPage", W.WireChangesPage, S["ChangesPage"]>>,
  Check<Both<"Error", W.WireError, S["Error"]>>,
  Check<Both<"AuthError", W.WireAuthError, S["AuthError"]>>,
  // The operations the client calls: bodies, answers, parameters and headers.
  Check<Both<"POST /state body", W.WireStateUpdates, Json<Collection["post"]["requestBody"]>>>,
  Check<Both<"PATCH /state body", W.WireStateUpdates, Json<Collection["patch"]["requestBody"]>>>,
  Check<Both<"POST /state 200", W.WireWriteResponse, Json<Collection["post"]["responses"][200]>>>,
  Check<Both<"PATCH /state 200", W.WireWriteResponse, Json<Collection["patch"]["responses"][200]>>>,
  Check<Sends<"POST /state headers", W.WireWriteHeaders, NonNullable<Collection["post"]["parameters"]["header"]>>>,
  Check<Sends<"PATCH /state headers", W.WireWriteHeaders, NonNullable<Collection["patch"]["parameters"]["header"]>>>,
  Check<Reads<"POST /state 200 headers", Header<Collection["post"]["responses"][200]>, W.WireWriteAnswerHeaders>>,
  Check<Sends<"POST /state path", W.WireBotPath, Collection["post"]["parameters"]["path"]>>,
  Check<Both<"GET /state 200", W.WireStatePage, Json<Collection["get"]["responses"][200]>>>,
  Check<Sends<"GET /state query", W.WireStateQuery, NonNullable<Collection["get"]["parameters"]["query"]>>>,
  Check<Both<"GET /state/:a/:t 200", W.WireStateResponse, Json<Row["get"]["responses"][200]>>>,
  Check<Sends<"GET /state/:a/:t path", W.WireRowPath, Row["get"]["parameters"]["path"]>>,
  Check<Both<"DELETE /state/:a/:t 200", W.WireStateResponse, Json<Row["delete"]["responses"][200]>>>,
  Check<Sends<"DELETE /state/:a/:t headers", W.WireDeleteHeaders, NonNullable<Row["delete"]["parameters"]["header"]>>>,
  Check<Sends<"DELETE /state/:a/:t path", W.WireRowPath, Row["delete"]["parameters"]["path"]>>,
  Check<Both<"GET /changes 200", W.WireChangesPage, Json<Changes["responses"][200]>>>,
  Check<Sends<"GET /changes query", W.WireChangesQuery, NonNullable<Changes["parameters"]["query"]>>>,
  // The error answers the client maps (errors.ts): 401/403 carry `message`, the rest `error` and `code`.
  Check<Reads<"400", Json<Collection["post"]["responses"][400]>, W.WireError>>,
  Check<Reads<"401", Json<Collection["post"]["responses"][401]>, W.WireAuthError>>,
  Check<Reads<"403", Json<Collection["post"]["responses"][403]>, W.WireAuthError>>,
  Check<Reads<"404", Json<Collection["post"]["responses"][404]>, W.WireError>>,
  Check<Reads<"409", Json<Collection["post"]["responses"][409]>, W.WireError>>,
  Check<Reads<"413", Json<Collection["post"]["responses"][413]>, W.WireError>>,
  Check<Reads<"422", Json<Collection["post"]["responses"][422]>, W.WireError>>,
  Check<Reads<"429", Json<Collection["post"]["responses"][429]>, W.WireError>>,
  Check<Reads<"503", Json<Collection["post"]["responses"][503]>, W.WireError>>,
  Check<Reads<"412", Json<Row["delete"]["responses"][412]>, W.WireError>>,
  Check<Reads<"410", Json<Changes["responses"][410]>, W.WireError>>,
];

/** `true` when A and B accept the same values; otherwise an error that names both. */
type Both<Name extends string, A, B> = [A] extends [B]
  ? [B] extends [A]
    ? true
    : Mismatch<Name, "the server's type is not the client's", B, A>
  : Mismatch<Name, "the client's type is not the server's", A, B>;
/** What the client sends (A) is what the server accepts (B). */
type Sends<Name extends string, A, B> = [A] extends [B] ? true : Mismatch<Name, "the server does not accept what the client sends", A, B>;
/** What the server answers (A) is what the client reads (B). */
type Reads<Name extends string, A, B> = [A] extends [B] ? true : Mismatch<Name, "the client does not read what the server answers", A, B>;
type Mismatch<Name extends string, Why extends string, From, To> = { check: Name; error: Why; from: From; to: To };
/** Fails to compile, at its line, for anything but `true`. */
type Check<T extends true> = T;
