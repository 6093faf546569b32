import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const scryptAsync = (password: string, salt: Buffer, keylen: number, opts: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) => scrypt(password, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))));

/** scrypt's parameters. */
export interface ScryptCost {
  N: number;
  r: number;
  p: number;
}

/** scrypt cost: N=2^15, r=8 (32 MiB, memory-hard), p=1. Stored with the hash, so it can be raised later without breaking old hashes. */
const DEFAULT_COST: ScryptCost = { N: 1 << 15, r: 8, p: 1 };

/** The cost `PARLEY_PASSWORD_COST` names: N = 2^exponent, with the default r and p. */
export function scryptCostOf(exponent: number): ScryptCost {
  return { ...DEFAULT_COST, N: 2 ** exponent };
}
const KEY_LENGTH = 32;

/**
 * Hashes passwords with scrypt from node:crypto. The stored form is
 * `scrypt$N$r$p$salt$hash` (base64), self-describing so parameters can change.
 * It hashes the string it is given, code point for code point: which form of a
 * password to hash (its Unicode NFC form) is `AccountsService`'s choice.
 */
export class PasswordHasher {
  constructor(private readonly cost: ScryptCost = DEFAULT_COST) {}

  async hash(password: string): Promise<string> {
    const salt = randomBytes(16);
    const key = await scryptAsync(password, salt, KEY_LENGTH, this.options(this.cost.N, this.cost.r, this.cost.p));
    return ['scrypt', this.cost.N, this.cost.r, this.cost.p, salt.toString('base64'), key.toString('base64')].join('$');
  }

  /** True when the password matches the stored hash. A malformed stored hash never matches. */
  async verify(password: string, stored: string): Promise<boolean> {
    const [scheme, n, r, p, salt, hash] = stored.split('$');
    if (scheme !== 'scrypt' || !n || !r || !p || !salt || !hash) return false;
    const expected = Buffer.from(hash, 'base64');
    const key = await scryptAsync(password, Buffer.from(salt, 'base64'), expected.length, this.options(Number(n), Number(r), Number(p)));
    return key.length === expected.length && timingSafeEqual(key, expected);
  }

  /**
   * True when the stored hash is cheaper to guess than one this hasher makes (a smaller N or r, or not scrypt): worth
   * making again. One that costs as much or more is left as it is, so gateways set to different costs (a rollout, a
   * cost lowered to save CPU) do not hash the same passwords back and forth.
   */
  isWeaker(stored: string): boolean {
    const [scheme, n, r] = stored.split('$');
    return scheme !== 'scrypt' || !(Number(n) >= this.cost.N) || !(Number(r) >= this.cost.r);
  }

  private options(N: number, r: number, p: number): ScryptOptions {
    return { N, r, p, maxmem: 256 * N * r + 1024 * 1024 };
  }
}
