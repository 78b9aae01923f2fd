/** Idempotency-Keys: one fresh random key per request of a write, kept across its retries. */

export function newIdempotencyKey(): string {
  const webCrypto = globalThis.crypto;
  if (webCrypto?.randomUUID) return webCrypto.randomUUID();
  // Node 18 has no global crypto unless run with --experimental-global-webcrypto: then 128 bits
  // from Math.random, which is enough for keys that must not collide within one bot for 24 h.
  const bytes = new Uint8Array(16);
  if (webCrypto?.getRandomValues) webCrypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
