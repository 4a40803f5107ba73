/**
 * A seeded, model-driven fuzz of every operation in the official model (the in-repo
 * src/http/kms-model.json): inputs generated from each operation's input shape, then broken in
 * one of the ways a hostile or buggy client breaks them — wrong JSON types, values at and past
 * their bounds, missing required and extra unknown members, deep and huge JSON, truncated blobs
 * and bodies, bytes that are not JSON. Every request must get an answer (no reset, no silence)
 * that is not a 5xx, and every error must be AWS's shape.
 *
 * The seed is printed; P11KMS_FUZZ_SEED=<seed> replays the same requests.
 */
import { randomInt } from 'node:crypto';
import { CreateKeyCommand, EncryptCommand } from '@aws-sdk/client-kms';
import { beforeAll, describe, expect, it } from 'vitest';
import { kmsModel, type ModelShape } from '../src/http/model.js';
import { exchange, signedHeaders } from './helpers/raw.js';
import { ACCOUNT_ID, REGION, useTestService } from './helpers/service.js';

const SEED = process.env.P11KMS_FUZZ_SEED === undefined ? randomInt(2 ** 31) : Number(process.env.P11KMS_FUZZ_SEED);
console.log(`api-fuzz: seed ${SEED} (P11KMS_FUZZ_SEED=${SEED} replays this run)`);

/** Rounds over every operation; the time budget may end the run earlier (after MIN_ROUNDS). */
const ROUNDS = 12;
const MIN_ROUNDS = 3;
const BUDGET_MS = 12_000;
const CONCURRENCY = 4;

const t = useTestService();

/** mulberry32: a small, fast, seedable PRNG (the sequence depends on the seed only). */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  const chance = (p: number) => next() < p;
  return { next, int, pick, chance };
}
type Rng = ReturnType<typeof prng>;

const shape = (name: string): ModelShape => kmsModel.shapes[name]!;
const operations = Object.keys(kmsModel.operations);

/** Real identifiers and blobs, so that some inputs get past validation into the handlers. */
const known = { keyIds: [] as string[], blobs: [] as string[] };

beforeAll(async () => {
  for (const input of [{}, { KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' }, { KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }, { KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }, { Origin: 'EXTERNAL' }] as const) {
    const keyId = (await t.client.send(new CreateKeyCommand(input))).KeyMetadata!.KeyId!;
    known.keyIds.push(keyId, `arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/${keyId}`);
  }
  const sealed = await t.client.send(new EncryptCommand({ KeyId: known.keyIds[0]!, Plaintext: new TextEncoder().encode('fuzz'), EncryptionContext: { a: 'b' } }));
  known.blobs.push(Buffer.from(sealed.CiphertextBlob!).toString('base64'));
});

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/:.=+@';
const ODD_STRINGS = ['', ' ', 'alias/', 'alias/aws/x', 'arn:aws:kms:us-east-1:111122223333:key/', '\u0000', '\ud800', '\uffff', '😀'.repeat(3), '__proto__', '%s%n', "'; DROP TABLE keys; --", '../../etc/passwd'];

function randomString(rng: Rng, min = 0, max = 24): string {
  const length = rng.int(min, Math.min(max, min + 24));
  let s = '';
  for (let i = 0; i < length; i++) s += ALPHABET[rng.int(0, ALPHABET.length - 1)];
  return s;
}

const base64Of = (rng: Rng, length: number) => Buffer.from(Array.from({ length }, () => rng.int(0, 255))).toString('base64');

/** A value for `shapeName` that mostly satisfies the model (so mutations hit one thing at a time). */
function generate(rng: Rng, shapeName: string, member: string, depth = 0): unknown {
  const s = shape(shapeName);
  switch (s.type) {
    case 'structure': {
      const out: Record<string, unknown> = {};
      const required = new Set(s.required ?? []);
      for (const [name, target] of Object.entries(s.members ?? {})) {
        if (required.has(name) || (depth < 3 && rng.chance(0.4))) out[name] = generate(rng, target, name, depth + 1);
      }
      return out;
    }
    case 'list':
      return Array.from({ length: rng.int(s.min ?? 0, Math.min(s.max ?? 3, (s.min ?? 0) + 3)) }, () => generate(rng, s.member!, member, depth + 1));
    case 'map': {
      const out: Record<string, unknown> = {};
      for (let i = rng.int(0, 3); i > 0; i--) out[randomString(rng, 1, 8)] = generate(rng, s.value!, member, depth + 1);
      return out;
    }
    case 'string':
      if (s.enum) return rng.pick(s.enum);
      if (/KeyId$/.test(member) && known.keyIds.length > 0 && rng.chance(0.7)) return rng.pick(known.keyIds);
      if (rng.chance(0.1)) return rng.pick(ODD_STRINGS);
      return randomString(rng, s.min ?? 0, s.max ?? 24);
    case 'blob':
      if (member === 'CiphertextBlob' && known.blobs.length > 0 && rng.chance(0.6)) return rng.pick(known.blobs);
      return base64Of(rng, rng.int(s.min ?? 1, Math.min(s.max ?? 64, 64)));
    case 'boolean':
      return rng.chance(0.5);
    case 'integer':
    case 'long':
      return rng.int(s.min ?? 0, Math.min(s.max ?? 1000, 1000));
    case 'timestamp':
      return Math.floor(Date.now() / 1000) + rng.int(-86_400, 400 * 86_400);
  }
}

type Path = Array<string | number>;

/** Every path inside `value` (objects and arrays), with the model shape found there if any. */
function pathsOf(value: unknown, shapeName: string | undefined, path: Path = [], out: Array<{ path: Path; shape?: string }> = []) {
  out.push({ path, shape: shapeName });
  const s = shapeName === undefined ? undefined : shape(shapeName);
  if (Array.isArray(value)) value.forEach((item, i) => pathsOf(item, s?.type === 'list' ? s.member : undefined, [...path, i], out));
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const member = s?.type === 'structure' && s.members && Object.hasOwn(s.members, k) ? s.members[k] : undefined;
      const target = s?.type === 'map' ? s.value : member;
      pathsOf(v, target, [...path, k], out);
    }
  }
  return out;
}

