import { createHash } from 'node:crypto';

/**
 * Offer ids come from the sender and its request id, so a retried offer names the same offer. Fixed for good: the ids
 * of stored offers were made this way, and a client that knows which request ids it used can tell its own offers by
 * their ids alone (those stored before the server kept each offer's request id, see FileOffer.request).
 */
export function offerIdOf(sender: string, requestId: string): string {
  return `f${createHash('sha256').update(`${sender}\n${requestId}`).digest('base64url').slice(0, 22)}`;
}
