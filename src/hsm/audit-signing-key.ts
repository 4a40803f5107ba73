/**
 * The audit trail's signing key: an EC P-256 key pair generated inside the token
 * (CKM_EC_KEY_PAIR_GEN), private half sensitive and non-extractable, used only to sign audit
 * digests (CKM_ECDSA over a SHA-256 digest computed in Node: SoftHSM2 2.6.1 has no
 * CKM_ECDSA_SHA256). The public half is exported as DER SubjectPublicKeyInfo so that digests
 * verify offline without the token.
 *
 * Objects: CKA_LABEL `p11kms-audit-signing` (outside the `p11kms:` backing-key namespace, so key
 * enumeration never sees them), CKA_ID `p11kms-audit#<16 hex>` shared by both halves. Several
 * service processes may start at once on one token: each looks for existing pairs first, and when
 * it generated one itself it looks again and every process settles on the pair with the lowest
 * CKA_ID, so all of them sign with one key (a surplus pair from the race is harmless: digests
 * name the fingerprint of the key that signed them).
 *
 * Chain heads: a data object (CKO_DATA, CKA_LABEL `p11kms-audit-heads`) names every audit chain
 * (registered when its process opens it) and its newest digest (sequence, SHA-256 of the digest
 * file, records covered, final). It is a private token object: reading or changing it needs a
 * session logged in with the user PIN, so whoever can rewrite the data dir but lacks the PIN can
 * neither move a head back nor add a chain. Its value is not secret (hashes and counts).
 *
 * Threads: generation and the digest signature run in the slow lane; the lookups and the head
 * object's reads and writes run on the calling thread (the event loop, in both modes). They are
 * off the request path: the trail registers its chain at start-up and publishes heads from its
 * background digest (src/audit/trail.ts), and `p11kms audit` reads them. A token that hangs
 * during a digest can still stall the event loop there.
 */
import { createHash, randomBytes } from 'node:crypto';
// pkcs11js is CommonJS: only the default import carries the constants.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
import type { SlowCall } from './slow-lane.js';
import { HsmError } from './types.js';

type Handle = P11.Handle;
type WithSession = <T>(fn: (session: Handle) => T | Promise<T>) => Promise<T>;
/** Pkcs11Hsm.slowSession: a slow-lane thread, then (with `write`, under the object-write lock)
 *  a pooled session. */
type SlowSession = <T>(work: (session: Handle, call: SlowCall) => Promise<T>, write?: boolean) => Promise<T>;

export const AUDIT_KEY_LABEL = 'p11kms-audit-signing';
export const AUDIT_HEADS_LABEL = 'p11kms-audit-heads';
const ID_PREFIX = 'p11kms-audit#';
/** DER OID of prime256v1 (CKA_EC_PARAMS). */
const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
/** SubjectPublicKeyInfo prefix for an uncompressed P-256 point (id-ecPublicKey, prime256v1). */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/** A chain's newest digest as the token remembers it. */
export interface TokenChainHead {
  chainId: string;
  /** 0 for a chain registered before its first digest. */
  digestSequence: number;
  /** Lower-case hex SHA-256 of the digest file's bytes ('' before the first digest). */
  digestHash: string;
  recordCount: number;
  final: boolean;
}

export interface AuditSigningKey {
  /** DER SubjectPublicKeyInfo of the P-256 public key. */
  readonly publicKeySpki: Buffer;
  /** Lower-case hex SHA-256 of publicKeySpki. */
  readonly fingerprint: string;
  /** ECDSA P-256 inside the token over a 32-byte digest; IEEE P1363 r‖s (64 bytes). */
  signDigest(digest: Buffer): Promise<Buffer>;
  /** Stores a chain's newest digest in the token's head object (never moves a head back). */
  publishHead(head: TokenChainHead): Promise<void>;
  /** Every chain head the token holds. */
  readHeads(): Promise<TokenChainHead[]>;
}

export function spkiFingerprint(spki: Buffer): string {
  return createHash('sha256').update(spki).digest('hex');
}

/**
 * Finds (or, with `create`, generates) the audit signing key pair. Returns undefined when no
 * pair exists and `create` is false. Throws HsmError 'unsupported' when the token has no EC.
 */
