/**
 * One error type for the whole protocol, with stable codes (spec §Errors).
 * Tests and clients match on `code`, never on `message`.
 * The HTTP status of every code lives in this one table so the server maps errors in one place.
 */

export const ERROR_CODES = {
  // Canonical encoding (spec §2)
  'encoding.truncated': { status: 400, text: 'input ended before the structure did' },
  'encoding.trailing_bytes': { status: 400, text: 'bytes left over after the structure' },
  'encoding.non_minimal': { status: 400, text: 'a length or integer is not minimally encoded' },
  'encoding.unknown_version': { status: 400, text: 'unknown version or suite' },
  'encoding.bad_value': { status: 400, text: 'a field has a value the spec does not allow' },
  'encoding.too_large': { status: 400, text: 'a field or list is larger than its limit' },

  // Cryptography (spec §3)
  'crypto.bad_signature': { status: 400, text: 'signature does not verify' },
  'crypto.bad_key': { status: 400, text: 'key is malformed, non-canonical or of small order' },
  'crypto.bad_certificate': { status: 400, text: 'certificate does not chain to the identity key' },
  'crypto.decrypt_failed': { status: 400, text: 'authenticated decryption failed' },

  // Files (spec §12)
  'file.bad_blob': { status: 400, text: 'blob does not match its file reference' },

  // Topic log (spec §9–§11)
  'log.bad_proof': { status: 400, text: 'Merkle proof does not verify' },
  'log.bad_checkpoint': { status: 400, text: 'checkpoint is malformed or wrongly signed' },
  'log.fork': { status: 409, text: 'two different logs for the same topic and size' },
  'log.rollback': { status: 409, text: 'log head went backwards' },
  'log.gap': { status: 409, text: 'entries are missing from the log' },
  'log.replay': { status: 409, text: 'an entry was delivered again' },
  'log.reorder': { status: 409, text: 'an entry arrived at the wrong position' },
  'log.bad_head': { status: 409, text: 'the claimed log head does not match the log' },

  // Topic state machine (spec §7–§8)
  'topic.unknown': { status: 404, text: 'no such topic' },
  'topic.exists': { status: 409, text: 'topic already exists' },
  'topic.wrong_topic': { status: 400, text: 'structure names another topic' },
  'topic.wrong_host': { status: 400, text: 'topic is hosted by another server' },
  'topic.bad_parent': { status: 409, text: 'update does not follow the current topic state' },
  'topic.bad_epoch': { status: 400, text: 'epoch does not follow the rules of this update' },
  'topic.stale_epoch': { status: 409, text: 'message is for an epoch that is not current' },
  'topic.not_member': { status: 403, text: 'not a member of this topic' },
  'topic.not_admin': { status: 403, text: 'only an admin may do this' },
  'topic.read_only': { status: 403, text: 'observers cannot post' },
  'topic.already_member': { status: 409, text: 'user is already a member' },
  'topic.bad_member_id': { status: 400, text: 'member id is not the one this update must use' },
  'topic.last_admin': { status: 409, text: 'the topic would be left without an admin' },
  'topic.no_change': { status: 400, text: 'update changes nothing' },
  'topic.duplicate_key': { status: 400, text: 'topic key is already used in this topic' },
  'topic.too_many_members': { status: 400, text: 'member limit reached' },
  'topic.rekey_required': { status: 400, text: 'this update must (or must not) start a new epoch' },
  'topic.bad_key_shares': { status: 400, text: 'key shares do not match the members who must get one' },
  'topic.bad_key_share': { status: 400, text: 'key share does not open to the committed epoch secret' },
  'topic.bad_backward_link': { status: 400, text: 'backward link is missing, unexpected or invalid' },
  'topic.replay': { status: 409, text: 'message was already posted' },

  // Federation (spec §17): server-to-server requests, and what a server reports of another
  'federation.unsigned': { status: 401, text: 'server-to-server request is not signed' },
  'federation.bad_signature': { status: 401, text: 'server signature does not verify' },
  'federation.unknown_key': { status: 401, text: 'request is signed by a key its origin does not publish' },
  'federation.stale': { status: 401, text: 'signed request is outside the replay window: check the clock' },
  'federation.replayed': { status: 401, text: 'signed request was already received' },
  'federation.wrong_destination': { status: 421, text: 'request is addressed to another server' },
  'federation.forbidden': { status: 403, text: 'the origin server may not do this: it speaks only for its own users and topics' },
  'federation.refused': { status: 403, text: 'federation with this server is not allowed here' },
  'federation.bad_address': { status: 403, text: 'server name resolves to a private or loopback address' },
  'federation.gap': { status: 409, text: 'delivery does not continue the replica' },
  'federation.key_changed': { status: 502, text: "the server's key changed without an endorsement by its previous key" },
  'federation.unreachable': { status: 502, text: 'the other server could not be reached: try again later' },
  'federation.bad_response': { status: 502, text: 'the other server answered something malformed' },

  // Clients (docs/client.md): what a member's device detects
  'identity.changed': { status: 409, text: "a user's identity key differs from the one pinned: compare safety numbers" },

  // Server API (docs/server.md): authentication, requests, resources, limits
  'auth.required': { status: 401, text: 'authentication required' },
  'auth.invalid_token': { status: 401, text: 'session token is unknown, expired or revoked' },
  'auth.bad_challenge': { status: 401, text: 'challenge is unknown, used or expired' },
  'auth.forbidden': { status: 403, text: 'not allowed for this account' },
  'auth.bad_pin': { status: 403, text: 'registration pin is wrong, expired or used up' },
  'auth.stale': { status: 400, text: 'signed request is too old or from the future' },
  'user.exists': { status: 409, text: 'user name is taken' },
  'user.unknown': { status: 404, text: 'no such user' },
  'device.unknown': { status: 404, text: 'no such device' },
  'device.exists': { status: 409, text: 'device key is already registered or was removed' },
  'keys.too_many': { status: 409, text: 'key pool is full' },
  'keys.exhausted': { status: 409, text: 'no key left in the pool: ask the owner to replenish' },
  'blob.unknown': { status: 404, text: 'no such blob' },
  'blob.quota_exceeded': { status: 413, text: 'file storage quota is used up' },
  'push.bad_endpoint': { status: 400, text: 'push endpoint is not an https URL of a public host' },
  'push.bad_keys': { status: 400, text: 'push subscription keys are not a P-256 public key and a 16-byte secret' },
  'push.too_many': { status: 409, text: 'the device has as many push subscriptions as allowed' },
  'push.unknown': { status: 404, text: 'no such push subscription' },
  'push.unsupported': { status: 400, text: 'this server does not send push through that provider' },
  'request.too_large': { status: 413, text: 'request body is too large' },
  'request.bad_json': { status: 400, text: 'request body is not valid JSON' },
  'request.bad_field': { status: 400, text: 'a request field is missing or malformed' },
  'request.not_found': { status: 404, text: 'no such endpoint' },
  'request.method': { status: 405, text: 'method not allowed' },
  'request.timeout': { status: 408, text: 'request took too long' },
  'request.idempotency_mismatch': { status: 422, text: 'client id reused with a different request' },
  'rate.limited': { status: 429, text: 'too many requests: slow down' },
  'store.conflict': { status: 409, text: 'concurrent change: retry' },
  'server.internal': { status: 500, text: 'internal error' },
  'server.unavailable': { status: 503, text: 'server is shutting down or not ready' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class RendezvousError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? ERROR_CODES[code].text);
    this.name = 'RendezvousError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** Throws a RendezvousError with `code` unless `cond` holds. */
export function check(cond: unknown, code: ErrorCode, message?: string): asserts cond {
  if (!cond) throw new RendezvousError(code, message);
}

export function isRendezvousError(e: unknown, code?: ErrorCode): e is RendezvousError {
  return e instanceof RendezvousError && (code === undefined || e.code === code);
}
