export { BotStateClient } from "./client.js";
export { ChangeFeed } from "./changes.js";
export { DEFAULT_SAVE_ATTEMPTS, StateHandle, type Mutation, type SaveOptions } from "./state-handle.js";
export * from "./errors.js";
export type * from "./types.js";
