/**
 * Hostile request bodies get an answer: a body over the 1 MiB limit (announced, sent, or streamed
 * without a length) gets a complete AWS-style JSON error before the connection is drained or
 * closed, and JSON nested 10,000–500,000 levels deep in any member of any operation is a 400
 * SerializationException, never a 500 from a stack overflow.
 */
import { describe, expect, it } from 'vitest';
import { MAX_JSON_NESTING, nestsDeeperThan } from '../src/http/json-body.js';
import { kmsModel } from '../src/http/model.js';
import { exchange, signedHeaders, type Exchange } from './helpers/raw.js';
import { useTestService } from './helpers/service.js';

const t = useTestService();
const MiB = 1024 * 1024;

async function post(operation: string, body: string | Buffer, extraHeaders: Record<string, string> = {}): Promise<Exchange> {
  const headers = await signedHeaders(t.service.url, body, { target: `TrentService.${operation}`, extraHeaders });
  return exchange(t.service.url, headers, body);
}

/** The answer as `status __type`, and that the body is AWS's error shape. */
function errorOf(answer: Exchange): string {
  if (!answer.answered) return `unanswered: ${answer.failure}`;
  if (answer.status === 200) return '200';
  const body = JSON.parse(answer.text) as { __type?: unknown; message?: unknown };
  expect(body).toEqual({ __type: expect.any(String), message: expect.any(String) });
  expect(answer.headers['x-amzn-requestid']).toMatch(/^[0-9a-f-]{36}$/);
  return `${answer.status} ${String(body.__type)}`;
}

const TOO_LARGE = '413 RequestEntityTooLargeException';

describe('a body over the 1 MiB limit', () => {
  it('is answered with a complete JSON error, whatever its size', async () => {
    for (const size of [MiB + 1, 2 * MiB, 16 * MiB]) {
      const body = Buffer.alloc(size, 0x20); // spaces: what the body holds does not matter
      expect(`${size}: ${errorOf(await post('ListKeys', body))}`).toBe(`${size}: ${TOO_LARGE}`);
    }
  });

  it('is answered when it is streamed without a Content-Length', async () => {
    async function* chunks() {
      for (let i = 0; i < 64; i++) yield Buffer.alloc(64 * 1024, 0x20);
    }
    // Signed as UNSIGNED-PAYLOAD is not accepted by KMS; the limit is checked before SigV4 anyway.
    const headers = await signedHeaders(t.service.url, '', { target: 'TrentService.ListKeys', extraHeaders: { 'transfer-encoding': 'chunked' } });
    expect(errorOf(await exchange(t.service.url, headers, chunks()))).toBe(TOO_LARGE);
  });

  it('is answered at once when the Content-Length announces it, before the body arrives', async () => {
    const headers = await signedHeaders(t.service.url, '{}', { target: 'TrentService.ListKeys' });
    async function* stalling() {
      yield Buffer.from('{"Limit": ');
      await new Promise((r) => setTimeout(r, 3_000)); // the rest never comes in time
    }
    const started = Date.now();
    const answer = await exchange(t.service.url, { ...headers, 'content-length': String(4 * MiB) }, stalling());
    expect(errorOf(answer)).toBe(TOO_LARGE);
    expect(Date.now() - started).toBeLessThan(2_500);
  });

  it('leaves a body of exactly 1 MiB alone', async () => {
    const prefix = '{"Padding":"';
    const body = prefix + 'x'.repeat(MiB - prefix.length - 2) + '"}';
    expect(Buffer.byteLength(body)).toBe(MiB);
    expect(errorOf(await post('ListKeys', body))).toBe('200');
  });
});

const deepArray = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
const deepObject = (depth: number) => '{"a":'.repeat(depth - 1) + '{}' + '}'.repeat(depth - 1);
const topLevelMembers = (operation: string) => Object.keys(kmsModel.shapes[kmsModel.operations[operation]!.input]!.members ?? {});
const operations = Object.keys(kmsModel.operations);

describe('deeply nested JSON', () => {
  it('counts nesting outside strings only', () => {
    expect(nestsDeeperThan(Buffer.from(`{"a":"${'['.repeat(5000)}"}`), 10)).toBe(false);
    expect(nestsDeeperThan(Buffer.from(`{"a":"\\"${'['.repeat(5000)}"}`), 10)).toBe(false);
    expect(nestsDeeperThan(Buffer.from(`{"a":"\\\\",${'['.repeat(5000)}`), 10)).toBe(true);
    expect(nestsDeeperThan(Buffer.from(deepArray(MAX_JSON_NESTING)), MAX_JSON_NESTING)).toBe(false);
    expect(nestsDeeperThan(Buffer.from(deepArray(MAX_JSON_NESTING + 1)), MAX_JSON_NESTING)).toBe(true);
    // Brackets inside strings (escaped quotes and backslashes included) are text, not nesting.
    const inStrings = `{"a":"\\\\","b":"\\"${'{'.repeat(3000)}","c":${deepArray(MAX_JSON_NESTING - 1)}}`;
    expect(JSON.parse(inStrings)).toBeTruthy();
    expect(nestsDeeperThan(Buffer.from(inStrings), MAX_JSON_NESTING)).toBe(false);
    expect(nestsDeeperThan(Buffer.from(inStrings.replace('"c":[', '"c":[[')), MAX_JSON_NESTING)).toBe(true);
  });

  it('10,000 levels in every member of every operation is a SerializationException', async () => {
    const wrong: string[] = [];
    for (const operation of operations) {
      for (const [i, member] of topLevelMembers(operation).entries()) {
        const deep = i % 2 === 0 ? deepArray(10_000) : deepObject(10_000);
        const answer = errorOf(await post(operation, `{"${member}":${deep}}`));
        if (answer !== '400 SerializationException') wrong.push(`${operation}.${member}: ${answer}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('100,000 and 500,000 levels, and a deep body itself, are a SerializationException for every operation', async () => {
    const wrong: string[] = [];
    for (const [n, operation] of operations.entries()) {
      const members = topLevelMembers(operation);
      const member = members[n % Math.max(members.length, 1)] ?? 'Unknown';
      const depth = n % 2 === 0 ? 500_000 : 100_000;
      const deep = n % 4 < 2 ? deepArray(depth) : deepObject(Math.min(depth, 150_000)); // 150,000 object levels fill 1 MiB
      for (const body of [`{"${member}":${deep}}`, deepArray(depth)]) {
        const answer = errorOf(await post(operation, body));
        if (answer !== '400 SerializationException') wrong.push(`${operation}.${member} (${depth}): ${answer}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('the deepest nesting the parser lets through, in every member, is a client error, never a 500', async () => {
    const wrong: string[] = [];
    for (const operation of operations) {
      for (const [i, member] of topLevelMembers(operation).entries()) {
        // The body object is the first level: a member this deep reaches the limit exactly. Mostly
        // a type mismatch; a structure member with unknown members inside is empty and reaches the
        // handler (Decrypt's Recipient: UnsupportedOperationException).
        const deep = i % 2 === 0 ? deepArray(MAX_JSON_NESTING - 1) : deepObject(MAX_JSON_NESTING - 1);
        const answer = errorOf(await post(operation, `{"${member}":${deep}}`));
        if (!/^400 \w+Exception$/.test(answer)) wrong.push(`${operation}.${member}: ${answer}`);
      }
    }
    expect(wrong).toEqual([]);
    // One level more is refused by the parser.
    expect(errorOf(await post('Encrypt', `{"KeyId":${deepArray(MAX_JSON_NESTING)}}`))).toBe('400 SerializationException');
  });
});
