/** The fixed computation of one CPU-bound benchmark job: chained SHA-256 over 64 KiB. */
import { createHash } from 'node:crypto';

const BLOCK = Buffer.alloc(64 * 1024, 7);

export function hashRounds(rounds: number): string {
  let digest = Buffer.alloc(32);
  for (let i = 0; i < rounds; i += 1) digest = createHash('sha256').update(digest).update(BLOCK).digest();
  return digest.toString('hex');
}
