/**
 * AWS managed keys in a deployment that serves two Regions: as in AWS, each Region has its own
 * alias/aws/<service> and its own managed key behind it, created on the service's first use there.
 */
import { DescribeKeyCommand, EncryptCommand, DecryptCommand, KMSClient, ListAliasesCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { credentials, testUser, writePrincipalsFile, type TestPrincipal } from './helpers/principals.js';
import { ACCOUNT_ID, ROOT, errorOf, useTestService } from './helpers/service.js';

const HOME = 'us-east-1';
const OTHER = 'eu-west-1';
const alice = testUser('alice');
const objectStore = { ...testUser('objectstore'), arn: `arn:aws:iam::${ACCOUNT_ID}:role/object-store`, integratedService: 's3' };
const t = useTestService(() => ({ P11KMS_REGIONS: `${HOME},${OTHER}`, P11KMS_PRINCIPALS_FILE: writePrincipalsFile([alice, objectStore]) }));

/** The object store acting for alice in `region` (the header is signed, as the service requires). */
function s3For(region: string, onBehalfOf: TestPrincipal): KMSClient {
  const client = new KMSClient({ endpoint: t.service.url, region, credentials: credentials(objectStore), maxAttempts: 1 });
  client.middlewareStack.add(
    (next) => async (args) => {
      (args.request as { headers: Record<string, string> }).headers['X-P11kms-On-Behalf-Of'] = onBehalfOf.arn;
      return next(args);
    },
    { step: 'build' },
  );
  return client;
}
const rootIn = (region: string) => new KMSClient({ endpoint: t.service.url, region, credentials: ROOT, maxAttempts: 1 });

describe('AWS managed keys in several Regions', () => {
  it("each Region's first use creates that Region's own key; a ciphertext of one Region's managed key does not decrypt in the other", async () => {
    const inHome = await s3For(HOME, alice).send(new EncryptCommand({ KeyId: 'alias/aws/s3', Plaintext: Buffer.from('home') }));
    // Before the service used it in the other Region, that Region lists the alias without a key.
    const otherBefore = (await rootIn(OTHER).send(new ListAliasesCommand({}))).Aliases!.find((a) => a.AliasName === 'alias/aws/s3')!;
    expect(otherBefore.TargetKeyId).toBeUndefined();
    expect(otherBefore.AliasArn).toBe(`arn:aws:kms:${OTHER}:${ACCOUNT_ID}:alias/aws/s3`);

    const inOther = await s3For(OTHER, alice).send(new EncryptCommand({ KeyId: 'alias/aws/s3', Plaintext: Buffer.from('other') }));
    const home = (await rootIn(HOME).send(new DescribeKeyCommand({ KeyId: 'alias/aws/s3' }))).KeyMetadata!;
    const other = (await rootIn(OTHER).send(new DescribeKeyCommand({ KeyId: 'alias/aws/s3' }))).KeyMetadata!;
    expect(home.KeyManager).toBe('AWS');
    expect(other.KeyManager).toBe('AWS');
    expect(home.KeyId).not.toBe(other.KeyId);
    expect(inHome.KeyId).toBe(`arn:aws:kms:${HOME}:${ACCOUNT_ID}:key/${home.KeyId}`);
    expect(inOther.KeyId).toBe(`arn:aws:kms:${OTHER}:${ACCOUNT_ID}:key/${other.KeyId}`);

    const decrypted = await s3For(OTHER, alice).send(new DecryptCommand({ CiphertextBlob: inOther.CiphertextBlob }));
    expect(Buffer.from(decrypted.Plaintext!).toString()).toBe('other');
    // The home Region's key does not exist in the other Region (as for every key: test/regions-served.test.ts).
    expect(await errorOf(s3For(OTHER, alice).send(new DecryptCommand({ CiphertextBlob: inHome.CiphertextBlob })))).toMatchObject({ name: 'AccessDeniedException' });
  });
});