function setAt(root: Record<string, unknown>, path: Path, value: unknown): void {
  if (path.length === 0) return;
  let node: any = root;
  for (const key of path.slice(0, -1)) node = node[key];
  node[path[path.length - 1]!] = value;
}

/** A raw JSON fragment (may be far too deep to build as objects) to splice into the body text. */
const RAW = 'p11kms-fuzz-raw-fragment';
const deepText = (rng: Rng, depth: number) => (rng.chance(0.5) ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth));

interface Mutant {
  kind: string;
  body: string | Buffer;
}

const WRONG_TYPES: unknown[] = [0, -1, 1.5, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 + 2, 1e308, -1e-308, true, false, null, '', 'x', [], [1, 'a'], {}, { x: { y: 1 } }];

function boundaryValue(rng: Rng, s: ModelShape): unknown {
  const lengths = [s.min === undefined ? 0 : s.min - 1, s.min ?? 0, s.max ?? 64, (s.max ?? 64) + 1].filter((n) => n >= 0);
  const length = Math.min(rng.pick(lengths), 200_000);
  switch (s.type) {
    case 'string':
      return 'a'.repeat(length);
    case 'blob':
      return base64Of(rng, length);
    case 'list':
      return Array.from({ length: Math.min(length, 5_000) }, () => 'x');
    case 'integer':
    case 'long':
      return rng.pick([(s.min ?? 0) - 1, s.min ?? 0, s.max ?? 2 ** 31 - 1, (s.max ?? 2 ** 31 - 1) + 1, 2 ** 31, -(2 ** 31) - 1, 2 ** 63, 0.5]);
    default:
      return rng.pick(WRONG_TYPES);
  }
}

function truncatedBlob(rng: Rng): string {
  const blob = known.blobs.length > 0 ? rng.pick(known.blobs) : base64Of(rng, 80);
  return rng.pick([
    blob.slice(0, rng.int(0, blob.length - 1)), // cut anywhere, padding and length broken
    Buffer.from(blob, 'base64').subarray(0, rng.int(0, 60)).toString('base64'), // valid base64 of a cut blob
    blob.slice(0, 4 * rng.int(1, 10) + 1), // a length base64 cannot have
    blob.replace(/[A-Za-z]/, '*'), // not base64
    `${blob}===`,
    ` ${blob}`,
  ]);
}