export async function openAuditSigningKey(
  p: P11.PKCS11,
  mechanisms: ReadonlySet<number>,
  withSession: WithSession,
  /** Generation and signing run in the slow lane (an EC private-key operation). */
  slowSession: SlowSession,
  create: boolean,
  /** Cross-process serialisation of writes and of attribute scans (Pkcs11Hsm.tokenWrite/tokenScan):
   *  several processes may start at once, and one may be generating the pair another looks for. */
  locks: TokenLocks = { write: (write) => write(), scan: (scan) => scan() },
): Promise<AuditSigningKey | undefined> {
  const { write: tokenWrite, scan: tokenScan } = locks;
  let found = await tokenScan(() => withSession((s) => findPairs(p, s)));
  if (found.length === 0) {
    if (!create) return undefined;
    if (!mechanisms.has(pkcs11js.CKM_EC_KEY_PAIR_GEN) || !mechanisms.has(pkcs11js.CKM_ECDSA)) {
      throw new HsmError('unsupported', 'CKR_MECHANISM_INVALID', 'C_GenerateKeyPair', 'the token offers no CKM_EC_KEY_PAIR_GEN/CKM_ECDSA for the audit signing key');
    }
    // Lane first, then the write lock (as every slow write: a lock holder never waits for a lane
    // thread that a lock waiter holds).
    await slowSession(async (s, call) => {
      // Another process may have generated it while this one waited for the write lock.
      if (findPairs(p, s).length === 0) await generatePair(call, s);
    }, true);
    found = await tokenScan(() => withSession((s) => findPairs(p, s)));
    if (found.length === 0) throw new HsmError('other', 'CKR_GENERAL_ERROR', 'C_FindObjects', 'the generated audit signing key is not found');
  }
  const chosen = found[0]!;
  const privateKey = chosen.privateKey;
  // Serialised within the process; across processes nothing is lost without a lock either (see
  // replaceHeadObjects).
  let headWrites: Promise<unknown> = Promise.resolve();
  const readHeads = () => tokenScan(() => withSession((s) => readHeadObjects(p, s).heads));
  const publishHead = (head: TokenChainHead): Promise<void> => {
    const turn = headWrites.then(() =>
      tokenWrite(() =>
        withSession((s) => {
          const { handles, heads } = readHeadObjects(p, s);
          const known = heads.find((h) => h.chainId === head.chainId);
          if (known && known.digestSequence >= head.digestSequence) return;
          replaceHeadObjects(p, s, handles, [...heads.filter((h) => h.chainId !== head.chainId), head]);
        }),
      ),
    );
    headWrites = turn.catch(() => undefined);
    return turn;
  };
  return {
    publishHead,
    readHeads,
    publicKeySpki: chosen.spki,
    fingerprint: spkiFingerprint(chosen.spki),
    signDigest: (digest: Buffer) => {
      if (digest.length !== 32) return Promise.reject(new RangeError('the audit signing key signs 32-byte SHA-256 digests'));
      return slowSession(async (s, call) => {
        try {
          return Buffer.from((await call({ op: 'sign', session: s, key: privateKey, mechanism: { mechanism: pkcs11js.CKM_ECDSA }, data: digest, outBytes: 64 }, 'C_Sign')).out!);
        } catch (err) {
          const e = toHsmError(err, 'C_Sign');
          throw new HsmError(e.kind, e.ckr, e.fn, `signing an audit digest: ${e.message}`);
        }
      });
    },
  };
}

/** The head object's value: `{"v":1,"chains":{"<chainId>":[digestSequence,"<hash>",recordCount,final]}}`. */
type HeadsValue = { v: 1; chains: Record<string, [number, string, number, boolean]> };

/**
 * The head objects that could be read and the newest head per chain across them. Normally there is
 * one; a crash between creating the replacement and destroying the old one leaves two. An object
 * that cannot be read (destroyed by another process meanwhile, or not JSON) is left out, and so is
 * never destroyed by a writer that did not include its content.
 */
function readHeadObjects(p: P11.PKCS11, session: Handle): { handles: Handle[]; heads: TokenChainHead[] } {
  const found: Handle[] = [];
  let fn = 'C_FindObjectsInit';
  try {
    p.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
      { type: pkcs11js.CKA_LABEL, value: AUDIT_HEADS_LABEL },
    ]);
    fn = 'C_FindObjects';
    for (let batch = p.C_FindObjects(session, 16); batch.length > 0; batch = p.C_FindObjects(session, 16)) found.push(...batch);
    fn = 'C_FindObjectsFinal';
    p.C_FindObjectsFinal(session);
  } catch (err) {
    throw toHsmError(err, fn, 'looking up the audit chain heads');
  }
  const handles: Handle[] = [];
  const newest = new Map<string, TokenChainHead>();
  for (const handle of found) {
    let value: HeadsValue;
    try {
      value = JSON.parse(p.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_VALUE }])[0]!.value.toString('utf8')) as HeadsValue;
    } catch {
      continue;
    }
    handles.push(handle);
    for (const [chainId, [digestSequence, digestHash, recordCount, final]] of Object.entries(value.chains)) {
      if ((newest.get(chainId)?.digestSequence ?? -1) < digestSequence) newest.set(chainId, { chainId, digestSequence, digestHash, recordCount, final });
    }
  }
  return { handles, heads: [...newest.values()] };
}

