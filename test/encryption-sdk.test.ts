/**
 * The AWS Encryption SDK for JavaScript (@aws-crypto/client-node), unmodified, with its KMS
 * keyring pointed at the service: envelope encryption with GenerateDataKey, Encrypt (additional
 * keyring keys) and Decrypt against keys in the token, as applications using the SDK do it.
 */
import { CreateKeyCommand, DisableKeyCommand, KMS } from '@aws-sdk/client-kms';
import { buildClient, CommitmentPolicy, KmsKeyringNode } from '@aws-crypto/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REGION, ROOT, useTestService } from './helpers/service.js';

const { encrypt, decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);

const t = useTestService();
/** The SDK calls the aggregated client's methods (generateDataKey, encrypt, decrypt). */
let sdkClient: KMS;
beforeAll(() => {
  sdkClient = new KMS({ endpoint: t.service.url, region: REGION, credentials: ROOT, maxAttempts: 1 });
});
// afterAll hooks run in reverse order: this client goes before the service stops.
afterAll(() => {
  sdkClient?.destroy();
});

/** The SDK asks for a client per region; every region is this service. */
const clientProvider = () => sdkClient;

async function createKeyArn(): Promise<string> {
  return (await t.client.send(new CreateKeyCommand({ Description: 'encryption sdk' }))).KeyMetadata!.Arn!;
}

describe('AWS Encryption SDK (KMS keyring)', () => {
  it('encrypts with one key and decrypts the message, encryption context included', async () => {
    const keyArn = await createKeyArn();
    const keyring = new KmsKeyringNode({ clientProvider, generatorKeyId: keyArn });
    const plaintext = Buffer.from('a message for the encryption sdk '.repeat(300));
    const context = { purpose: 'test', tenant: 'acme' };

    const { result } = await encrypt(keyring, plaintext, { encryptionContext: context });
    expect(result.includes(plaintext.subarray(0, 64))).toBe(false);

    const { plaintext: opened, messageHeader } = await decrypt(keyring, result);
    expect(Buffer.from(opened).equals(plaintext)).toBe(true);
    expect(messageHeader.encryptionContext).toMatchObject(context);
    expect(messageHeader.encryptedDataKeys.map((k) => k.providerInfo)).toEqual([keyArn]);
  });

  it('wraps the data key under every keyring key, so either key alone decrypts', async () => {
    const [generator, second] = [await createKeyArn(), await createKeyArn()];
    const { result } = await encrypt(new KmsKeyringNode({ clientProvider, generatorKeyId: generator, keyIds: [second] }), Buffer.from('two keys'));

    const secondOnly = new KmsKeyringNode({ clientProvider, keyIds: [second] });
    expect(Buffer.from((await decrypt(secondOnly, result)).plaintext).toString()).toBe('two keys');

    // With the generator disabled, a keyring naming both still opens the message through the second key.
    await t.client.send(new DisableKeyCommand({ KeyId: generator }));
    const both = new KmsKeyringNode({ clientProvider, generatorKeyId: generator, keyIds: [second] });
    expect(Buffer.from((await decrypt(both, result)).plaintext).toString()).toBe('two keys');
    await expect(decrypt(new KmsKeyringNode({ clientProvider, keyIds: [generator] }), result)).rejects.toThrow();
  });

  it('refuses a message whose bytes were altered', async () => {
    const keyring = new KmsKeyringNode({ clientProvider, generatorKeyId: await createKeyArn() });
    const { result } = await encrypt(keyring, Buffer.from('integrity'));
    const tampered = Buffer.from(result);
    tampered[tampered.length - 120]! ^= 0x01;
    await expect(decrypt(keyring, tampered)).rejects.toThrow();
  });

  it('opens messages with a discovery keyring limited to this account', async () => {
    const keyArn = await createKeyArn();
    const { result } = await encrypt(new KmsKeyringNode({ clientProvider, generatorKeyId: keyArn }), Buffer.from('discovery'));
    const accountId = keyArn.split(':')[4]!;
    const discovery = new KmsKeyringNode({ clientProvider, discovery: true, discoveryFilter: { accountIDs: [accountId], partition: 'aws' } });
    expect(Buffer.from((await decrypt(discovery, result)).plaintext).toString()).toBe('discovery');
    const elsewhere = new KmsKeyringNode({ clientProvider, discovery: true, discoveryFilter: { accountIDs: ['999999999999'], partition: 'aws' } });
    await expect(decrypt(elsewhere, result)).rejects.toThrow();
  });
});
