/** The change feed as an async iterable that remembers where it got to. */

import { sleep } from "./backoff.js";
import type { Change, ChangesOptions } from "./types.js";
import type { WireChangesPage } from "./wire.js";

export type PageReader = (after: number, signal: AbortSignal | undefined) => Promise<WireChangesPage>;

/**
 * Iterate it with `for await`; store `nextAfter` (or the last change's seq) and pass it back as
 * `after` to resume. It stops once caught up, or with `follow` polls until `signal` aborts.
 */
export class ChangeFeed implements AsyncIterable<Change> {
  /** The seq to resume after: that of the last change handed out, or past it once a page said so. */
  nextAfter: number;

  constructor(
    private readonly readPage: PageReader,
    private readonly options: ChangesOptions = {},
  ) {
    this.nextAfter = options.after ?? 0;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Change, void, undefined> {
    const { follow = false, pollIntervalMs = 1000, signal } = this.options;
    while (!signal?.aborted) {
      const before = this.nextAfter;
      const page = await this.readPage(before, signal);
      for (const change of page.data) {
        this.nextAfter = change.seq;
        yield change;
      }
      this.nextAfter = Math.max(this.nextAfter, page.nextAfter);
      // An empty page that did not move on is the end; a filtered poll may move on with no data.
      if (page.data.length > 0 || this.nextAfter !== before) continue;
      if (!follow) return;
      try {
        await sleep(pollIntervalMs, signal);
      } catch {
        return;
      }
    }
  }
}