/**
 * Writes the heads as a new object, then destroys the ones they were read from: SoftHSM2 keeps a
 * data object's CKA_VALUE read-only after creation (CKR_ATTRIBUTE_READ_ONLY). Creating first means
 * a crash in between leaves two objects, merged on read, never none; and as a writer destroys only
 * objects whose content its new one includes, two processes writing at once (workers on an
 * external token, which has no cross-process object-write lock) leave two objects between them,
 * not one that lost the other's head. A destroy that fails (already destroyed by the other)
 * changes nothing.
 */
function replaceHeadObjects(p: P11.PKCS11, session: Handle, old: Handle[], heads: TokenChainHead[]): void {
  const value: HeadsValue = { v: 1, chains: {} };
  for (const h of [...heads].sort((a, b) => (a.chainId < b.chainId ? -1 : 1))) value.chains[h.chainId] = [h.digestSequence, h.digestHash, h.recordCount, h.final];
  const bytes = Buffer.from(JSON.stringify(value), 'utf8');
  try {
    p.C_CreateObject(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_LABEL, value: AUDIT_HEADS_LABEL },
      { type: pkcs11js.CKA_APPLICATION, value: 'p11kms audit' },
      { type: pkcs11js.CKA_VALUE, value: bytes },
    ]);
    for (const handle of old) {
      try {
        p.C_DestroyObject(session, handle);
      } catch {
        // see above
      }
    }
  } catch (err) {
    throw toHsmError(err, 'C_CreateObject', 'writing the audit chain heads');
  }
}

export interface TokenLocks {
  write: <T>(write: () => Promise<T>) => Promise<T>;
  scan: <T>(scan: () => Promise<T>) => Promise<T>;
}

interface Pair {
  id: string;
  privateKey: Handle;
  spki: Buffer;
}

/** Every complete audit key pair in the token, lowest CKA_ID first. */
function findPairs(p: P11.PKCS11, session: Handle): Pair[] {
  const byClass = (objectClass: number): Map<string, Handle> => {
    const out = new Map<string, Handle>();
    let fn = 'C_FindObjectsInit';
    try {
      p.C_FindObjectsInit(session, [
        { type: pkcs11js.CKA_CLASS, value: objectClass },
        { type: pkcs11js.CKA_LABEL, value: AUDIT_KEY_LABEL },
      ]);
      fn = 'C_FindObjects';
      const handles = p.C_FindObjects(session, 64);
      fn = 'C_FindObjectsFinal';
      p.C_FindObjectsFinal(session);
      fn = 'C_GetAttributeValue';
      for (const handle of handles) {
        const id = p.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_ID }])[0]!.value.toString('utf8');
        if (id.startsWith(ID_PREFIX) && !out.has(id)) out.set(id, handle);
      }
    } catch (err) {
      throw toHsmError(err, fn, 'looking up the audit signing key');
    }
    return out;
  };
  const privates = byClass(pkcs11js.CKO_PRIVATE_KEY);
  const publics = byClass(pkcs11js.CKO_PUBLIC_KEY);
  const pairs: Pair[] = [];
  for (const [id, privateKey] of privates) {
    const publicKey = publics.get(id);
    if (publicKey === undefined) continue;
    let point: Buffer;
    try {
      point = p.C_GetAttributeValue(session, publicKey, [{ type: pkcs11js.CKA_EC_POINT }])[0]!.value;
    } catch (err) {
      throw toHsmError(err, 'C_GetAttributeValue', 'reading the audit public key');
    }
    const raw = unwrapPoint(point);
    if (raw === undefined) continue;
    pairs.push({ id, privateKey, spki: Buffer.concat([P256_SPKI_PREFIX, raw]) });
  }
  return pairs.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** CKA_EC_POINT is a DER OCTET STRING around 04‖X‖Y (some tokens give the bare point). */
function unwrapPoint(value: Buffer): Buffer | undefined {
  if (value.length === 67 && value[0] === 0x04 && value[1] === 0x41 && value[2] === 0x04) return value.subarray(2);
  if (value.length === 65 && value[0] === 0x04) return value;
  return undefined;
}

async function generatePair(call: SlowCall, session: Handle): Promise<void> {
  const id = Buffer.from(ID_PREFIX + randomBytes(8).toString('hex'), 'utf8');
  const publicTemplate: P11.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_VERIFY, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_EC_PARAMS, value: P256_PARAMS },
    { type: pkcs11js.CKA_LABEL, value: AUDIT_KEY_LABEL },
    { type: pkcs11js.CKA_ID, value: id },
  ];
  const privateTemplate: P11.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
    { type: pkcs11js.CKA_LABEL, value: AUDIT_KEY_LABEL },
    { type: pkcs11js.CKA_ID, value: id },
  ];
  try {
    await call({ op: 'generate-key-pair', session, mechanism: { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, publicTemplate, privateTemplate }, 'C_GenerateKeyPair');
  } catch (err) {
    const e = toHsmError(err, 'C_GenerateKeyPair');
    throw new HsmError(e.kind, e.ckr, e.fn, `generating the audit signing key: ${e.message}`);
  }
}
