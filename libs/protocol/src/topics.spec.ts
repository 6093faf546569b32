import { describe, expect, it } from 'vitest';
import { isRequestTopicOf, requestTopicOf, type Principal } from './topics.js';

describe('isRequestTopicOf', () => {
  it('is true exactly for the topic requestTopicOf builds, for users and anonymous connections', () => {
    const principals: Principal[] = [
      { kind: 'user', user: 'alice', device: null },
      { kind: 'user', user: 'al', device: 'phone' },
      { kind: 'anonymous', nonce: 'n0nce-123' },
    ];
    const topics = [
      ...principals.map(requestTopicOf),
      'parley/v1/users/alice/inbox',
      'parley/v1/users/alicex/requests',
      'parley/v1/users/alic/requests',
      'parley/v1/users//requests',
      'parley/v1/anon/alice/requests',
      'parley/v1/users/n0nce-123/requests',
      'parley/v2/users/alice/requests',
      'parley/v1/users/alice/requests/',
      'parley/v1/users/al/requestsX',
    ];
    for (const p of principals) for (const t of topics) expect(isRequestTopicOf(p, t), `${JSON.stringify(p)} ${t}`).toBe(t === requestTopicOf(p));
  });
});
