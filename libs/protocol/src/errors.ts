/**
 * Stable error codes. They are part of the wire protocol: clients match on
 * `error.code`, never on the message text.
 */
export const ERROR_CODES = [
  'bad_request', // payload is not well-formed UTF-8, not JSON, or not the shape the operation needs
  'unknown_op', // the `op` is not one the server knows
  'payload_too_large', // the request payload exceeds the request size limit
  'invalid_username', // a user name that does not match the allowed pattern
  'weak_password', // a password shorter than the minimum
  'user_exists', // registration of a name that is taken
  'unknown_user', // the named user does not exist
  'empty_text', // a message with no visible text
  'text_too_long', // a message longer than the configured limit
  'not_allowed', // the operation is not allowed for this connection
  'not_member', // the conversation is not one the caller belongs to
  'no_such_message', // a receipt or info request names a message that does not exist
  'unknown_group', // no group of that id or name among the caller's groups
  'ambiguous_group', // the caller is in several groups of that name: use the id
  'not_group_owner', // only the group's owner may do this
  'invalid_group_name', // a group name that is empty, too long, or has control characters or bidirectional controls
  'group_too_large', // the group would exceed the maximum number of members
  'unknown_file', // no file offer of that id among the caller's (or it expired)
  'invalid_file_name', // a file name with a path separator, `..`, control characters, bidirectional controls, nothing visible, or too long
  'file_too_large', // a file over the maximum file size
  'too_many_offers', // the sender has too many file offers not yet taken or declined
  'quota_exceeded', // the sender's file offers would hold more bytes than the quota
  'chunk_out_of_range', // a chunk index outside the file
  'bad_chunk', // a chunk that is not the next one, or not the size it must be
  'checksum_mismatch', // the uploaded bytes do not have the SHA-256 the offer announced
  'file_not_ready', // the file is not completely uploaded, or not accepted by the caller
  'rate_limited', // too many requests; retry later
  'unavailable', // a service the request needs is down; nothing was changed
  'internal', // an unexpected server fault; nothing was changed
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Control characters (C0 but the tab, DEL, C1) and bidirectional embeddings, overrides and isolates. */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * An error message as it may be shown: each control or bidirectional character, which a message can only hold where
 * it repeats a request's input (an unknown op, a user name, a field's name), written out as `\uXXXX`. A client prints
 * the message as it comes, and should not show a NUL, a terminal escape or reordered text the sender typed.
 */
export function printable(message: string): string {
  return message.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The one error family services throw. Each edge (MQTT reply, CONNACK, HTTP,
 * RPC) maps it once; the code survives every hop unchanged.
 */
export class DomainError extends Error {
  override readonly name = 'DomainError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(printable(message));
  }
}

/**
 * What a request that failed for a reason of the server's own (a store that refused a write, a service that threw) is
 * answered: `unavailable`, to be retried. The cause is for the server's log, not the client.
 */
export function serverFailure(): DomainError {
  return new DomainError('unavailable', 'the server could not complete this request right now; retry with the same id (a retry never stores anything twice)');
}

export function isDomainError(e: unknown): e is DomainError {
  return e instanceof DomainError;
}
