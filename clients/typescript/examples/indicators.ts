/** Stand-ins for a bot's own indicator maths, so the examples compile and run. */

export function calculateRSI(prices: number[]): number {
  let gain = 0;
  let loss = 0;
  for (let i = 1; i < prices.length; i++) {
    const change = prices[i]! - prices[i - 1]!;
    if (change > 0) gain += change;
    else loss -= change;
  }
  return loss === 0 ? 100 : 100 - 100 / (1 + gain / loss);
}

export function calculateMACD(prices: number[]): number {
  const ema = (n: number) => prices.reduce((e, p) => e + (2 / (n + 1)) * (p - e), prices[0] ?? 0);
  return ema(12) - ema(26);
}

export function calculateBollingerBands(prices: number[]): { upper: number; middle: number; lower: number } {
  const middle = prices.reduce((a, b) => a + b, 0) / prices.length;
  const sd = Math.sqrt(prices.reduce((a, p) => a + (p - middle) ** 2, 0) / prices.length);
  return { upper: middle + 2 * sd, middle, lower: middle - 2 * sd };
}