function mutate(rng: Rng, operation: string): Mutant {
  const inputShape = kmsModel.operations[operation]!.input;
  const body = generate(rng, inputShape, '') as Record<string, unknown>;
  const paths = pathsOf(body, inputShape).filter((p) => p.path.length > 0);
  const target = paths.length > 0 ? rng.pick(paths) : undefined;
  const raw = (text: string) => (target ? (setAt(body, target.path, RAW), JSON.stringify(body).replace(`"${RAW}"`, () => text)) : `{"X":${text}}`);
  const kind = rng.pick(['valid', 'wrong type', 'boundary', 'missing', 'extra', 'null', 'deep', 'huge', 'truncated blob', 'truncated body', 'not json']);
  switch (kind) {
    case 'wrong type':
      if (target) setAt(body, target.path, rng.pick(WRONG_TYPES));
      else body.X = rng.pick(WRONG_TYPES);
      break;
    case 'boundary': {
      const shaped = paths.filter((p) => p.shape !== undefined);
      if (shaped.length > 0) {
        const at = rng.pick(shaped);
        setAt(body, at.path, boundaryValue(rng, shape(at.shape!)));
      }
      break;
    }
    case 'missing':
      for (const name of shape(inputShape).required ?? []) if (rng.chance(0.7)) delete body[name];
      break;
    case 'extra':
      for (let i = rng.int(1, 5); i > 0; i--) body[rng.pick(['__proto__', 'constructor', 'prototype', 'keyid', 'KEYID', randomString(rng, 1, 300)])] = rng.pick(WRONG_TYPES);
      break;
    case 'null':
      if (target) setAt(body, target.path, null);
      break;
    case 'deep':
      return { kind, body: raw(deepText(rng, rng.pick([100, 999, 1000, 1001, 10_000, 100_000, 500_000]))) };
    case 'huge': {
      const big = rng.pick([
        () => `"${'a'.repeat(rng.int(100_000, 1_100_000))}"`,
        () => `[${Array.from({ length: rng.int(10_000, 200_000) }, () => '1').join(',')}]`,
        () => `{${Array.from({ length: rng.int(1_000, 30_000) }, (_, i) => `"k${i}":"v"`).join(',')}}`,
      ])();
      return { kind, body: raw(big) };
    }
    case 'truncated blob': {
      const blobs = paths.filter((p) => p.shape !== undefined && shape(p.shape).type === 'blob');
      if (blobs.length > 0) setAt(body, rng.pick(blobs).path, truncatedBlob(rng));
      else body.CiphertextBlob = truncatedBlob(rng);
      break;
    }
    case 'truncated body': {
      const text = JSON.stringify(body);
      return { kind, body: text.slice(0, rng.int(0, Math.max(text.length - 1, 0))) };
    }
    case 'not json':
      return {
        kind,
        body: rng.pick([
          Buffer.from([0xff, 0xfe, 0x00, 0x7b]),
          Buffer.from('{"KeyId":"\xff\xfe"}', 'latin1'),
          '{"KeyId":"a",}',
          "{'KeyId':'a'}",
          'null',
          '"just a string"',
          '12',
          '{"KeyId":"a"}{"KeyId":"b"}',
          '\ufeff{}',
        ]),
      };
  }
  return { kind, body: JSON.stringify(body) };
}

interface Outcome {
  operation: string;
  kind: string;
  problem?: string;
  preview: string;
}

async function fire(operation: string, mutant: Mutant): Promise<Outcome> {
  const preview = (typeof mutant.body === 'string' ? mutant.body : mutant.body.toString('latin1')).slice(0, 160);
  const headers = await signedHeaders(t.service.url, mutant.body, { target: `TrentService.${operation}` });
  const answer = await exchange(t.service.url, headers, mutant.body);
  const outcome: Outcome = { operation, kind: mutant.kind, preview };
  if (!answer.answered) return { ...outcome, problem: `no answer: ${answer.failure}` };
  if (answer.status >= 500) return { ...outcome, problem: `status ${answer.status}: ${answer.text.slice(0, 200)}` };
  if (answer.status !== 200) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(answer.text);
    } catch {
      return { ...outcome, problem: `status ${answer.status} with a body that is not JSON: ${answer.text.slice(0, 100)}` };
    }
    const error = parsed as { __type?: unknown; message?: unknown };
    if (typeof error.__type !== 'string' || typeof error.message !== 'string') return { ...outcome, problem: `status ${answer.status} without __type and message: ${answer.text.slice(0, 200)}` };
  }
  return outcome;
}

describe(`model-driven fuzz (seed ${SEED})`, () => {
  it('answers every hostile request of every operation, never with a 5xx', async () => {
    const rng = prng(SEED);
    const started = Date.now();
    const problems: Outcome[] = [];
    const kinds = new Map<string, number>();
    let sent = 0;
    let rounds = 0;
    while (rounds < ROUNDS && (rounds < MIN_ROUNDS || Date.now() - started < BUDGET_MS)) {
      // Mutants are drawn in order (the seed fixes them); only the sending is concurrent.
      const queue = operations.map((operation) => ({ operation, mutant: mutate(rng, operation) }));
      const workers = Array.from({ length: CONCURRENCY }, async () => {
        for (let next = queue.shift(); next; next = queue.shift()) {
          const outcome = await fire(next.operation, next.mutant);
          kinds.set(outcome.kind, (kinds.get(outcome.kind) ?? 0) + 1);
          if (outcome.problem) problems.push(outcome);
          sent++;
        }
      });
      await Promise.all(workers);
      rounds++;
    }
    console.log(`api-fuzz: seed ${SEED}: ${sent} requests in ${rounds} rounds over ${operations.length} operations, ${Date.now() - started} ms; ${JSON.stringify(Object.fromEntries(kinds))}`);
    expect(problems.map((p) => `[seed ${SEED}] ${p.operation} (${p.kind}): ${p.problem} — body ${p.preview}`)).toEqual([]);
    expect(rounds).toBeGreaterThanOrEqual(MIN_ROUNDS);
  });
});
