/** Read-modify-write of one row: load once, change the state, save with the version loaded. */

import { ItemFailed, VersionConflict } from "./errors.js";
import { containsNull, diff } from "./merge-patch.js";
import type { CallOptions, FetchedRow, JsonObject, StateRow, StateUpdate, WriteResult } from "./types.js";

/** What a handle needs of the client. */
export interface RowStore {
  get(accountId: string, tickerId: string, options?: CallOptions): Promise<FetchedRow | null>;
  write(states: readonly StateUpdate[], options?: CallOptions): Promise<WriteResult>;
  merge(states: readonly StateUpdate[], options?: CallOptions): Promise<WriteResult>;
}

/** Changes the state in place, or returns the new one. */
export type Mutation<S extends JsonObject> = (state: S) => S | void;

/** With a mutation, how many times save() tries in all by default (the Python client's default too). */
export const DEFAULT_SAVE_ATTEMPTS = 5;

export interface SaveOptions extends CallOptions {
  /** With a mutation: how many times to try in all before throwing the VersionConflict. Default 5 (DEFAULT_SAVE_ATTEMPTS). */
  attempts?: number;
}

export class StateHandle<S extends JsonObject = JsonObject> {
  /** The row as loaded or last saved; null when none exists. */
  row: StateRow | null;
  /** The state to save: change it freely (a copy of the row's). */
  state: S;

  constructor(
    private readonly store: RowStore,
    readonly accountId: string,
    readonly tickerId: string,
    row: StateRow | null,
  ) {
    this.row = row;
    this.state = copyState<S>(row);
  }

  /** The version loaded (0: there was no row), sent as expectedVersion. */
  get version(): number {
    return this.row?.version ?? 0;
  }

  /** Loads the row again, dropping unsaved changes. */
  async reload(options: CallOptions = {}): Promise<void> {
    this.adopt(await this.store.get(this.accountId, this.tickerId, options));
  }

  /**
   * Saves `state` if the row is still at `version`: a merge of what changed (a replace when the
   * state holds a null, which a merge would remove). A member set to undefined is removed, as a
   * deleted one is. With `mutate`, it is applied first, and on a conflict the row is reloaded and
   * it is applied again, up to `attempts` tries (default 5). Without one, a conflict throws
   * VersionConflict with the current row. Other item errors throw ItemFailed.
   */
  async save(mutate?: Mutation<S>, options: SaveOptions = {}): Promise<StateRow> {
    const attempts = mutate ? (options.attempts ?? DEFAULT_SAVE_ATTEMPTS) : 1;
    if (mutate) this.apply(mutate);
    for (let attempt = 1; ; attempt++) {
      const saved = await this.trySave(options);
      if (saved.status === "success") {
        this.adopt(saved.data);
        return saved.data;
      }
      if (saved.code !== "VERSION_CONFLICT") throw new ItemFailed(saved);
      const current = await this.store.get(this.accountId, this.tickerId, options);
      if (!mutate || attempt >= attempts) throw new VersionConflict(saved, current);
      this.adopt(current);
      this.apply(mutate);
    }
  }

  private async trySave(options: CallOptions) {
    const base = this.row?.state ?? {};
    const replace = containsNull(this.state);
    const patch = replace ? this.state : diff(base, this.state);
    if (this.row && !replace && Object.keys(patch).length === 0) {
      return { status: "success" as const, data: this.row };
    }
    const item = { accountId: this.accountId, tickerId: this.tickerId, state: patch, expectedVersion: this.version };
    const result = replace ? await this.store.write([item], options) : await this.store.merge([item], options);
    const first = result.results[0];
    if (!first) throw new Error("the server answered a one-item write with no result");
    return first;
  }

  private apply(mutate: Mutation<S>): void {
    const changed = mutate(this.state);
    if (changed) this.state = changed;
  }

  private adopt(row: StateRow | null): void {
    this.row = row;
    this.state = copyState<S>(row);
  }
}

function copyState<S extends JsonObject>(row: StateRow | null): S {
  return (row ? structuredClone(row.state) : {}) as S;
}
