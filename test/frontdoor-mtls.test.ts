/**
 * Mutual TLS (P11KMS_TLS_CLIENT_CA_FILE): clients must present a certificate chaining to the CA;
 * principals may be bound to a certificate subject or SPKI fingerprint, so that a stolen access
 * key alone is not enough.
 */
import { CreateKeyCommand, GenerateRandomCommand, ListKeysCommand } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentials, identityPolicy, testUser, writePrincipalsFile } from './helpers/principals.js';
import { errorOf, startTestService, type TestService } from './helpers/service.js';
import { httpsKmsClient, makeTestCa, spkiSha256, type TestCa } from './helpers/tls.js';

const allowAll = identityPolicy({ Effect: 'Allow', Action: 'kms:*', Resource: '*' });
const alice = testUser('alice', [allowAll]);
const bob = testUser('bob', [allowAll]);
const carol = testUser('carol', [allowAll]);

let ca: TestCa;
let t: TestService;
type Pair = { certFile: string; keyFile: string };
let certs: Record<'server' | 'alice' | 'bob' | 'bobNewKey' | 'carol' | 'stranger', Pair>;

beforeAll(async () => {
  ca = makeTestCa();
  const otherCa = makeTestCa('another CA');
  certs = {
    server: ca.issue('server', { subject: '/CN=localhost', server: true }),
    alice: ca.issue('alice', { subject: '/O=Example/CN=alice' }),
    bob: ca.issue('bob', { subject: '/O=Example/CN=bob' }),
    bobNewKey: ca.issue('bob2', { subject: '/O=Example/CN=bob' }),
    carol: ca.issue('carol', { subject: '/O=Example/CN=carol' }),
    stranger: otherCa.issue('stranger', { subject: '/O=Example/CN=alice' }),
  };
  const principalsFile = writePrincipalsFile([
    { ...alice, certificate: { subject: 'O=Example, CN=alice' } },
    { ...bob, certificate: { spkiSha256: spkiSha256(certs.bob.certFile) } },
    carol,
  ] as never);
  t = await startTestService({
    P11KMS_TLS_CERT_FILE: certs.server.certFile,
    P11KMS_TLS_KEY_FILE: certs.server.keyFile,
    P11KMS_TLS_CLIENT_CA_FILE: ca.caFile,
    P11KMS_PRINCIPALS_FILE: principalsFile,
  });
});
afterAll(async () => {
  await t?.stop();
});

async function call(client: Pair | undefined, who?: { accessKeyId: string; secretAccessKey: string }) {
  const kms = httpsKmsClient(t.service.url, ca.caFile, { client, credentials: who });
  try {
    return await kms.send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
  } finally {
    kms.destroy();
  }
}

describe('mutual TLS', () => {
  it('serves a client whose certificate chains to the client CA', async () => {
    const out = await call(certs.carol);
    expect(out.Plaintext).toHaveLength(8);
    const kms = httpsKmsClient(t.service.url, ca.caFile, { client: certs.carol });
    await expect(kms.send(new CreateKeyCommand({}))).resolves.toBeDefined();
    await expect(kms.send(new ListKeysCommand({}))).resolves.toBeDefined();
    kms.destroy();
  });

  it('refuses a client without a certificate, and one whose certificate another CA issued', async () => {
    const bare = await errorOf(call(undefined));
    expect(bare.message).toMatch(/certificate|socket hang up|ECONNRESET|EPIPE/i);
    const stranger = await errorOf(call(certs.stranger));
    expect(stranger.message).toMatch(/unknown ca|certificate|socket hang up|ECONNRESET/i);
  });

  it('lets a principal bound to a subject call only with a certificate of that subject', async () => {
    await expect(call(certs.alice, credentials(alice))).resolves.toBeDefined();
    const err = await errorOf(call(certs.carol, credentials(alice)));
    expect(err.name).toBe('AccessDeniedException');
    expect(err.message).toContain(alice.arn);
  });

  it('lets a principal bound to an SPKI fingerprint call only with that key, whatever the subject says', async () => {
    await expect(call(certs.bob, credentials(bob))).resolves.toBeDefined();
    // Same CA, same subject, another key pair: not the bound certificate.
    expect((await errorOf(call(certs.bobNewKey, credentials(bob)))).name).toBe('AccessDeniedException');
  });

  it('leaves principals without a binding free to use any valid client certificate', async () => {
    await expect(call(certs.alice, credentials(carol))).resolves.toBeDefined();
  });
});

describe('start-up', () => {
  it('refuses principals bound to certificates without mutual TLS', async () => {
    const file = writePrincipalsFile([{ ...alice, certificate: { subject: 'CN=alice' } }] as never);
    await expect(startTestService({ P11KMS_PRINCIPALS_FILE: file })).rejects.toThrow(/need mutual TLS/);
  });

  it('refuses a certificate binding that names neither subject nor fingerprint', async () => {
    const file = writePrincipalsFile([{ ...alice, certificate: {} }] as never);
    await expect(
      startTestService({ P11KMS_PRINCIPALS_FILE: file, P11KMS_TLS_CERT_FILE: certs.server.certFile, P11KMS_TLS_KEY_FILE: certs.server.keyFile, P11KMS_TLS_CLIENT_CA_FILE: ca.caFile }),
    ).rejects.toThrow(/certificate needs subject or spkiSha256/);
  });
});
